//! The one EC2 error type: each variant knows its AWS code, its HTTP status
//! and its message, and renders the AWS error envelope.
//!
//! Choices where AWS leaves room (see the crate's report for the full list):
//! - `MissingAuthenticationToken` is 401, like `AuthFailure`: both mean "who
//!   are you?", and botocore does not retry either.
//! - A malformed `vol-`/`snap-` id in `VolumeId`/`SnapshotId` parameters is
//!   `InvalidVolumeID.Malformed` / `InvalidSnapshotID.Malformed`; a malformed
//!   id in `ResourceId.N` (tags) is `InvalidID`, as moto answers.
//! - A next-token this gateway did not issue is `InvalidParameterValue`
//!   ("Invalid value '..' for nextToken"), as EC2 answers it for Describe calls.
//! - The metadata group not answering is `Unavailable` (503), shedding load is
//!   `RequestLimitExceeded` (503): botocore retries both.

use super::xml::escape;
use crate::http::auth::AuthError;
use crate::http::error::{AwsError, LayerFailure};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cairn_core::command::MetaError;
use cairn_proto::MetaClientError;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Ec2Error {
    #[error("The request must contain the parameter Action")]
    MissingAction,
    #[error("The action {0} is not valid for this web service.")]
    InvalidAction(String),
    #[error("The action {0} is not supported by this Cairn gateway yet.")]
    UnsupportedOperation(String),
    #[error("The request must contain the parameter {0}")]
    MissingParameter(String),
    #[error("The parameter {0} is not recognized")]
    UnknownParameter(String),
    #[error("{0}")]
    InvalidParameterValue(String),
    #[error("{0}")]
    InvalidParameterCombination(String),
    #[error("{0}")]
    InvalidParameterDependency(String),
    #[error("{0}")]
    MalformedQueryString(String),
    #[error("Request would have succeeded, but DryRun flag is set.")]
    DryRunOperation,
    #[error("{}", AuthError::MissingAuthenticationToken)]
    MissingAuthenticationToken,
    #[error("{0}")]
    AuthFailure(String),
    #[error("{0}")]
    SignatureDoesNotMatch(String),
    #[error("{0}")]
    RequestExpired(String),
    #[error("The volume '{0}' does not exist.")]
    VolumeNotFound(String),
    #[error("The snapshot '{0}' does not exist.")]
    SnapshotNotFound(String),
    #[error("Invalid id: \"{0}\" (expecting \"vol-...\")")]
    VolumeIdMalformed(String),
    #[error("Invalid id: \"{0}\" (expecting \"snap-...\")")]
    SnapshotIdMalformed(String),
    #[error("The ID '{0}' is not valid")]
    InvalidId(String),
    #[error("{0}")]
    IncorrectState(String),
    #[error("{0}")]
    VolumeInUse(String),
    #[error("The maximum number of concurrent snapshots for volume {0} has been reached.")]
    ConcurrentSnapshotLimitExceeded(String),
    #[error("The client token {0} was already used with different parameters.")]
    IdempotentParameterMismatch(String),
    #[error("{0}")]
    InsufficientVolumeCapacity(String),
    #[error("{0}")]
    TagLimitExceeded(String),
    #[error("{0}")]
    SnapshotInUse(String),
    #[error("{0}")]
    IncorrectModificationState(String),
    #[error("{0}")]
    IncompleteSignature(String),
    /// A snapshot shared with the caller, which only its owner may change.
    #[error("You are not authorized to perform this operation. {0}")]
    UnauthorizedOperation(String),
    #[error("{0}")]
    OperationNotPermitted(String),
    #[error("{0}")]
    ResourceLimitExceeded(String),
    #[error("Invalid user id: '{0}'")]
    UserIdMalformed(String),
    /// A sharing group other than `all` (the code moto answers, after EC2's AMIs).
    #[error("{0}")]
    InvalidAttributeItemValue(String),
    #[error("The request body is larger than {0} bytes.")]
    RequestTooLarge(usize),
    #[error("Request limit exceeded.")]
    RequestLimitExceeded,
    #[error("The service is unavailable, try again: {0}")]
    Unavailable(String),
    #[error("The request timed out.")]
    Timeout,
    #[error("An internal error has occurred: {0}")]
    InternalError(String),
}

