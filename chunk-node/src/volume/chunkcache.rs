//! Chunks a restore needs more than once, kept between fetches.
//!
//! A volume often holds the same block many times (zeroed file-system
//! structures, copies of one file). The manifest says how often each chunk
//! is used (counted in bounded memory, [`UseCount`]), so a chunk fetched for
//! one block is kept until its other blocks have taken it, within a byte
//! budget: a chunk whose uses were all counted is never fetched twice while
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

/// Counts how many blocks use each chunk, in bounded memory, to make a
/// [`ChunkCache`]: at most [`UseCount::tracked`] chunks are counted at once.
/// When the table fills up, the chunks seen once so far are forgotten (a
/// chunk seen again later then counts from one: repeats far apart are
/// missed, and such a chunk is fetched again, never served wrongly); when
/// it is still more than half full, no new chunk is counted from then on.
/// Exact while fewer chunks than that are in the volume (the cache holds
/// at most `budget` bytes of them anyway).
pub struct UseCount {
    uses: HashMap<ChunkId, u64>,
    tracked: usize,
    full: bool,
    budget: usize,
}

impl UseCount {
    /// Chunks counted at once for a cache of `budget` bytes: one per 512
    /// bytes of it (131,072 for 64 MiB, about 10 MiB of table), many more
    /// than the 512 KiB chunks the cache can hold.
    fn tracked(budget: usize) -> usize {
        budget / 512
    }

    pub fn new(budget: usize) -> UseCount {
        UseCount { uses: HashMap::new(), tracked: Self::tracked(budget), full: false, budget }
    }

    /// One more block uses `id`.
    pub fn add(&mut self, id: &ChunkId) {
        if let Some(n) = self.uses.get_mut(id) {
            *n += 1;
            return;
        }
        if self.full || self.tracked == 0 {
            return;
        }
        if self.uses.len() >= self.tracked {
            self.uses.retain(|_, n| *n > 1);
            self.full = self.uses.len() > self.tracked / 2;
            if self.full {
                return;
            }
        }
        self.uses.insert(*id, 1);
    }

    /// The cache, keeping the chunks used more than once.
    pub fn cache(mut self) -> ChunkCache {
        self.uses.retain(|_, n| *n > 1);
        self.uses.shrink_to_fit();
        ChunkCache { uses: self.uses, held: Mutex::new(Held::default()), budget: self.budget }
    }
}

#[derive(Default)]
struct Held {
    chunks: HashMap<ChunkId, (Bytes, u64)>,
    bytes: usize,
}

impl ChunkCache {
    /// A cache of at most `budget` bytes for blocks whose chunks are `ids`
    /// (one per block to fill).
    #[cfg(test)]
    pub fn new<'a>(ids: impl IntoIterator<Item = &'a ChunkId>, budget: usize) -> ChunkCache {
        let mut uses = UseCount::new(budget);
        for id in ids {
            uses.add(id);
        }
        uses.cache()
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
    fn counts_in_bounded_memory() {
        let budget = 4 << 10;
        let tracked = UseCount::tracked(budget);
        let mut uses = UseCount::new(budget);
        // Repeated chunks (more than half the table), then more single ones
        // than can be counted, then the repeated ones again and a new
        // repeat that no longer fits.
        let repeated: Vec<ChunkId> = (0..5u8).map(id).collect();
        let singles: Vec<ChunkId> =
            (0..tracked as u64 * 3).map(|n| ChunkId::of(&n.to_le_bytes())).collect();
        for c in repeated.iter().chain(&repeated).chain(&singles).chain(&repeated) {
            uses.add(c);
            assert!(uses.uses.len() <= tracked);
        }
        let late = ChunkId::of(b"late");
        uses.add(&late);
        uses.add(&late);
        let c = uses.cache();
        assert_eq!(c.uses.len(), 5, "the singles forgotten, the late repeat not counted");
        assert!(repeated.iter().all(|r| c.uses.get(r) == Some(&3)));
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
