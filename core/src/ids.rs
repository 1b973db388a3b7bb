//! AWS-shaped resource ids: `vol-` / `snap-` / `op-` followed by 17 lowercase hex digits.

use rand::Rng;
use serde::{Deserialize, Serialize};
use std::fmt;

fn random_hex17() -> String {
    let mut rng = rand::thread_rng();
    (0..17).map(|_| char::from_digit(rng.gen_range(0..16), 16).unwrap_or('0')).collect()
}

/// True when `s` is `prefix` followed by 8 or 17 lowercase hex digits (AWS has both lengths).
fn well_formed(s: &str, prefix: &str) -> bool {
    match s.strip_prefix(prefix) {
        Some(rest) => {
            (rest.len() == 17 || rest.len() == 8)
                && rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        }
        None => false,
    }
}

macro_rules! aws_id {
    ($name:ident, $prefix:literal) => {
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A fresh random id.
            pub fn generate() -> Self {
                $name(format!("{}{}", $prefix, random_hex17()))
            }

            /// Parses an id; `None` unless it is well formed.
            pub fn parse(s: &str) -> Option<Self> {
                well_formed(s, $prefix).then(|| $name(s.to_string()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

aws_id!(VolumeId, "vol-");
aws_id!(SnapshotId, "snap-");
aws_id!(OutpostId, "op-");

impl OutpostId {
    /// `arn:aws:outposts:<region>:<account>:outpost/op-...`
    pub fn arn(&self, region: &str, account: &str) -> String {
        format!("arn:aws:outposts:{region}:{account}:outpost/{}", self.0)
    }

    /// The outpost id named by an Outpost ARN, whatever its region and account.
    pub fn from_arn(arn: &str) -> Option<Self> {
        let (head, id) = arn.rsplit_once(":outpost/")?;
        if !head.starts_with("arn:aws:outposts:") {
            return None;
        }
        Self::parse(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse() {
        for _ in 0..100 {
            let v = VolumeId::generate();
            assert_eq!(v.as_str().len(), 4 + 17);
            assert_eq!(VolumeId::parse(v.as_str()), Some(v));
        }
        assert!(SnapshotId::parse("snap-0123456789abcdef0").is_some());
        assert!(SnapshotId::parse("snap-0123456789ABCDEF0").is_none());
        assert!(SnapshotId::parse("vol-0123456789abcdef0").is_none());
        assert!(VolumeId::parse("vol-123").is_none());
        assert!(VolumeId::parse("vol-12345678").is_some());
    }

    #[test]
    fn outpost_arn_roundtrip() {
        let op = OutpostId::generate();
        let arn = op.arn("cairn-1", "123456789012");
        assert_eq!(OutpostId::from_arn(&arn), Some(op));
        assert_eq!(OutpostId::from_arn("arn:aws:ec2:x:y:outpost/op-0123456789abcdef0"), None);
    }
}
