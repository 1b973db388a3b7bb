//! SigV4 verification of one request, from what arrived: the auth mode
//! (presigned query first, as a browser may add an unrelated
//! `Authorization`; then the header), the credential scope, the time, and
//! the string to sign rebuilt from the method, the path, the query, the
//! signed headers and the payload hash. The caller looks the key up and
//! calls [`Signed::verify`] with its secret; the comparison is constant
//! time. Pure: the clock is a parameter.
//!
//! What AWS answers, and so this: a request without credentials is
//! `MissingAuthenticationToken`; a malformed `Authorization` or presigned
//! query `IncompleteSignature`; a time more than 15 minutes off, or a
//! presigned URL past its `X-Amz-Expires`, `RequestExpired`; a scope whose
//! date is not the request's day, or a signature that does not match,
//! `SignatureDoesNotMatch`.

use super::scope::{parse_credential, AuthError, SigV4Scope, ALGORITHM};
use axum::http::{HeaderMap, Method, Uri};
use cairn_core::sigv4::{self, Scope, SignedParts};

/// How far a request's time may be from the server's: 15 minutes.
pub const MAX_SKEW_SECS: i64 = 15 * 60;
/// The longest a presigned URL may live (AWS: 7 days).
pub const MAX_EXPIRES_SECS: i64 = 7 * 24 * 3600;
/// The payload hash of a request whose body the signature does not cover.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
const CONTENT_SHA256: &str = "x-amz-content-sha256";

/// A request's signature, parsed and ready to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    pub scope: SigV4Scope,
    /// `YYYYMMDDTHHMMSSZ`.
    pub amz_date: String,
    /// The request's time, seconds since the epoch.
    pub time_secs: i64,
    /// Presigned: how long the URL lives after `amz_date`.
    pub expires_secs: Option<i64>,
    /// The string to sign rebuilt from the request.
    pub string_to_sign: String,
    /// Another string the signature may cover: an EC2 URL botocore
    /// presigned is signed as the `POST` its query protocol uses, and sent
    /// as a `GET` (the Query API treats the two alike).
    pub also_accepted: Option<String>,
    /// The signature the request carries (hex).
    pub signature: String,
}

impl Signed {
    /// Whether the signature is the one `secret` makes.
    pub fn verify(&self, secret: &str) -> Result<(), AuthError> {
        let scope = Scope {
            date: self.scope.date.clone(),
            region: self.scope.region.clone(),
            service: self.scope.service.clone(),
        };
        let key = sigv4::signing_key(secret, &scope);
        let also = self.also_accepted.as_deref();
        if sigv4::verify(&key, &self.string_to_sign, &self.signature)
            || also.is_some_and(|sts| sigv4::verify(&key, sts, &self.signature))
        {
            Ok(())
        } else {
            Err(AuthError::SignatureDoesNotMatch(
                "The request signature we calculated does not match the signature you provided. \
                 Check your AWS Secret Access Key and signing method. Consult the service \
                 documentation for details."
                    .into(),
            ))
        }
    }

    /// Refuses a request whose time is too far from `now_secs`, or a
    /// presigned URL that expired.
    pub fn check_time(&self, now_secs: i64) -> Result<(), AuthError> {
        let expired = || AuthError::RequestExpired("Request has expired.".into());
        if self.time_secs - now_secs > MAX_SKEW_SECS {
            return Err(AuthError::RequestExpired(format!(
                "Signature not yet current: {} is still later than {} (15 minutes from now).",
                self.amz_date,
                format_amz_date(now_secs + MAX_SKEW_SECS)
            )));
        }
        match self.expires_secs {
            Some(e) if now_secs > self.time_secs + e => Err(expired()),
            None if now_secs - self.time_secs > MAX_SKEW_SECS => Err(expired()),
            _ => Ok(()),
        }
    }
}

/// `X-Amz-Date` as seconds since the epoch.
pub fn parse_amz_date(s: &str) -> Option<i64> {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let t = time::PrimitiveDateTime::parse(s, format).ok()?;
    Some(t.assume_utc().unix_timestamp())
}

fn format_amz_date(secs: i64) -> String {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_default()
}

fn incomplete(msg: impl Into<String>) -> AuthError {
    AuthError::IncompleteSignature(msg.into())
}

/// Decoded query pairs, `+` as a space (as every form decoder reads it).
fn query_pairs(query: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str(query).unwrap_or_default()
}