impl Ec2Error {
    /// The AWS error envelope. Note `RequestID`, capitalised, unlike the
    /// success body's `requestId`.
    pub fn body(&self, request_id: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code><Message>{}</Message></Error></Errors><RequestID>{}</RequestID></Response>",
            self.code(),
            escape(&self.to_string()),
            escape(request_id)
        )
    }
}

impl AwsError for Ec2Error {
    fn code(&self) -> &'static str {
        use Ec2Error::*;
        match self {
            MissingAction => "MissingAction",
            InvalidAction(_) => "InvalidAction",
            UnsupportedOperation(_) => "UnsupportedOperation",
            MissingParameter(_) => "MissingParameter",
            UnknownParameter(_) => "UnknownParameter",
            InvalidParameterValue(_) => "InvalidParameterValue",
            InvalidParameterCombination(_) => "InvalidParameterCombination",
            InvalidParameterDependency(_) => "InvalidParameterDependency",
            MalformedQueryString(_) => "MalformedQueryString",
            DryRunOperation => "DryRunOperation",
            MissingAuthenticationToken => "MissingAuthenticationToken",
            AuthFailure(_) => "AuthFailure",
            SignatureDoesNotMatch(_) => "SignatureDoesNotMatch",
            RequestExpired(_) => "RequestExpired",
            VolumeNotFound(_) => "InvalidVolume.NotFound",
            SnapshotNotFound(_) => "InvalidSnapshot.NotFound",
            VolumeIdMalformed(_) => "InvalidVolumeID.Malformed",
            SnapshotIdMalformed(_) => "InvalidSnapshotID.Malformed",
            InvalidId(_) => "InvalidID",
            IncorrectState(_) => "IncorrectState",
            VolumeInUse(_) => "VolumeInUse",
            ConcurrentSnapshotLimitExceeded(_) => "ConcurrentSnapshotLimitExceeded",
            IdempotentParameterMismatch(_) => "IdempotentParameterMismatch",
            InsufficientVolumeCapacity(_) => "InsufficientVolumeCapacity",
            TagLimitExceeded(_) => "TagLimitExceeded",
            SnapshotInUse(_) => "InvalidSnapshot.InUse",
            IncorrectModificationState(_) => "IncorrectModificationState",
            IncompleteSignature(_) => "IncompleteSignature",
            UnauthorizedOperation(_) => "UnauthorizedOperation",
            OperationNotPermitted(_) => "OperationNotPermitted",
            ResourceLimitExceeded(_) => "ResourceLimitExceeded",
            UserIdMalformed(_) => "InvalidUserID.Malformed",
            InvalidAttributeItemValue(_) => "InvalidAMIAttributeItemValue",
            RequestTooLarge(_) => "RequestEntityTooLarge",
            RequestLimitExceeded => "RequestLimitExceeded",
            Unavailable(_) | Timeout => "Unavailable",
            InternalError(_) => "InternalError",
        }
    }

    fn status(&self) -> StatusCode {
        use Ec2Error::*;
        match self {
            DryRunOperation => StatusCode::PRECONDITION_FAILED,
            // AWS: AuthFailure 401, SignatureDoesNotMatch 403, RequestExpired
            // 400. The status of the other two is not documented: 401, as
            // for any request without valid credentials.
            MissingAuthenticationToken | AuthFailure(_) | IncompleteSignature(_) => {
                StatusCode::UNAUTHORIZED
            }
            SignatureDoesNotMatch(_) | UnauthorizedOperation(_) => StatusCode::FORBIDDEN,
            RequestTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            RequestLimitExceeded | Unavailable(_) | Timeout => StatusCode::SERVICE_UNAVAILABLE,
            InternalError(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The envelope as `text/xml`.
    fn respond(self, request_id: &str) -> Response {
        super::xml::xml_response(self.status(), self.body(request_id))
    }
}

impl IntoResponse for Ec2Error {
    /// Without a request id at hand (prefer [`AwsError::respond`]).
    fn into_response(self) -> Response {
        self.respond("")
    }
}

impl From<LayerFailure> for Ec2Error {
    fn from(f: LayerFailure) -> Self {
        match f {
            LayerFailure::Overloaded(_) => Ec2Error::RequestLimitExceeded,
            LayerFailure::TimedOut(_) => Ec2Error::Timeout,
            LayerFailure::BodyTooLarge(max) => Ec2Error::RequestTooLarge(max),
            LayerFailure::Internal(m) => Ec2Error::InternalError(m),
        }
    }
}

impl From<AuthError> for Ec2Error {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::MissingAuthenticationToken => Ec2Error::MissingAuthenticationToken,
            AuthError::IncompleteSignature(m) => Ec2Error::IncompleteSignature(m),
            AuthError::AuthFailure(m) => Ec2Error::AuthFailure(m),
            AuthError::SignatureDoesNotMatch(m) => Ec2Error::SignatureDoesNotMatch(m),
            AuthError::RequestExpired(m) => Ec2Error::RequestExpired(m),
            AuthError::Unavailable(m) => Ec2Error::Unavailable(m),
        }
    }
}

