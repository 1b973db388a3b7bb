//! Checksums of the EBS direct APIs: per-block SHA-256 in Base64, and the
//! LINEAR aggregate of CompleteSnapshot.
//!
//! The model says the aggregate is the SHA-256 of the per-block checksums
//! concatenated in ascending block-index order, but not whether "checksum"
//! means the Base64 text a client sent or the raw 32-byte digest. We accept
//! either: the Base64-text form is what the SDK samples and the AWS docs'
//! examples build (they concatenate the strings they sent), and the raw
//! form is the other reading of the model. Both are SHA-256 over data the
//! gateway verified block by block, so accepting both lets no wrong data in.

use super::error::{EbsError, Invalid};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha2::{Digest, Sha256};

/// The only checksum algorithm of the model.
pub const ALGORITHM: &str = "SHA256";
/// The only aggregation method of the model.
pub const AGGREGATION: &str = "LINEAR";

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

pub fn to_b64(digest: &[u8; 32]) -> String {
    B64.encode(digest)
}

/// Checks a request's `x-amz-Checksum` (Base64 SHA-256) against `digest`.
pub fn verify_block(header: &str, digest: &[u8; 32]) -> Result<(), EbsError> {
    let sent = B64.decode(header.trim()).map_err(|_| {
        EbsError::invalid(Invalid::ParameterValue, "The checksum is not valid Base64.")
    })?;
    if sent.as_slice() != digest.as_slice() {
        return Err(EbsError::invalid(
            Invalid::ParameterValue,
            "The checksum does not match the block data.",
        ));
    }
    Ok(())
}

/// A LINEAR aggregate, built one block digest at a time in ascending
/// block-index order (see the module comment for the two forms).
#[derive(Default)]
pub struct Linear {
    over_text: Sha256,
    over_raw: Sha256,
}

impl Linear {
    pub fn add(&mut self, digest: &[u8; 32]) {
        self.over_text.update(to_b64(digest).as_bytes());
        self.over_raw.update(digest);
    }

    /// Checks a CompleteSnapshot's `x-amz-Checksum` against the digests added.
    pub fn verify(self, header: &str) -> Result<(), EbsError> {
        let sent = B64.decode(header.trim()).map_err(|_| {
            EbsError::invalid(
                Invalid::ParameterValue,
                "The aggregate checksum is not valid Base64.",
            )
        })?;
        let (text, raw): ([u8; 32], [u8; 32]) =
            (self.over_text.finalize().into(), self.over_raw.finalize().into());
        if sent.as_slice() == text.as_slice() || sent.as_slice() == raw.as_slice() {
            Ok(())
        } else {
            Err(EbsError::invalid(
                Invalid::ParameterValue,
                "The aggregate checksum does not match the blocks written.",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::error::AwsError;

    #[test]
    fn block_checksums() {
        let d = sha256(b"abc");
        // The well-known SHA-256 of "abc".
        assert_eq!(to_b64(&d), "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=");
        verify_block("ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=", &d).unwrap();
        let e = verify_block(&to_b64(&sha256(b"abd")), &d).unwrap_err();
        assert_eq!(e.code(), "ValidationException");
        assert!(verify_block("%%%", &d).is_err());
    }

    fn verify_linear(header: &str, digests: &[[u8; 32]]) -> Result<(), EbsError> {
        let mut l = Linear::default();
        digests.iter().for_each(|d| l.add(d));
        l.verify(header)
    }

    #[test]
    fn linear_aggregate_either_form() {
        let ds = [sha256(b"a"), sha256(b"b")];
        let text = sha256(format!("{}{}", to_b64(&ds[0]), to_b64(&ds[1])).as_bytes());
        let mut raw = ds[0].to_vec();
        raw.extend(ds[1]);
        let raw = sha256(&raw);
        verify_linear(&to_b64(&text), &ds).unwrap();
        verify_linear(&to_b64(&raw), &ds).unwrap();
        // Order matters.
        assert!(verify_linear(&to_b64(&text), &[ds[1], ds[0]]).is_err());
        assert!(verify_linear(&to_b64(&sha256(b"x")), &ds).is_err());
    }
}