/// The `Authorization` header's parts: credential, signed headers, signature.
fn header_parts(value: &str) -> Result<(SigV4Scope, Vec<String>, String), AuthError> {
    let rest = value.trim().strip_prefix(ALGORITHM).ok_or_else(|| {
        incomplete(format!("Unsupported authorization scheme; only {ALGORITHM} is accepted."))
    })?;
    let mut credential = None;
    let mut signed = None;
    let mut signature = None;
    for part in rest.split(',').map(str::trim) {
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let credential = credential
        .ok_or_else(|| incomplete("Authorization header requires 'Credential' parameter."))?;
    let signed = signed
        .ok_or_else(|| incomplete("Authorization header requires 'SignedHeaders' parameter."))?;
    let signature = signature
        .ok_or_else(|| incomplete("Authorization header requires 'Signature' parameter."))?;
    let names = signed.split(';').map(|n| n.trim().to_ascii_lowercase()).collect();
    Ok((parse_credential(credential)?, names, signature.to_string()))
}

/// What a request says about its signature, before the string to sign.
struct Claimed {
    scope: SigV4Scope,
    signed_headers: Vec<String>,
    signature: String,
    amz_date: String,
    expires_secs: Option<i64>,
    /// The query pairs the signature covers (a presigned URL's signature
    /// is not among them).
    query: Vec<(String, String)>,
}

fn presigned(pairs: Vec<(String, String)>) -> Result<Claimed, AuthError> {
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    if get("X-Amz-Algorithm").as_deref() != Some(ALGORITHM) {
        return Err(incomplete(format!("X-Amz-Algorithm only supports \"{ALGORITHM}\".")));
    }
    let missing =
        |k: &str| incomplete(format!("Query-string authentication requires the {k} parameter."));
    let credential = get("X-Amz-Credential").ok_or_else(|| missing("X-Amz-Credential"))?;
    let signed = get("X-Amz-SignedHeaders").ok_or_else(|| missing("X-Amz-SignedHeaders"))?;
    let signature = get("X-Amz-Signature").ok_or_else(|| missing("X-Amz-Signature"))?;
    let amz_date = get("X-Amz-Date").ok_or_else(|| missing("X-Amz-Date"))?;
    let expires = get("X-Amz-Expires").ok_or_else(|| missing("X-Amz-Expires"))?;
    let expires_secs =
        expires.parse::<i64>().ok().filter(|e| (0..=MAX_EXPIRES_SECS).contains(e)).ok_or_else(
            || {
                incomplete(format!(
                    "X-Amz-Expires must be 0 to {MAX_EXPIRES_SECS} seconds, not {expires:?}."
                ))
            },
        )?;
    let query = pairs.into_iter().filter(|(k, _)| k != "X-Amz-Signature").collect();
    Ok(Claimed {
        scope: parse_credential(&credential)?,
        signed_headers: signed.split(';').map(|n| n.trim().to_ascii_lowercase()).collect(),
        signature,
        amz_date,
        expires_secs: Some(expires_secs),
        query,
    })
}

fn claimed(headers: &HeaderMap, query: &str) -> Result<Claimed, AuthError> {
    let pairs = query_pairs(query);
    if pairs.iter().any(|(k, _)| k == "X-Amz-Algorithm") {
        return presigned(pairs);
    }
    let Some(auth) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Err(AuthError::MissingAuthenticationToken);
    };
    let auth = auth.to_str().map_err(|_| incomplete("Authorization header is not valid text."))?;
    let (scope, signed_headers, signature) = header_parts(auth)?;
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            incomplete("Authorization header requires existence of a 'X-Amz-Date' header.")
        })?
        .to_string();
    Ok(Claimed { scope, signed_headers, signature, amz_date, expires_secs: None, query: pairs })
}

/// Parses a request's signature and rebuilds its string to sign.
/// `body_sha256` is the hex SHA-256 of the body, or `None` when the body
/// was not read: then the request must say `x-amz-content-sha256:
/// UNSIGNED-PAYLOAD` (or carry a hash, which the caller checks against the
/// body it reads).
pub fn parse(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body_sha256: Option<&str>,
) -> Result<Signed, AuthError> {
    let c = claimed(headers, uri.query().unwrap_or(""))?;
    let time_secs = parse_amz_date(&c.amz_date).ok_or_else(|| {
        incomplete(format!("Invalid X-Amz-Date {:?}: expected YYYYMMDDTHHMMSSZ.", c.amz_date))
    })?;
    if !c.amz_date.starts_with(&c.scope.date) {
        return Err(AuthError::SignatureDoesNotMatch(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}'.",
            c.scope.date,
            &c.amz_date[..8]
        )));
    }
    if !c.signed_headers.iter().any(|h| h == "host") {
        return Err(incomplete("The host header must be signed."));
    }
    let mut signed_values = Vec::with_capacity(c.signed_headers.len());
    for name in &c.signed_headers {
        let values: Vec<&str> =
            headers.get_all(name.as_str()).iter().filter_map(|v| v.to_str().ok()).collect();
        if values.is_empty() {
            return Err(AuthError::SignatureDoesNotMatch(format!(
                "The header '{name}' is signed but not present in the request."
            )));
        }
        for v in values {
            signed_values.push((name.clone(), v.to_string()));
        }
    }
    let declared = headers.get(CONTENT_SHA256).and_then(|v| v.to_str().ok());
    let payload_hash = match (declared, body_sha256) {
        (Some(d), Some(actual)) if d != UNSIGNED_PAYLOAD && !d.eq_ignore_ascii_case(actual) => {
            return Err(AuthError::SignatureDoesNotMatch(
                "The provided 'x-amz-content-sha256' header does not match what was computed."
                    .into(),
            ))
        }
        (Some(d), _) => d.to_string(),
        (None, Some(actual)) => actual.to_string(),
        (None, None) => {
            return Err(incomplete("The request must carry an x-amz-content-sha256 header."))
        }
    };
    let scope = Scope {
        date: c.scope.date.clone(),
        region: c.scope.region.clone(),
        service: c.scope.service.clone(),
    };
    let string_for = |method: &str| {
        let parts = SignedParts {
            method,
            path: uri.path(),
            query: &c.query,
            headers: &signed_values,
            payload_hash: &payload_hash,
        };
        sigv4::string_to_sign(&c.amz_date, &scope, &sigv4::canonical_request(&parts))
    };
    let string_to_sign = string_for(method.as_str());
    let presigned_ec2_get =
        c.expires_secs.is_some() && c.scope.service == "ec2" && *method == Method::GET;
    let also_accepted = presigned_ec2_get.then(|| string_for("POST"));
    Ok(Signed {
        scope: c.scope,
        amz_date: c.amz_date,
        time_secs,
        expires_secs: c.expires_secs,
        string_to_sign,
        also_accepted,
        signature: c.signature,
    })
}
