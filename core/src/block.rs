//! Blocks and chunk ids: the block size, the id a block is stored under,
//! and which blocks are zero (never stored).

use serde::{Deserialize, Serialize};
use std::fmt;

/// The EBS block: 512 KiB. Block index = byte offset / BLOCK_SIZE.
pub const BLOCK_SIZE: usize = 524_288;

/// BLAKE3 of a block's (or a manifest page's) bytes: the name it is stored under.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    /// The id of `data`: its BLAKE3 hash.
    pub fn of(data: &[u8]) -> Self {
        ChunkId(*blake3::hash(data).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        let bytes = hex::decode(s).ok()?;
        Some(ChunkId(bytes.try_into().ok()?))
    }

    pub fn from_slice(b: &[u8]) -> Option<Self> {
        Some(ChunkId(b.try_into().ok()?))
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// True when every byte is zero. Zero blocks are never stored or sent.
pub fn is_zero(data: &[u8]) -> bool {
    let mut words = data.chunks_exact(64);
    let whole = words.by_ref().all(|w| {
        // OR-folding a fixed-size window lets the compiler vectorise it.
        w.chunks_exact(8)
            .fold(0u64, |acc, c| acc | u64::from_ne_bytes(c.try_into().unwrap_or([1; 8])))
            == 0
    });
    whole && words.remainder().iter().all(|b| *b == 0)
}

/// The id a block's content is stored under, or `None` for a zero block.
pub fn chunk_of(data: &[u8]) -> Option<ChunkId> {
    (!is_zero(data)).then(|| ChunkId::of(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection() {
        let mut b = vec![0u8; BLOCK_SIZE];
        assert!(is_zero(&b));
        b[BLOCK_SIZE - 1] = 1;
        assert!(!is_zero(&b));
        b[BLOCK_SIZE - 1] = 0;
        b[3] = 7;
        assert!(!is_zero(&b));
        assert!(is_zero(&[0u8; 13]));
        assert!(!is_zero(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]));
    }

    #[test]
    fn zero_blocks_have_no_chunk() {
        assert_eq!(chunk_of(&vec![0u8; BLOCK_SIZE]), None);
        assert_eq!(chunk_of(b"hello"), Some(ChunkId::of(b"hello")));
    }

    #[test]
    fn chunk_id_hex_roundtrip() {
        let id = ChunkId::of(b"hello");
        assert_eq!(ChunkId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(ChunkId::from_hex("zz"), None);
    }
}
