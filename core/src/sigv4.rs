//! AWS Signature Version 4, the pure parts: the canonical request, the
//! string to sign, the signing key and the signature. The CLI signs its EC2
//! calls with it; a verifier rebuilds the same canonical request from what
//! arrived and compares. No I/O, no clock: the caller passes the time.
//!
//! The rules (AWS's SigV4 documentation, and what botocore sends): query
//! keys and values percent-encoded with only `A-Za-z0-9-_.~` left as they
//! are (upper-case hex, a space is `%20`), sorted by key then value; header
//! names lower-cased, values trimmed with inner runs of whitespace collapsed
//! to one space, repeated headers joined with `,`; the payload hash is the
//! hex SHA-256 of the raw body (or what `x-amz-content-sha256` says).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

type HmacSha256 = Hmac<Sha256>;

/// What a signature covers.
#[derive(Clone, Debug)]
pub struct SignedParts<'a> {
    pub method: &'a str,
    /// The path as sent (`/` for EC2); it is percent-encoded once more, as
    /// every service but S3 does.
    pub path: &'a str,
    /// Decoded query pairs.
    pub query: &'a [(String, String)],
    /// Every header that is signed, names in any case.
    pub headers: &'a [(String, String)],
    /// Hex SHA-256 of the body, or `UNSIGNED-PAYLOAD`.
    pub payload_hash: &'a str,
}

/// The credential scope: `YYYYMMDD/region/service/aws4_request`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    pub date: String,
    pub region: String,
    pub service: String,
}

impl Scope {
    pub fn render(&self) -> String {
        format!("{}/{}/{}/aws4_request", self.date, self.region, self.service)
    }
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Percent-encodes `s` as SigV4 wants; `/` stays when `keep_slash`.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let plain = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~');
        if plain || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The lower-cased names of `headers`, sorted and deduplicated, joined by `;`.
pub fn signed_header_names(headers: &[(String, String)]) -> String {
    let mut names: Vec<String> = headers.iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
    names.sort();
    names.dedup();
    names.join(";")
}

/// The canonical request.
pub fn canonical_request(p: &SignedParts<'_>) -> String {
    let mut query: Vec<(String, String)> =
        p.query.iter().map(|(k, v)| (uri_encode(k, false), uri_encode(v, false))).collect();
    query.sort();
    let query: Vec<String> = query.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut sorted: Vec<(String, String)> = p
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.split_whitespace().collect::<Vec<_>>().join(" ")))
        .collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, value) in sorted {
        match headers.last_mut() {
            Some((last, joined)) if *last == name => {
                joined.push(',');
                joined.push_str(&value);
            }
            _ => headers.push((name, value)),
        }
    }
    let canonical_headers: String = headers.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let path = if p.path.is_empty() { "/" } else { p.path };
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        p.method,
        uri_encode(path, true),
        query.join("&"),
        canonical_headers,
        signed_header_names(p.headers),
        p.payload_hash
    )
}

/// The string to sign, `amz_date` being `YYYYMMDDTHHMMSSZ`.
pub fn string_to_sign(amz_date: &str, scope: &Scope, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{}\n{}",
        scope.render(),
        sha256_hex(canonical_request.as_bytes())
    )
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes a key of any length.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts every key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The key for one (secret, day, region, service).
pub fn signing_key(secret: &str, scope: &Scope) -> [u8; 32] {
    let k = hmac(format!("AWS4{secret}").as_bytes(), scope.date.as_bytes());
    let k = hmac(&k, scope.region.as_bytes());
    let k = hmac(&k, scope.service.as_bytes());
    hmac(&k, b"aws4_request")
}

/// The hex signature of `string_to_sign`.
pub fn signature(key: &[u8; 32], string_to_sign: &str) -> String {
    hex::encode(hmac(key, string_to_sign.as_bytes()))
}

/// True when `claimed` (hex) is the signature of `string_to_sign`,
/// compared in constant time.
pub fn verify(key: &[u8; 32], string_to_sign: &str, claimed: &str) -> bool {
    let Ok(claimed) = hex::decode(claimed) else { return false };
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts every key length");
    mac.update(string_to_sign.as_bytes());
    mac.verify_slice(&claimed).is_ok()
}

/// Signs a request with header authentication: the `Authorization` value.
/// `parts.headers` must include `host` and `x-amz-date` (= `amz_date`).
pub fn authorization(
    access_key: &str,
    secret: &str,
    amz_date: &str,
    scope: &Scope,
    parts: &SignedParts<'_>,
) -> String {
    let sts = string_to_sign(amz_date, scope, &canonical_request(parts));
    let sig = signature(&signing_key(secret, scope), &sts);
    format!(
        "{ALGORITHM} Credential={access_key}/{}, SignedHeaders={}, Signature={sig}",
        scope.render(),
        signed_header_names(parts.headers)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vanilla_scope() -> Scope {
        Scope { date: "20150830".into(), region: "us-east-1".into(), service: "service".into() }
    }

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    /// AWS's SigV4 test suite, `get-vanilla`.
    #[test]
    fn signs_the_get_vanilla_vector() {
        let headers = vec![
            ("Host".to_string(), "example.amazonaws.com".to_string()),
            ("X-Amz-Date".to_string(), "20150830T123600Z".to_string()),
        ];
        let parts = SignedParts {
            method: "GET",
            path: "/",
            query: &[],
            headers: &headers,
            payload_hash: &sha256_hex(b""),
        };
        let auth =
            authorization("AKIDEXAMPLE", SECRET, "20150830T123600Z", &vanilla_scope(), &parts);
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
        let sts = string_to_sign("20150830T123600Z", &vanilla_scope(), &canonical_request(&parts));
        let key = signing_key(SECRET, &vanilla_scope());
        assert!(verify(
            &key,
            &sts,
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        ));
        assert!(!verify(
            &key,
            &sts,
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf30"
        ));
        assert!(!verify(&key, &sts, "not hex"));
    }

    #[test]
    fn canonical_form_of_query_and_headers() {
        let query = vec![
            ("b".to_string(), "a b".to_string()),
            ("a".to_string(), "x/y~".to_string()),
            ("a".to_string(), "w".to_string()),
        ];
        let headers = vec![
            ("X-Multi".to_string(), "  one   two ".to_string()),
            ("Host".to_string(), "h".to_string()),
            ("x-multi".to_string(), "three".to_string()),
        ];
        let parts = SignedParts {
            method: "POST",
            path: "/snapshots/snap-1/blocks",
            query: &query,
            headers: &headers,
            payload_hash: "UNSIGNED-PAYLOAD",
        };
        assert_eq!(
            canonical_request(&parts),
            "POST\n/snapshots/snap-1/blocks\na=w&a=x%2Fy~&b=a%20b\nhost:h\nx-multi:one two,three\n\n\
             host;x-multi\nUNSIGNED-PAYLOAD"
        );
    }
}
