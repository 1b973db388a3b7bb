//! The one EBS direct API error type: each variant knows its AWS code, its
//! HTTP status and its `Reason`, and renders the rest-json error botocore
//! parses (code from `x-amzn-ErrorType`, message from the body's `message`,
//! the modelled `Reason` member from the body).

use crate::http::error::{AwsError, LayerFailure};
use crate::http::request_id::REQUEST_ID_HEADER;
use crate::nodes::HostError;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cairn_core::command::MetaError;
use cairn_proto::MetaClientError;

/// `ValidationException` reasons of the model that this gateway uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    PageToken,
    BlockToken,
    SnapshotId,
    UnrelatedSnapshots,
    Block,
    Tag,
    DependencyRequest,
    ParameterValue,
    VolumeSize,
    WriteRequestTimeout,
}

impl Invalid {
    pub fn as_str(self) -> &'static str {
        match self {
            Invalid::PageToken => "INVALID_PAGE_TOKEN",
            Invalid::BlockToken => "INVALID_BLOCK_TOKEN",
            Invalid::SnapshotId => "INVALID_SNAPSHOT_ID",
            Invalid::UnrelatedSnapshots => "UNRELATED_SNAPSHOTS",
            Invalid::Block => "INVALID_BLOCK",
            Invalid::Tag => "INVALID_TAG",
            Invalid::DependencyRequest => "INVALID_DEPENDENCY_REQUEST",
            Invalid::ParameterValue => "INVALID_PARAMETER_VALUE",
            Invalid::VolumeSize => "INVALID_VOLUME_SIZE",
            Invalid::WriteRequestTimeout => "WRITE_REQUEST_TIMEOUT",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EbsError {
    #[error("{1}")]
    Validation(Invalid, String),
    #[error("The snapshot '{0}' does not exist.")]
    SnapshotNotFound(String),
    /// Another account's snapshot, or an Outpost local snapshot (which the
    /// EBS direct APIs do not serve).
    #[error("{0}")]
    AccessDenied(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Throttled(String),
    #[error("{0}")]
    Internal(String),
    /// No operation matches the method and path.
    #[error("{0}")]
    UnknownOperation(String),
}

impl EbsError {
    pub fn invalid(reason: Invalid, msg: impl Into<String>) -> Self {
        EbsError::Validation(reason, msg.into())
    }

    /// The modelled `Reason`, where the exception has one.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            EbsError::Validation(r, _) => Some(r.as_str()),
            EbsError::SnapshotNotFound(_) => Some("SNAPSHOT_NOT_FOUND"),
            EbsError::AccessDenied(_) => Some("UNAUTHORIZED_ACCOUNT"),
            EbsError::Throttled(_) => Some("ACCOUNT_THROTTLED"),
            _ => None,
        }
    }

    /// The JSON body: `message` (and `Message`, the modelled member), `Reason`.
    pub fn body(&self) -> serde_json::Value {
        let msg = self.to_string();
        let mut body = serde_json::json!({ "message": msg, "Message": msg });
        if let Some(r) = self.reason() {
            body["Reason"] = serde_json::Value::from(r);
        }
        body
    }
}

impl AwsError for EbsError {
    fn code(&self) -> &'static str {
        match self {
            EbsError::Validation(..) => "ValidationException",
            EbsError::SnapshotNotFound(_) => "ResourceNotFoundException",
            EbsError::AccessDenied(_) => "AccessDeniedException",
            EbsError::Conflict(_) => "ConflictException",
            EbsError::Throttled(_) => "RequestThrottledException",
            EbsError::Internal(_) => "InternalServerException",
            EbsError::UnknownOperation(_) => "UnknownOperationException",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            EbsError::Validation(..) | EbsError::Throttled(_) => StatusCode::BAD_REQUEST,
            EbsError::SnapshotNotFound(_) | EbsError::UnknownOperation(_) => StatusCode::NOT_FOUND,
            EbsError::AccessDenied(_) => StatusCode::FORBIDDEN,
            EbsError::Conflict(_) => StatusCode::CONFLICT,
            EbsError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The rest-json error, logged (a warning when the fault is ours).
    fn respond(self, request_id: &str) -> Response {
        if self.status().is_server_error() {
            tracing::warn!(code = self.code(), error = %self, "ebs request failed");
        } else {
            tracing::debug!(code = self.code(), error = %self, "ebs request refused");
        }
        let mut resp = (self.status(), axum::Json(self.body())).into_response();
        let h = resp.headers_mut();
        h.insert("x-amzn-ErrorType", HeaderValue::from_static(self.code()));
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert(REQUEST_ID_HEADER, v);
        }
        resp
    }
}

impl IntoResponse for EbsError {
    fn into_response(self) -> Response {
        self.respond("")
    }
}

impl From<LayerFailure> for EbsError {
    fn from(f: LayerFailure) -> Self {
        match f {
            LayerFailure::Overloaded(m) | LayerFailure::TimedOut(m) => {
                EbsError::Throttled(format!("The request was not served: {m}"))
            }
            LayerFailure::BodyTooLarge(max) => EbsError::invalid(
                Invalid::ParameterValue,
                format!("The request body is larger than {max} bytes."),
            ),
            LayerFailure::Internal(m) => EbsError::Internal(m),
        }
    }
}

impl From<MetaClientError> for EbsError {
    /// The metadata group not answering is throttling to the client: botocore
    /// retries `RequestThrottledException`.
    fn from(e: MetaClientError) -> Self {
        match e {
            MetaClientError::Unavailable(m) => {
                EbsError::Throttled(format!("The service is busy, try again: {m}"))
            }
            other => EbsError::Internal(other.to_string()),
        }
    }
}

impl From<MetaError> for EbsError {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::SnapshotNotFound(id) => EbsError::SnapshotNotFound(id),
            MetaError::IdempotentParameterMismatch(t) => EbsError::Conflict(format!(
                "The client token {t} was already used with different parameters."
            )),
            MetaError::IncorrectState(m) => EbsError::invalid(Invalid::SnapshotId, m),
            MetaError::InvalidId(m) => EbsError::invalid(Invalid::SnapshotId, m),
            other => EbsError::Internal(other.to_string()),
        }
    }
}