impl From<MetaError> for Ec2Error {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::VolumeNotFound(id) => Ec2Error::VolumeNotFound(id),
            MetaError::SnapshotNotFound(id) => Ec2Error::SnapshotNotFound(id),
            MetaError::InvalidId(id) => Ec2Error::InvalidId(id),
            MetaError::ConcurrentSnapshotLimit(vol) => {
                Ec2Error::ConcurrentSnapshotLimitExceeded(vol)
            }
            MetaError::IncorrectState(m) => Ec2Error::IncorrectState(m),
            MetaError::VolumeInUse(m) => Ec2Error::VolumeInUse(m),
            MetaError::IdempotentParameterMismatch(t) => Ec2Error::IdempotentParameterMismatch(t),
            // Only the operator endpoints name nodes; no EC2 request does.
            e @ MetaError::NodeNotFound(_) => Ec2Error::IncorrectState(e.to_string()),
            MetaError::IncorrectModificationState(m) => Ec2Error::IncorrectModificationState(m),
            MetaError::InvalidModification(m) => Ec2Error::InvalidParameterValue(m),
            MetaError::OperationNotPermitted(m) => Ec2Error::OperationNotPermitted(m),
            MetaError::ResourceLimitExceeded(m) => Ec2Error::ResourceLimitExceeded(m),
            // Accounts and keys change through the admin verbs, not EC2.
            e @ (MetaError::AccountNotFound(_)
            | MetaError::AccountExists(_)
            | MetaError::AccessKeyNotFound(_)) => Ec2Error::InternalError(e.to_string()),
        }
    }
}

