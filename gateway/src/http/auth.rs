//! Authentication: who sent the request, from its SigV4 credential scope.
//!
//! Two policies. [`Authenticator::Verify`] checks the SigV4 signature
//! ([`super::sigv4`]) with the secret of the access key it names, read from
//! the metadata group ([`super::keys`]), and the caller is the key's
//! account. [`Authenticator::DevAnyKey`] (development, loopback only)
//! accepts any key and any signature as the one configured account. Both
//! require the scope to name this endpoint's region and the front's service.

use super::keys::KeyRing;
pub use super::scope::{
    parse_authorization, parse_credential, request_scope, AuthError, Caller, SigV4Scope, ALGORITHM,
};
use super::sigv4::{self, UNSIGNED_PAYLOAD};
use axum::http::{HeaderMap, Method, Uri};
use cairn_core::sigv4::sha256_hex;
use std::sync::Arc;

/// The authentication policy.
#[derive(Clone)]
pub enum Authenticator {
    /// Any key, any signature, one account (development only).
    DevAnyKey { account_id: String, region: String },
    /// SigV4 checked against the access keys in the metadata group.
    Verify { region: String, keys: Arc<KeyRing> },
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Authenticator::DevAnyKey { region, .. } => write!(f, "DevAnyKey({region})"),
            Authenticator::Verify { region, .. } => write!(f, "Verify({region})"),
        }
    }
}

/// What a request presents to be authenticated.
pub struct Presented<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    /// The body, when it was read (EC2 form posts, EBS JSON and blocks).
    pub body: Option<&'a [u8]>,
}

/// The scope must name this endpoint's region and the front's service.
fn check_scope(scope: &SigV4Scope, region: &str, service: &str) -> Result<(), AuthError> {
    if scope.region != region {
        return Err(AuthError::AuthFailure(format!(
            "Credential should be scoped to a valid region, not '{}'. This endpoint serves region '{region}'.",
            scope.region
        )));
    }
    if scope.service != service {
        return Err(AuthError::AuthFailure(format!(
            "Credential should be scoped to correct service: '{service}', not '{}'.",
            scope.service
        )));
    }
    Ok(())
}

fn now_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl Authenticator {
    /// The caller of a request to `service` (`ec2` or `ebs`).
    pub async fn authenticate(
        &self,
        req: &Presented<'_>,
        service: &str,
    ) -> Result<Caller, AuthError> {
        match self {
            Authenticator::DevAnyKey { account_id, region } => {
                let scope = request_scope(req.headers, req.uri.query())?;
                check_scope(&scope, region, service)?;
                Ok(Caller {
                    access_key: scope.access_key.clone(),
                    account_id: account_id.clone(),
                    region: scope.region.clone(),
                })
            }
            Authenticator::Verify { region, keys } => {
                let declared =
                    req.headers.get("x-amz-content-sha256").and_then(|v| v.to_str().ok());
                let unsigned = declared == Some(UNSIGNED_PAYLOAD);
                // Only EBS PutSnapshotBlock may leave its body unsigned (its
                // model's `v4-unsigned-body`; its checksum header covers it).
                if unsigned && !(service == "ebs" && req.method == Method::PUT) {
                    return Err(AuthError::IncompleteSignature(
                        "UNSIGNED-PAYLOAD is not accepted for this operation.".into(),
                    ));
                }
                let body_hash = if unsigned { None } else { req.body.map(sha256_hex) };
                let signed = sigv4::parse(req.method, req.uri, req.headers, body_hash.as_deref())?;
                check_scope(&signed.scope, region, service)?;
                signed.check_time(now_secs())?;
                let key = keys.lookup(&signed.scope.access_key).await?.ok_or_else(|| {
                    AuthError::AuthFailure(
                        "AWS was not able to validate the provided access credentials".into(),
                    )
                })?;
                signed.verify(&key.secret)?;
                Ok(Caller {
                    access_key: signed.scope.access_key,
                    account_id: key.account_id,
                    region: region.clone(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/cairn-1/ec2/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=abc";

    #[test]
    fn scopes_must_name_the_region_and_service() {
        let s = parse_authorization(GOOD).unwrap();
        assert_eq!(check_scope(&s, "cairn-1", "ec2"), Ok(()));
        let e = check_scope(&s, "us-east-1", "ec2").unwrap_err();
        assert!(matches!(e, AuthError::AuthFailure(_)), "{e:?}");
        assert!(e.to_string().contains("'us-east-1'"), "{e}");
        let e = check_scope(&s, "cairn-1", "ebs").unwrap_err();
        assert!(matches!(e, AuthError::AuthFailure(_)), "{e:?}");
    }
}
