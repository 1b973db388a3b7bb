//! Manifests: a snapshot's block map (block index -> chunk id), cut into
//! content-addressed pages under a root. Zero blocks have no entry; a page
//! with no entries is not written at all.
//!
//! Pages and roots are stored like chunks, named by the BLAKE3 of their
//! encoding, so a page shared by two snapshots is stored once.

use crate::block::{ChunkId, BLOCK_SIZE};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const MANIFEST_VERSION: u16 = 1;

/// Blocks covered by one page: 4096 x 512 KiB = 2 GiB of volume, ~140 KiB of page.
pub const PAGE_BLOCKS: u64 = 4096;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRoot {
    pub volume_size_bytes: u64,
    pub block_size: u32,
    /// (page number, page id), ascending; absent pages hold only zero blocks.
    pub pages: Vec<(u64, ChunkId)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestPage {
    pub page: u64,
    /// (block index, chunk id), ascending; absent blocks are zero.
    pub entries: Vec<(u64, ChunkId)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest object is corrupt: {0}")]
    Corrupt(String),
    #[error("manifest format version {0} is not readable by this build")]
    Version(u16),
}

fn encode<T: Serialize>(kind: u8, v: &T) -> Vec<u8> {
    let mut out = MANIFEST_VERSION.to_be_bytes().to_vec();
    out.push(kind);
    out.extend(bincode::serialize(v).unwrap_or_default());
    out
}

fn decode<T: for<'a> Deserialize<'a>>(kind: u8, b: &[u8]) -> Result<T, ManifestError> {
    if b.len() < 3 {
        return Err(ManifestError::Corrupt("too short".into()));
    }
    let version = u16::from_be_bytes([b[0], b[1]]);
    if version != MANIFEST_VERSION {
        return Err(ManifestError::Version(version));
    }
    if b[2] != kind {
        return Err(ManifestError::Corrupt(format!("expected kind {kind}, found {}", b[2])));
    }
    bincode::deserialize(&b[3..]).map_err(|e| ManifestError::Corrupt(e.to_string()))
}

impl ManifestRoot {
    pub fn encode(&self) -> Vec<u8> {
        encode(b'R', self)
    }
    pub fn decode(b: &[u8]) -> Result<Self, ManifestError> {
        decode(b'R', b)
    }
    pub fn blocks(&self) -> u64 {
        self.volume_size_bytes.div_ceil(self.block_size as u64)
    }
}

impl ManifestPage {
    pub fn encode(&self) -> Vec<u8> {
        encode(b'P', self)
    }
    pub fn decode(b: &[u8]) -> Result<Self, ManifestError> {
        decode(b'P', b)
    }
}

/// Collects block entries in any order and cuts them into pages.
#[derive(Debug, Default)]
pub struct ManifestBuilder {
    volume_size_bytes: u64,
    entries: BTreeMap<u64, ChunkId>,
}

/// A finished manifest: the root and every page, encoded, with their ids.
pub struct BuiltManifest {
    pub root_id: ChunkId,
    pub root: Vec<u8>,
    pub pages: Vec<(ChunkId, Vec<u8>)>,
}

impl ManifestBuilder {
    pub fn new(volume_size_bytes: u64) -> Self {
        ManifestBuilder { volume_size_bytes, entries: BTreeMap::new() }
    }

    /// Records that block `index` holds `chunk`; `None` marks it zero.
    pub fn set(&mut self, index: u64, chunk: Option<ChunkId>) {
        match chunk {
            Some(c) => self.entries.insert(index, c),
            None => self.entries.remove(&index),
        };
    }

    pub fn finish(self) -> BuiltManifest {
        let mut pages: BTreeMap<u64, Vec<(u64, ChunkId)>> = BTreeMap::new();
        for (idx, c) in self.entries {
            pages.entry(idx / PAGE_BLOCKS).or_default().push((idx, c));
        }
        let mut encoded = Vec::new();
        let mut root = ManifestRoot {
            volume_size_bytes: self.volume_size_bytes,
            block_size: BLOCK_SIZE as u32,
            pages: Vec::new(),
        };
        for (page, entries) in pages {
            let bytes = ManifestPage { page, entries }.encode();
            let id = ChunkId::of(&bytes);
            root.pages.push((page, id));
            encoded.push((id, bytes));
        }
        let root_bytes = root.encode();
        BuiltManifest { root_id: ChunkId::of(&root_bytes), root: root_bytes, pages: encoded }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_and_read_back() {
        let mut b = ManifestBuilder::new(10 * PAGE_BLOCKS * BLOCK_SIZE as u64);
        let a = ChunkId::of(b"a");
        b.set(3, Some(a));
        b.set(PAGE_BLOCKS * 5 + 1, Some(a));
        b.set(7, Some(a));
        b.set(7, None);
        let m = b.finish();
        let root = ManifestRoot::decode(&m.root).expect("root");
        assert_eq!(root.pages.len(), 2);
        assert_eq!(root.blocks(), 10 * PAGE_BLOCKS);
        let p = ManifestPage::decode(&m.pages[0].1).expect("page");
        assert_eq!(p.entries, vec![(3, a)]);
        assert_eq!(ChunkId::of(&m.pages[1].1), m.pages[1].0);
        assert!(ManifestPage::decode(&m.root).is_err(), "a root is not a page");
    }

    #[test]
    fn same_content_same_ids() {
        let mk = || {
            let mut b = ManifestBuilder::new(1 << 30);
            b.set(1, Some(ChunkId::of(b"x")));
            b.finish().root_id
        };
        assert_eq!(mk(), mk());
    }
}
