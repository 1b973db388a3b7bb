//! Block bookkeeping shared by the volume host: sets of block indices (a
//! bitmap that persists compactly) and the striped per-block locks that keep
//! a block from being half old, half new while a freeze, a copy or a
//! hydration looks at it.

use cairn_core::BLOCK_SIZE;
use serde::{Deserialize, Serialize};
use std::sync::{Mutex, MutexGuard};

/// Block index of byte `offset`.
pub fn block_of(offset: u64) -> u64 {
    offset / BLOCK_SIZE as u64
}

/// Blocks in a volume of `size` bytes.
pub fn blocks_in(size: u64) -> u64 {
    size.div_ceil(BLOCK_SIZE as u64)
}

/// `[start, end)` byte range of block `idx` in a volume of `size` bytes.
pub fn block_range(idx: u64, size: u64) -> (u64, u64) {
    let start = idx * BLOCK_SIZE as u64;
    (start, (start + BLOCK_SIZE as u64).min(size))
}

/// A set of block indices below `len`, as a bitmap.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockSet {
    len: u64,
    words: Vec<u64>,
}

impl BlockSet {
    pub fn new(len: u64) -> Self {
        BlockSet { len, words: vec![0; len.div_ceil(64) as usize] }
    }

    pub fn full(len: u64) -> Self {
        let mut s = BlockSet::new(len);
        for i in 0..len {
            s.insert(i);
        }
        s
    }

    pub fn insert(&mut self, i: u64) {
        if i < self.len {
            self.words[(i / 64) as usize] |= 1 << (i % 64);
        }
    }

    pub fn contains(&self, i: u64) -> bool {
        i < self.len && self.words[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// The bitmap: block `i` is bit `i % 64` of word `i / 64`.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Members below `end`.
    pub fn count_below(&self, end: u64) -> u64 {
        self.iter().take_while(|i| *i < end).count() as u64
    }

    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.iter_from(0)
    }

    /// Members from `start` on, ascending; empty words are skipped whole.
    pub fn iter_from(&self, start: u64) -> impl Iterator<Item = u64> + '_ {
        let first = (start / 64) as usize;
        let words = self.words.get(first..).unwrap_or_default();
        words
            .iter()
            .enumerate()
            .filter(|(_, bits)| **bits != 0)
            .flat_map(move |(w, bits)| {
                let (bits, base) = (*bits, (first + w) as u64 * 64);
                (0..64u64).filter(move |b| bits & (1 << b) != 0).map(move |b| base + b)
            })
            .filter(move |i| *i >= start)
    }
}

/// Lock stripes per volume; block `i` uses stripe `i % STRIPES`.
const STRIPES: usize = 1024;

/// Striped block locks. Whoever holds several takes them in ascending stripe
/// order ([`BlockLocks::lock`]), so lockers never deadlock.
pub struct BlockLocks {
    stripes: Vec<Mutex<()>>,
}

impl Default for BlockLocks {
    fn default() -> Self {
        BlockLocks { stripes: (0..STRIPES).map(|_| Mutex::new(())).collect() }
    }
}

impl BlockLocks {
    /// Locks every block of `blocks` (any order, duplicates allowed).
    pub fn lock(&self, blocks: impl IntoIterator<Item = u64>) -> Vec<MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> =
            blocks.into_iter().map(|b| (b % STRIPES as u64) as usize).collect();
        stripes.sort_unstable();
        stripes.dedup();
        // A panic while holding a stripe leaves no half-done state behind
        // that the next holder could misread (every step re-checks), so a
        // poisoned stripe is still usable.
        stripes
            .into_iter()
            .map(|s| self.stripes[s].lock().unwrap_or_else(|e| e.into_inner()))
            .collect()
    }

    /// Locks blocks `first..=last`.
    pub fn lock_range(&self, first: u64, last: u64) -> Vec<MutexGuard<'_, ()>> {
        if last.saturating_sub(first) >= STRIPES as u64 {
            return self.lock(0..STRIPES as u64);
        }
        self.lock(first..=last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_set_basics() {
        let mut s = BlockSet::new(130);
        for i in [0, 63, 64, 129, 500] {
            s.insert(i);
        }
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 63, 64, 129]);
        assert_eq!(s.count(), 4);
        assert_eq!(s.count_below(64), 2);
        assert!(s.contains(129) && !s.contains(1) && !s.contains(500));
        assert_eq!(BlockSet::full(70).count(), 70);
        assert_eq!(s.iter_from(63).collect::<Vec<_>>(), vec![63, 64, 129]);
        assert_eq!(s.iter_from(65).collect::<Vec<_>>(), vec![129]);
        assert_eq!(s.iter_from(130).count() + s.iter_from(1 << 40).count(), 0);
    }

    #[test]
    fn overlapping_lock_sets_do_not_deadlock() {
        let locks = std::sync::Arc::new(BlockLocks::default());
        let ts: Vec<_> = (0..4u64)
            .map(|t| {
                let l = locks.clone();
                std::thread::spawn(move || {
                    for k in 0..200u64 {
                        let _g = l.lock([k + t, 1023 - k, 2048 + k * t]);
                    }
                })
            })
            .collect();
        for t in ts {
            t.join().expect("thread");
        }
    }
}
