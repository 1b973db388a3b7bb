//! Block tokens and page tokens: opaque to clients, tamper-proof, expiring.
//!
//! A block token names one block of one snapshot and carries the block's
//! chunk id, so GetSnapshotBlock needs no manifest read: `version | expiry
//! (unix seconds) | chunk id | MAC`, Base64. A page token carries where the
//! next page starts: `version | kind | expiry | next block index | MAC`. The
//! MAC (BLAKE3 in keyed mode, cut to 16 bytes) covers every field plus the
//! snapshot id(s) the token belongs to, so a token of another snapshot, block
//! or operation, or an edited one, is refused.
//!
//! The key is a random secret kept in the metadata group (the cluster secret
//! `ebs-tokens`, set by the first gateway that needs it, see
//! [`super::state::Ebs::tokens`]), so every gateway of a region issues and
//! accepts the same tokens, and nobody who only knows the configuration
//! can forge one.

use super::error::{EbsError, Invalid};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use cairn_core::ChunkId;

/// Block tokens live 7 days, as AWS's do.
pub const BLOCK_TOKEN_SECS: u64 = 7 * 24 * 3600;
/// Page tokens live 60 minutes, as AWS's do.
pub const PAGE_TOKEN_SECS: u64 = 60 * 60;
const VERSION: u8 = 1;
const MAC_LEN: usize = 16;
const BLOCK_TOKEN_LEN: usize = 1 + 8 + 32 + MAC_LEN;
const PAGE_TOKEN_LEN: usize = 1 + 1 + 8 + 8 + MAC_LEN;

/// Which listing a page token continues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageKind {
    SnapshotBlocks = 1,
    ChangedBlocks = 2,
}

/// Issues and checks tokens.
#[derive(Clone)]
pub struct Tokens {
    key: [u8; 32],
}

