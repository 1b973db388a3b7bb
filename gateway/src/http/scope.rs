//! The vocabulary of authentication both fronts and the verifier share:
//! why credentials were refused ([`AuthError`]), the SigV4 credential
//! scope and its parsing, and who a request is from ([`Caller`]).

use axum::http::HeaderMap;

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Why a request's credentials were refused. Each front answers it in its
/// own error shape: EC2 under the same codes, the EBS direct APIs as
/// `AccessDeniedException`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("The request must contain a valid SigV4 Authorization header or X-Amz-Credential.")]
    MissingAuthenticationToken,
    #[error("{0}")]
    IncompleteSignature(String),
    #[error("{0}")]
    AuthFailure(String),
    #[error("{0}")]
    SignatureDoesNotMatch(String),
    #[error("{0}")]
    RequestExpired(String),
    /// The keys could not be read (the metadata group is unavailable).
    #[error("{0}")]
    Unavailable(String),
}

/// The credential scope of a SigV4 request: `AKID/20260101/<region>/<service>/aws4_request`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigV4Scope {
    pub access_key: String,
    pub date: String,
    pub region: String,
    pub service: String,
}

/// Who a request is from, once authenticated; handlers read it from the
/// request extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub access_key: String,
    pub account_id: String,
    pub region: String,
}

/// Parses `Credential=` out of an `Authorization` header value.
pub fn parse_authorization(value: &str) -> Result<SigV4Scope, AuthError> {
    let rest = value.trim().strip_prefix(ALGORITHM).ok_or_else(|| {
        AuthError::IncompleteSignature(format!(
            "Unsupported authorization scheme; only {ALGORITHM} is accepted."
        ))
    })?;
    let credential = rest
        .split(',')
        .map(str::trim)
        .find_map(|part| part.strip_prefix("Credential="))
        .ok_or_else(|| {
            AuthError::IncompleteSignature(
                "Authorization header requires 'Credential' parameter.".into(),
            )
        })?;
    parse_credential(credential)
}

/// Parses a credential `AKID/date/region/service/aws4_request`.
pub fn parse_credential(credential: &str) -> Result<SigV4Scope, AuthError> {
    let parts: Vec<&str> = credential.trim().split('/').collect();
    match parts.as_slice() {
        [key, date, region, service, "aws4_request"]
            if !key.is_empty()
                && date.len() == 8
                && date.bytes().all(|b| b.is_ascii_digit())
                && !region.is_empty()
                && !service.is_empty() =>
        {
            Ok(SigV4Scope {
                access_key: key.to_string(),
                date: date.to_string(),
                region: region.to_string(),
                service: service.to_string(),
            })
        }
        _ => Err(AuthError::IncompleteSignature(format!(
            "Credential is malformed: expecting \"<key>/<YYYYMMDD>/<region>/<service>/aws4_request\", got \"{credential}\"."
        ))),
    }
}

/// The scope of a request: from the `Authorization` header, or from the
/// `X-Amz-Credential` query parameter of a presigned request.
pub fn request_scope(headers: &HeaderMap, query: Option<&str>) -> Result<SigV4Scope, AuthError> {
    if let Some(h) = headers.get(axum::http::header::AUTHORIZATION) {
        let v = h.to_str().map_err(|_| {
            AuthError::IncompleteSignature("Authorization header is not valid text.".into())
        })?;
        return parse_authorization(v);
    }
    if let Some(q) = query {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q).unwrap_or_default();
        if let Some((_, c)) = pairs.iter().find(|(k, _)| k == "X-Amz-Credential") {
            return parse_credential(c);
        }
    }
    Err(AuthError::MissingAuthenticationToken)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/cairn-1/ec2/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=abc";

    #[test]
    fn parses_scope() {
        let s = parse_authorization(GOOD).unwrap();
        assert_eq!(
            s,
            SigV4Scope {
                access_key: "AKIDEXAMPLE".into(),
                date: "20260101".into(),
                region: "cairn-1".into(),
                service: "ec2".into()
            }
        );
        // No space after commas, as some clients send it.
        let s = parse_authorization(
            "AWS4-HMAC-SHA256 SignedHeaders=host,Credential=K/20260101/r/ec2/aws4_request,Signature=x",
        )
        .unwrap();
        assert_eq!(s.region, "r");
    }

    #[test]
    fn malformed_scopes() {
        let table = [
            "AWS AKID:sig",
            "AWS4-HMAC-SHA256 SignedHeaders=host, Signature=x",
            "AWS4-HMAC-SHA256 Credential=K/2026/r/ec2/aws4_request",
            "AWS4-HMAC-SHA256 Credential=K/20260101/r/ec2/aws5_request",
            "AWS4-HMAC-SHA256 Credential=K/20260101/r/ec2",
            "AWS4-HMAC-SHA256 Credential=/20260101/r/ec2/aws4_request",
            "AWS4-HMAC-SHA256 Credential=K/20260101//ec2/aws4_request",
        ];
        for h in table {
            let e = parse_authorization(h).unwrap_err();
            assert!(matches!(e, AuthError::IncompleteSignature(_)), "{h}");
        }
    }

    #[test]
    fn header_or_query_or_missing() {
        let mut headers = HeaderMap::new();
        assert_eq!(request_scope(&headers, None), Err(AuthError::MissingAuthenticationToken));
        assert_eq!(
            request_scope(&headers, Some("Action=DescribeVolumes")),
            Err(AuthError::MissingAuthenticationToken)
        );
        let q =
            "Action=DescribeVolumes&X-Amz-Credential=K%2F20260101%2Fcairn-1%2Fec2%2Faws4_request";
        assert_eq!(request_scope(&headers, Some(q)).unwrap().access_key, "K");
        headers.insert(axum::http::header::AUTHORIZATION, GOOD.parse().unwrap());
        assert_eq!(request_scope(&headers, None).unwrap().access_key, "AKIDEXAMPLE");
    }
}