impl From<HostError> for EbsError {
    fn from(e: HostError) -> Self {
        if e.is_transient() {
            EbsError::Throttled(format!("A storage node is busy or unreachable, try again: {e}"))
        } else {
            EbsError::Internal(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_statuses_reasons() {
        let table: Vec<(EbsError, &str, u16, Option<&str>)> = vec![
            (
                EbsError::invalid(Invalid::UnrelatedSnapshots, "x"),
                "ValidationException",
                400,
                Some("UNRELATED_SNAPSHOTS"),
            ),
            (
                EbsError::SnapshotNotFound("snap-1".into()),
                "ResourceNotFoundException",
                404,
                Some("SNAPSHOT_NOT_FOUND"),
            ),
            (
                EbsError::AccessDenied("no".into()),
                "AccessDeniedException",
                403,
                Some("UNAUTHORIZED_ACCOUNT"),
            ),
            (EbsError::Conflict("c".into()), "ConflictException", 409, None),
            (
                EbsError::Throttled("t".into()),
                "RequestThrottledException",
                400,
                Some("ACCOUNT_THROTTLED"),
            ),
            (EbsError::Internal("i".into()), "InternalServerException", 500, None),
        ];
        for (e, code, status, reason) in table {
            assert_eq!((e.code(), e.status().as_u16(), e.reason()), (code, status, reason));
            let body = e.body();
            assert_eq!(body["message"], e.to_string());
            assert_eq!(body.get("Reason").and_then(|r| r.as_str()), reason);
        }
    }

    #[test]
    fn meta_errors_map() {
        let e: EbsError = MetaError::IdempotentParameterMismatch("tok".into()).into();
        assert_eq!(e.code(), "ConflictException");
        let e: EbsError = MetaError::SnapshotNotFound("snap-1".into()).into();
        assert_eq!(e.status().as_u16(), 404);
        let e: EbsError = MetaClientError::Unavailable("no leader".into()).into();
        assert_eq!(e.code(), "RequestThrottledException");
    }
}