impl From<MetaClientError> for Ec2Error {
    fn from(e: MetaClientError) -> Self {
        match e {
            MetaClientError::Unavailable(m) => Ec2Error::Unavailable(m),
            MetaClientError::Decode(m) => Ec2Error::InternalError(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_errors_map_to_codes_and_statuses() {
        let table: Vec<(MetaError, &str, u16)> = vec![
            (MetaError::VolumeNotFound("vol-1".into()), "InvalidVolume.NotFound", 400),
            (MetaError::SnapshotNotFound("snap-1".into()), "InvalidSnapshot.NotFound", 400),
            (MetaError::InvalidId("ami-1".into()), "InvalidID", 400),
            (
                MetaError::ConcurrentSnapshotLimit("vol-1".into()),
                "ConcurrentSnapshotLimitExceeded",
                400,
            ),
            (MetaError::IncorrectState("x".into()), "IncorrectState", 400),
            (MetaError::VolumeInUse("x".into()), "VolumeInUse", 400),
            (MetaError::ResourceLimitExceeded("x".into()), "ResourceLimitExceeded", 400),
            (
                MetaError::IdempotentParameterMismatch("t".into()),
                "IdempotentParameterMismatch",
                400,
            ),
        ];
        for (meta, code, status) in table {
            let e = Ec2Error::from(meta.clone());
            assert_eq!(e.code(), code, "{meta:?}");
            assert_eq!(e.status().as_u16(), status, "{meta:?}");
            // The message is the metadata group's, unchanged.
            assert_eq!(e.to_string(), meta.to_string());
        }
    }

    #[test]
    fn client_errors_are_retryable_503_or_500() {
        let e = Ec2Error::from(MetaClientError::Unavailable("no leader".into()));
        assert_eq!((e.code(), e.status().as_u16()), ("Unavailable", 503));
        let e = Ec2Error::from(MetaClientError::Decode("bad".into()));
        assert_eq!((e.code(), e.status().as_u16()), ("InternalError", 500));
    }

    #[test]
    fn auth_errors_keep_aws_codes_and_statuses() {
        let table = [
            (AuthError::MissingAuthenticationToken, "MissingAuthenticationToken", 401),
            (AuthError::IncompleteSignature("x".into()), "IncompleteSignature", 401),
            (AuthError::AuthFailure("y".into()), "AuthFailure", 401),
            (AuthError::SignatureDoesNotMatch("z".into()), "SignatureDoesNotMatch", 403),
            (AuthError::RequestExpired("w".into()), "RequestExpired", 400),
            (AuthError::Unavailable("v".into()), "Unavailable", 503),
        ];
        for (a, code, status) in table {
            let e = Ec2Error::from(a.clone());
            assert_eq!((e.code(), e.status().as_u16()), (code, status));
            assert!(e.to_string().ends_with(&a.to_string()), "{e}");
        }
    }

    #[test]
    fn statuses() {
        let table = [
            (Ec2Error::DryRunOperation, "DryRunOperation", 412),
            (Ec2Error::MissingAuthenticationToken, "MissingAuthenticationToken", 401),
            (Ec2Error::AuthFailure("x".into()), "AuthFailure", 401),
            (Ec2Error::RequestLimitExceeded, "RequestLimitExceeded", 503),
            (Ec2Error::Timeout, "Unavailable", 503),
            (Ec2Error::MissingAction, "MissingAction", 400),
            (Ec2Error::InvalidAction("Foo".into()), "InvalidAction", 400),
            (Ec2Error::VolumeIdMalformed("vol-x".into()), "InvalidVolumeID.Malformed", 400),
            (Ec2Error::RequestTooLarge(10), "RequestEntityTooLarge", 413),
        ];
        for (e, code, status) in table {
            assert_eq!((e.code(), e.status().as_u16()), (code, status));
        }
        assert_eq!(
            Ec2Error::DryRunOperation.to_string(),
            "Request would have succeeded, but DryRun flag is set."
        );
    }

    #[test]
    fn envelope_is_exact_and_escaped() {
        let body = Ec2Error::InvalidParameterValue("a <b> & 'c'".into()).body("req-1");
        assert!(body.ends_with(
            "<Response><Errors><Error><Code>InvalidParameterValue</Code><Message>a &lt;b&gt; &amp; &apos;c&apos;</Message></Error></Errors><RequestID>req-1</RequestID></Response>"
        ));
        let mut r = quick_xml::Reader::from_str(&body);
        loop {
            match r.read_event() {
                Ok(quick_xml::events::Event::Eof) => break,
                Ok(_) => {}
                Err(e) => panic!("not well formed: {e}"),
            }
        }
    }
}
