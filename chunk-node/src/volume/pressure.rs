//! Random reads of a hydrating volume come first: while they have to fetch,
//! the hydrator keeps its rounds small.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A read that must fetch a block more than this many blocks from where
/// the hydrator works (64 MiB) is a random one: the hydrator then keeps its
/// rounds small for [`YIELD_MS`]. Reads that follow or lead the hydrator
/// (a sequential read-back) leave it at full speed: its rounds are their
/// read-ahead.
pub const NEAR_BLOCKS: u64 = 128;
/// How long the hydrator yields after a random read that had to fetch.
pub const YIELD_MS: u64 = 200;
/// The hydrator's chunk fetches in flight while it yields (16 otherwise):
/// the round it is in when a random read comes slows down at once.
pub const YIELDING_FETCHES: usize = 2;
/// How often a hydrator fetch waiting for a slot looks again.
const SLOT_POLL: Duration = Duration::from_millis(2);

/// When random reads last had to fetch a block: while they do, the
/// hydrator keeps its rounds small, so that such a read waits behind a few
/// of the hydrator's fetches and writes rather than 16 fetches and a 32 MiB
/// round.
pub(crate) struct ReadPressure {
    born: Instant,
    /// Until when (ms since `born`) the hydrator yields.
    until_ms: AtomicU64,
    /// The hydrator's fetches holding a [`Slot`].
    fetching: AtomicUsize,
}

/// A hydrator fetch under way; frees its place when dropped.
pub(crate) struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ReadPressure {
    pub(crate) fn new() -> Self {
        ReadPressure {
            born: Instant::now(),
            until_ms: AtomicU64::new(0),
            fetching: AtomicUsize::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    /// A read must fetch block `first` while the hydrator works at `hint`.
    pub(crate) fn note(&self, first: u64, hint: u64) {
        self.note_at(first, hint, self.now_ms());
    }

    /// Whether the hydrator should yield now.
    pub(crate) fn active(&self) -> bool {
        self.active_at(self.now_ms())
    }

    /// Waits until the hydrator may start one more fetch: at once unless it
    /// yields and [`YIELDING_FETCHES`] of its fetches are under way. (Racing
    /// callers may pass together: a bound for a heuristic, not a limit.)
    pub(crate) async fn slot(&self) -> Slot<'_> {
        while self.active() && self.fetching.load(Ordering::Relaxed) >= YIELDING_FETCHES {
            tokio::time::sleep(SLOT_POLL).await;
        }
        self.fetching.fetch_add(1, Ordering::Relaxed);
        Slot(&self.fetching)
    }

    fn note_at(&self, first: u64, hint: u64, now_ms: u64) {
        if first.abs_diff(hint) > NEAR_BLOCKS {
            self.until_ms.fetch_max(now_ms + YIELD_MS, Ordering::Relaxed);
        }
    }

    fn active_at(&self, now_ms: u64) -> bool {
        now_ms < self.until_ms.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_far_from_the_hydrator_make_it_yield_for_a_while() {
        let p = ReadPressure::new();
        assert!(!p.active_at(0));
        // Following or leading the hydrator (a sequential read-back): no.
        p.note_at(1000, 1000 - NEAR_BLOCKS, 10);
        p.note_at(1000, 1000 + NEAR_BLOCKS, 10);
        assert!(!p.active_at(10));
        // Far from it, either side: for YIELD_MS from the last such read.
        p.note_at(5000, 1000, 10);
        p.note_at(0, 1000, 50);
        assert!(p.active_at(50 + YIELD_MS - 1));
        assert!(!p.active_at(50 + YIELD_MS));
    }

    #[tokio::test]
    async fn slots_are_counted_while_held() {
        let p = ReadPressure::new();
        let a = p.slot().await;
        let b = p.slot().await;
        // Not yielding: a third goes too.
        let c = p.slot().await;
        assert_eq!(p.fetching.load(Ordering::Relaxed), 3);
        drop((a, b, c));
        assert_eq!(p.fetching.load(Ordering::Relaxed), 0);
    }
}
