//! Chunks a restore needs more than once, kept between fetches.
//!
//! A volume often holds the same block many times (zeroed file-system
//! structures, copies of one file). The manifest says how often each chunk
//! is used, so a chunk fetched for one block is kept until its other blocks
//! have taken it, within a byte budget; a chunk is never fetched twice while
//! it fits.

use bytes::Bytes;
use cairn_core::ChunkId;
use std::collections::HashMap;
use std::sync::Mutex;

/// Bytes kept at most by default (`restore_cache_bytes`; the pool of a
/// volume's repeated blocks is small).
pub const DEFAULT_BUDGET_BYTES: usize = 64 << 20;

pub struct ChunkCache {
    /// Blocks still to be filled per chunk used by more than one of them.
    uses: HashMap<ChunkId, u64>,
    held: Mutex<Held>,
    /// Bytes kept at most.
    budget: usize,
}

#[derive(Default)]
struct Held {
    chunks: HashMap<ChunkId, (Bytes, u64)>,
    bytes: usize,
}

impl ChunkCache {
    /// A cache of at most `budget` bytes for blocks whose chunks are `ids`
    /// (one per block to fill).
    pub fn new<'a>(ids: impl IntoIterator<Item = &'a ChunkId>, budget: usize) -> ChunkCache {
        let mut uses: HashMap<ChunkId, u64> = HashMap::new();
        for id in ids {
            *uses.entry(*id).or_default() += 1;
        }
        uses.retain(|_, n| *n > 1);
        ChunkCache { uses, held: Mutex::new(Held::default()), budget }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The bytes of `id` for `blocks` more blocks, when held; forgets them
    /// once no block is left to take them.
    pub fn take(&self, id: &ChunkId, blocks: u64) -> Option<Bytes> {
        let mut held = self.held();
        let (data, left) = held.chunks.get_mut(id)?;
        let data = data.clone();
        *left = left.saturating_sub(blocks);
        if *left == 0 {
            held.chunks.remove(id);
            held.bytes -= data.len();
        }
        Some(data)
    }

    /// Offers `data`, just fetched for `blocks` blocks: kept when other
    /// blocks will need it and it fits the budget.
    pub fn offer(&self, id: ChunkId, data: &Bytes, blocks: u64) {
        let left = self.uses.get(&id).copied().unwrap_or(0).saturating_sub(blocks);
        let mut held = self.held();
        if left == 0 || held.chunks.contains_key(&id) || held.bytes + data.len() > self.budget {
            return;
        }
        held.bytes += data.len();
        held.chunks.insert(id, (data.clone(), left));
    }

    /// Drops everything held (the restore is done).
    pub fn clear(&self) {
        *self.held() = Held::default();
    }

    /// Bytes held now.
    #[cfg(test)]
    fn held_bytes(&self) -> usize {
        self.held().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ChunkId {
        ChunkId::of(&[n])
    }

    #[test]
    fn keeps_a_chunk_until_every_block_took_it() {
        let ids = [id(1), id(1), id(1), id(2)];
        let c = ChunkCache::new(&ids, DEFAULT_BUDGET_BYTES);
        let data = Bytes::from(vec![7u8; 100]);
        c.offer(id(1), &data, 1);
        assert_eq!(c.take(&id(1), 1).as_deref(), Some(&data[..]));
        assert_eq!(c.held_bytes(), 100);
        assert!(c.take(&id(1), 1).is_some());
        assert_eq!(c.held_bytes(), 0, "no block is left to need it");
        assert!(c.take(&id(1), 1).is_none());
    }

    #[test]
    fn single_use_chunks_and_used_up_offers_are_not_kept() {
        let ids = [id(1), id(2), id(2)];
        let c = ChunkCache::new(&ids, DEFAULT_BUDGET_BYTES);
        let data = Bytes::from(vec![1u8; 10]);
        c.offer(id(1), &data, 1);
        c.offer(id(2), &data, 2);
        assert_eq!(c.held_bytes(), 0);
        assert!(c.take(&id(1), 1).is_none());
    }

    #[test]
    fn stays_within_its_budget() {
        let ids: Vec<ChunkId> = (0..=255u8).flat_map(|n| [id(n), id(n)]).collect();
        for budget in [DEFAULT_BUDGET_BYTES, 3 << 20] {
            let c = ChunkCache::new(&ids, budget);
            let data = Bytes::from(vec![0u8; 1 << 20]);
            for n in 0..=255u8 {
                c.offer(id(n), &data, 1);
            }
            assert_eq!(c.held_bytes(), budget);
        }
    }
}
