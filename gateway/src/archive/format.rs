//! How an archive lies in the object store, under `snapshots/{id}/`:
//!
//! - `pack-NNNNN`: up to [`PACK_BYTES`] of objects (data chunks, manifest
//!   pages, the root) laid end to end, in manifest order, each once;
//! - `index`: a format version, the snapshot's manifest root, the packs
//!   (key and length) and every object's pack, offset, length and id.
//!
//! The index is written last, so an archive without one is incomplete.
//! Every object is named by its BLAKE3 id, so whatever reads a pack checks
//! each object against its id. The layout is a pure function of the
//! manifest, so an archival written twice (a retry, or two gateways)
//! writes the same objects.

use cairn_core::ChunkId;
use serde::{Deserialize, Serialize};

/// Bytes per pack: large objects (S3 charges per request and object
/// stores favour them), small enough to hold one in memory while writing.
pub const PACK_BYTES: usize = 32 << 20;
const FORMAT: u16 = 1;

/// The prefix of snapshot `id`'s archive.
pub fn prefix(id: &str) -> String {
    format!("snapshots/{id}")
}

pub fn pack_key(prefix: &str, n: usize) -> String {
    format!("{prefix}/pack-{n:05}")
}

pub fn index_key(prefix: &str) -> String {
    format!("{prefix}/index")
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: ChunkId,
    pub pack: u32,
    pub offset: u64,
    pub len: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    pub format: u16,
    pub root: ChunkId,
    /// Each pack's length, in order (`pack-00000` first).
    pub packs: Vec<u64>,
    pub entries: Vec<Entry>,
}

impl Index {
    pub fn new(root: ChunkId) -> Index {
        Index { format: FORMAT, root, packs: Vec::new(), entries: Vec::new() }
    }

    pub fn encode(&self) -> Vec<u8> {
        bincode::serialize(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Index, String> {
        let index: Index =
            bincode::deserialize(bytes).map_err(|e| format!("archive index: {e}"))?;
        if index.format != FORMAT {
            return Err(format!("archive index format {} is not readable", index.format));
        }
        if !index.entries.is_sorted_by_key(|e| e.pack) {
            return Err("archive index: entries are not in pack order".into());
        }
        Ok(index)
    }

    /// The entries of pack `n`, in order. Entries are in pack order (packs
    /// are written one after another; `decode` checks it), so this is two
    /// binary searches, not a walk of every entry per pack.
    pub fn in_pack(&self, n: usize) -> impl Iterator<Item = &Entry> {
        let from = self.entries.partition_point(|e| (e.pack as usize) < n);
        let to = self.entries.partition_point(|e| (e.pack as usize) <= n);
        self.entries[from..to].iter()
    }
}

/// Checks pack `n` as read back against the index: its length, and every
/// object against its id.
pub fn verify_pack(index: &Index, n: usize, bytes: &[u8]) -> Result<(), String> {
    if index.packs.get(n).copied() != Some(bytes.len() as u64) {
        return Err(format!("pack {n} holds {} bytes, not {:?}", bytes.len(), index.packs.get(n)));
    }
    for e in index.in_pack(n) {
        let end = e.offset as usize + e.len as usize;
        let Some(obj) = bytes.get(e.offset as usize..end) else {
            return Err(format!("pack {n}: object {} runs past its end", e.id));
        };
        if ChunkId::of(obj) != e.id {
            return Err(format!("pack {n}: object {} is corrupt", e.id));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_round_trips_and_a_pack_is_checked_object_by_object() {
        let (a, b) = (b"first".to_vec(), b"second object".to_vec());
        let mut index = Index::new(ChunkId::of(b"root"));
        let mut pack = a.clone();
        pack.extend(&b);
        index.entries.push(Entry { id: ChunkId::of(&a), pack: 0, offset: 0, len: 5 });
        index.entries.push(Entry { id: ChunkId::of(&b), pack: 0, offset: 5, len: 13 });
        index.packs.push(pack.len() as u64);
        let back = Index::decode(&index.encode()).unwrap();
        assert_eq!(back, index);
        verify_pack(&back, 0, &pack).unwrap();
        let mut bad = pack.clone();
        bad[7] ^= 1;
        assert!(verify_pack(&back, 0, &bad).unwrap_err().contains("corrupt"));
        assert!(verify_pack(&back, 0, &pack[..10]).is_err());
        assert!(Index::decode(b"junk").is_err());
    }

    #[test]
    fn entries_are_found_by_pack() {
        let mut index = Index::new(ChunkId::of(b"root"));
        for (k, pack) in [0u32, 0, 2, 2, 2, 3].into_iter().enumerate() {
            let id = ChunkId::of(&[k as u8]);
            index.entries.push(Entry { id, pack, offset: k as u64, len: 1 });
        }
        let offsets = |n| index.in_pack(n).map(|e| e.offset).collect::<Vec<_>>();
        assert_eq!(offsets(0), vec![0, 1]);
        assert!(offsets(1).is_empty());
        assert_eq!(offsets(2), vec![2, 3, 4]);
        assert_eq!(offsets(3), vec![5]);
        assert!(offsets(4).is_empty());
        index.entries.swap(0, 5);
        assert!(Index::decode(&index.encode()).unwrap_err().contains("pack order"));
    }
}