impl Tokens {
    pub fn new(secret_material: &[u8]) -> Tokens {
        Tokens { key: blake3::derive_key("cairn 2026 ebs direct api tokens v1", secret_material) }
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; MAC_LEN] {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        for p in parts {
            // Length-prefixed, so field boundaries cannot be shifted.
            h.update(&(p.len() as u64).to_be_bytes());
            h.update(p);
        }
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&h.finalize().as_bytes()[..MAC_LEN]);
        out
    }

    /// A token for block `index` of `snapshot`, holding `chunk`, valid until
    /// `expiry` (unix seconds).
    pub fn block(&self, snapshot: &str, index: u64, chunk: &ChunkId, expiry: u64) -> String {
        let mac = self.mac(&[
            b"block",
            snapshot.as_bytes(),
            &index.to_be_bytes(),
            &expiry.to_be_bytes(),
            &chunk.0,
        ]);
        let mut b = Vec::with_capacity(BLOCK_TOKEN_LEN);
        b.push(VERSION);
        b.extend(expiry.to_be_bytes());
        b.extend(chunk.0);
        b.extend(mac);
        B64.encode(b)
    }

    /// The chunk of a block token issued for `snapshot` and `index`, if the
    /// token is genuine and not expired at `now` (unix seconds).
    pub fn check_block(
        &self,
        token: &str,
        snapshot: &str,
        index: u64,
        now: u64,
    ) -> Result<ChunkId, EbsError> {
        let bad = || EbsError::invalid(Invalid::BlockToken, "The block token is not valid.");
        let b = B64.decode(token).map_err(|_| bad())?;
        if b.len() != BLOCK_TOKEN_LEN || b[0] != VERSION {
            return Err(bad());
        }
        let expiry = u64::from_be_bytes(b[1..9].try_into().map_err(|_| bad())?);
        let chunk = ChunkId::from_slice(&b[9..41]).ok_or_else(bad)?;
        let mac = self.mac(&[
            b"block",
            snapshot.as_bytes(),
            &index.to_be_bytes(),
            &expiry.to_be_bytes(),
            &chunk.0,
        ]);
        if mac[..] != b[41..] {
            return Err(bad());
        }
        if now >= expiry {
            return Err(EbsError::invalid(Invalid::BlockToken, "The block token has expired."));
        }
        Ok(chunk)
    }

    /// A token continuing a listing of `snapshots` at block `next`.
    pub fn page(&self, kind: PageKind, snapshots: &str, next: u64, expiry: u64) -> String {
        let k = [kind as u8];
        let mac = self.mac(&[
            b"page",
            &k,
            snapshots.as_bytes(),
            &next.to_be_bytes(),
            &expiry.to_be_bytes(),
        ]);
        let mut b = Vec::with_capacity(PAGE_TOKEN_LEN);
        b.push(VERSION);
        b.push(kind as u8);
        b.extend(expiry.to_be_bytes());
        b.extend(next.to_be_bytes());
        b.extend(mac);
        B64.encode(b)
    }

    /// Where the listing a page token continues starts.
    pub fn check_page(
        &self,
        token: &str,
        kind: PageKind,
        snapshots: &str,
        now: u64,
    ) -> Result<u64, EbsError> {
        let bad = || EbsError::invalid(Invalid::PageToken, "The page token is not valid.");
        let b = B64.decode(token).map_err(|_| bad())?;
        if b.len() != PAGE_TOKEN_LEN || b[0] != VERSION || b[1] != kind as u8 {
            return Err(bad());
        }
        let expiry = u64::from_be_bytes(b[2..10].try_into().map_err(|_| bad())?);
        let next = u64::from_be_bytes(b[10..18].try_into().map_err(|_| bad())?);
        let k = [kind as u8];
        let mac = self.mac(&[
            b"page",
            &k,
            snapshots.as_bytes(),
            &next.to_be_bytes(),
            &expiry.to_be_bytes(),
        ]);
        if mac[..] != b[18..] {
            return Err(bad());
        }
        if now >= expiry {
            return Err(EbsError::invalid(Invalid::PageToken, "The page token has expired."));
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_wire(t: &str) -> bool {
        t.len() <= 256 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
    }

    #[test]
    fn block_tokens() {
        let t = Tokens::new(b"k");
        let c = ChunkId::of(b"data");
        let tok = t.block("snap-1", 7, &c, 1000);
        assert!(valid_wire(&tok), "{tok}");
        assert_eq!(t.check_block(&tok, "snap-1", 7, 999).unwrap(), c);
        let reason = |e: EbsError| e.reason();
        assert_eq!(
            reason(t.check_block(&tok, "snap-1", 7, 1000).unwrap_err()),
            Some("INVALID_BLOCK_TOKEN")
        );
        assert!(t.check_block(&tok, "snap-1", 8, 0).is_err(), "other block");
        assert!(t.check_block(&tok, "snap-2", 7, 0).is_err(), "other snapshot");
        assert!(Tokens::new(b"other").check_block(&tok, "snap-1", 7, 0).is_err(), "other key");
        assert!(t.check_block("!!", "snap-1", 7, 0).is_err());
        assert!(t.check_block("", "snap-1", 7, 0).is_err());
        // Any edited byte is refused.
        let raw = B64.decode(&tok).unwrap();
        for i in 0..raw.len() {
            let mut r = raw.clone();
            r[i] ^= 1;
            assert!(t.check_block(&B64.encode(r), "snap-1", 7, 0).is_err(), "byte {i}");
        }
    }

    #[test]
    fn page_tokens() {
        let t = Tokens::new(b"k");
        let tok = t.page(PageKind::ChangedBlocks, "snap-a/snap-b", 4096, 50);
        assert!(valid_wire(&tok));
        assert_eq!(t.check_page(&tok, PageKind::ChangedBlocks, "snap-a/snap-b", 49).unwrap(), 4096);
        assert!(
            t.check_page(&tok, PageKind::ChangedBlocks, "snap-a/snap-b", 50).is_err(),
            "expired"
        );
        assert!(t.check_page(&tok, PageKind::SnapshotBlocks, "snap-a/snap-b", 0).is_err(), "kind");
        assert!(t.check_page(&tok, PageKind::ChangedBlocks, "snap-a/snap-c", 0).is_err(), "ids");
        let e = t.check_page("bm9wZQ==", PageKind::ChangedBlocks, "x", 0).unwrap_err();
        assert_eq!(e.reason(), Some("INVALID_PAGE_TOKEN"));
    }
}
