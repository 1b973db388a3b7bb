//! Accounts and their access keys, as the metadata group keeps them, and
//! the cluster key that seals every secret access key.
//!
//! A secret key is never stored in clear: the proposer (`cairn admin key
//! create`, `cairn up`) seals it with the cluster key (AES-256-GCM-SIV, a
//! fresh 96-bit nonce, the access key id as associated data so a sealed
//! secret cannot be moved to another key) and only gateways, which hold
//! the cluster key, unseal it to check signatures. Raft's log, the state
//! machine and its snapshots see only sealed bytes.

use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// An AWS account: a 12-digit id and a name unique in the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub version: u16,
    pub id: String,
    pub name: String,
    pub created_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyState {
    Active,
    Revoked,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Revoked => "revoked",
        }
    }
}

/// An access key pair of an account; the secret sealed with the cluster key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKey {
    pub version: u16,
    /// `AKIA` and 16 characters, as AWS issues them.
    pub id: String,
    pub account_id: String,
    pub sealed_secret: Vec<u8>,
    pub state: KeyState,
    pub created_ms: u64,
    pub revoked_ms: Option<u64>,
}

/// A secret the cluster keeps in the metadata group, set once by whoever
/// first needs it (e.g. the key of EBS direct block tokens): every gateway
/// reads the same value, and nothing derives it from configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSecret {
    pub version: u16,
    pub name: String,
    pub value: Vec<u8>,
}

/// A fresh 12-digit account id (no leading zero).
pub fn new_account_id() -> String {
    let mut rng = rand::thread_rng();
    format!("{}{:011}", rng.gen_range(1..=9), rng.gen_range(0..100_000_000_000u64))
}

/// True for an id of 12 digits.
pub fn valid_account_id(id: &str) -> bool {
    id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit())
}

/// Names as IAM allows account aliases: 3 to 63 of `a-z0-9-`, not starting
/// or ending with `-`.
pub fn valid_account_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

const KEY_ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn random_string(alphabet: &[u8], len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len).map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char).collect()
}

/// A fresh access key id: `AKIA` and 16 base-32 characters.
pub fn new_access_key_id() -> String {
    format!("AKIA{}", random_string(KEY_ID_ALPHABET, 16))
}

/// A fresh secret access key: 40 base-64 characters (240 bits).
pub fn new_secret_key() -> String {
    random_string(SECRET_ALPHABET, 40)
}

/// The cluster's key for sealing secrets (256 bits).
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey([u8; 32]);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("the cluster key must be 64 hex digits")]
    BadClusterKey,
    #[error("a sealed secret does not open with this cluster key")]
    Unseal,
}

const NONCE_LEN: usize = 12;

impl ClusterKey {
    pub fn generate() -> Self {
        ClusterKey(rand::thread_rng().gen())
    }

    /// From its hex form (surrounding whitespace ignored, as in a key file).
    pub fn from_hex(s: &str) -> Result<Self, SealError> {
        let bytes = hex::decode(s.trim()).map_err(|_| SealError::BadClusterKey)?;
        Ok(ClusterKey(bytes.try_into().map_err(|_| SealError::BadClusterKey)?))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    fn cipher(&self) -> Aes256GcmSiv {
        Aes256GcmSiv::new((&self.0).into())
    }

    /// `secret` sealed for the access key `key_id`: nonce, then ciphertext.
    pub fn seal(&self, key_id: &str, secret: &str) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = rand::thread_rng().gen();
        let payload = Payload { msg: secret.as_bytes(), aad: key_id.as_bytes() };
        // Encrypting into a Vec cannot fail for inputs this small.
        let sealed = self.cipher().encrypt(Nonce::from_slice(&nonce), payload).unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend(sealed);
        out
    }

    /// The secret of `key_id` from its sealed form.
    pub fn unseal(&self, key_id: &str, sealed: &[u8]) -> Result<String, SealError> {
        if sealed.len() < NONCE_LEN {
            return Err(SealError::Unseal);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let payload = Payload { msg: body, aad: key_id.as_bytes() };
        let plain = self
            .cipher()
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| SealError::Unseal)?;
        String::from_utf8(plain).map_err(|_| SealError::Unseal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_names_and_secrets() {
        for _ in 0..100 {
            let id = new_account_id();
            assert!(valid_account_id(&id) && !id.starts_with('0'), "{id}");
            let k = new_access_key_id();
            assert!(k.len() == 20 && k.starts_with("AKIA"), "{k}");
            assert_eq!(new_secret_key().len(), 40);
        }
        assert_ne!(new_secret_key(), new_secret_key());
        assert!(valid_account_name("team-a") && valid_account_name("abc"));
        for bad in ["ab", "-ab", "ab-", "Team", "a b", &"a".repeat(64)] {
            assert!(!valid_account_name(bad), "{bad}");
        }
        assert!(!valid_account_id("12345678901") && !valid_account_id("12345678901a"));
    }

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_id() {
        let k = ClusterKey::generate();
        let sealed = k.seal("AKIAEXAMPLE", "s3cret");
        assert!(!sealed.windows(6).any(|w| w == b"s3cret"), "stored in clear");
        assert_eq!(k.unseal("AKIAEXAMPLE", &sealed).as_deref(), Ok("s3cret"));
        assert_eq!(k.unseal("AKIAOTHER", &sealed), Err(SealError::Unseal));
        assert_eq!(ClusterKey::generate().unseal("AKIAEXAMPLE", &sealed), Err(SealError::Unseal));
        let mut flipped = sealed.clone();
        flipped[NONCE_LEN] ^= 1;
        assert_eq!(k.unseal("AKIAEXAMPLE", &flipped), Err(SealError::Unseal));
        assert_eq!(k.unseal("AKIAEXAMPLE", &sealed[..4]), Err(SealError::Unseal));
        assert_ne!(k.seal("AKIAEXAMPLE", "s3cret"), sealed, "a fresh nonce each time");
        let again = ClusterKey::from_hex(&format!(" {}\n", k.to_hex())).expect("hex");
        assert_eq!(again, k);
        assert_eq!(ClusterKey::from_hex("abcd"), Err(SealError::BadClusterKey));
    }
}
