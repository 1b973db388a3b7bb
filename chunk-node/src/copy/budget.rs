//! The memory the node's copies may hold (`copy_memory_bytes`): block data
//! read and not yet stored, and the encoding buffer of each `PutChunk` in
//! flight. The setting picks the pipeline's shape (the largest of
//! [`SHAPES`] one copy fits in) and is also a budget every batch takes its
//! share of before it is read and gives back once stored, so copies running
//! at once hold no more than the setting together.

use cairn_core::BLOCK_SIZE;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How one copy's pipeline is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Blocks per batch.
    pub batch_blocks: usize,
    /// Batches being stored at once (checkpointed in order).
    pub storing: usize,
    /// Batches read and waiting to be stored.
    pub read_ahead: usize,
    /// `PutChunk` calls in flight per batch, each encoding one block.
    pub puts: usize,
}

/// From the fastest measured down (ARCHITECTURE "Big volumes"). The first
/// is what copies ran with before the setting existed: 32 MiB batches, 96
/// puts each (more puts waiting at a store make its group commits larger:
/// this disk took ~260 MB/s in 8 MiB synced writes and ~320 MB/s in 32 MiB
/// ones; a 128-block batch did not help), three stored at once (a batch's
/// last puts used to leave the stores idle).
pub const SHAPES: [Shape; 5] = [
    Shape { batch_blocks: 64, storing: 3, read_ahead: 2, puts: 96 },
    Shape { batch_blocks: 64, storing: 2, read_ahead: 1, puts: 64 },
    Shape { batch_blocks: 64, storing: 1, read_ahead: 1, puts: 32 },
    Shape { batch_blocks: 32, storing: 1, read_ahead: 1, puts: 16 },
    Shape { batch_blocks: 8, storing: 1, read_ahead: 1, puts: 4 },
];

impl Shape {
    /// Bytes one batch may hold: its blocks, and an encoded block per put.
    pub fn batch_bytes(&self) -> u64 {
        ((self.batch_blocks + self.puts) * BLOCK_SIZE) as u64
    }

    /// Bytes one copy may hold: every batch in the pipeline (being read,
    /// read ahead, being stored) at its most.
    pub fn bytes(&self) -> u64 {
        (self.storing + self.read_ahead + 1) as u64 * self.batch_bytes()
    }
}

/// The default `copy_memory_bytes`: the fastest shape, 480 MiB.
pub const DEFAULT_COPY_MEMORY: u64 = 480 << 20;

/// The node's copy memory: the shape its copies run with and what is left.
#[derive(Clone, Debug)]
pub struct CopyMemory {
    shape: Shape,
    /// KiB not held by a batch.
    free: Arc<Semaphore>,
}

impl CopyMemory {
    /// A budget of `bytes`; below the smallest shape, that shape's bytes
    /// (a copy must be able to move).
    pub fn new(bytes: u64) -> CopyMemory {
        let smallest = SHAPES[SHAPES.len() - 1];
        let shape = SHAPES.iter().copied().find(|s| s.bytes() <= bytes).unwrap_or(smallest);
        let bytes = bytes.max(shape.bytes()).min(Semaphore::MAX_PERMITS as u64 >> 10 << 10);
        tracing::debug!(
            copy_memory_mib = bytes >> 20,
            batch_blocks = shape.batch_blocks,
            batches_stored_at_once = shape.storing,
            puts_in_flight = shape.puts,
            "copy memory"
        );
        CopyMemory { shape, free: Arc::new(Semaphore::new((bytes >> 10) as usize)) }
    }

    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// Waits until one batch's share is free and takes it; it is given back
    /// when the permit drops.
    pub async fn take_batch(&self) -> OwnedSemaphorePermit {
        let kib = (self.shape.batch_bytes() >> 10) as u32;
        self.free.clone().acquire_many_owned(kib).await.expect("the budget is never closed")
    }

    /// KiB free now.
    #[cfg(test)]
    fn free_kib(&self) -> usize {
        self.free.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_the_fastest_shape_and_smaller_budgets_pick_smaller_ones() {
        assert_eq!(SHAPES[0].bytes(), DEFAULT_COPY_MEMORY);
        assert_eq!(CopyMemory::new(DEFAULT_COPY_MEMORY).shape(), SHAPES[0]);
        // Every shape fits the budget of its own size and is smaller than
        // the one before it.
        for w in SHAPES.windows(2) {
            assert!(w[1].bytes() < w[0].bytes());
            assert_eq!(CopyMemory::new(w[1].bytes()).shape(), w[1]);
            assert_eq!(CopyMemory::new(w[0].bytes() - 1).shape(), w[1]);
        }
        let tiny = CopyMemory::new(1 << 20);
        assert_eq!(tiny.shape(), SHAPES[SHAPES.len() - 1]);
        assert_eq!(tiny.free_kib() as u64, tiny.shape().bytes() >> 10);
    }

    #[tokio::test]
    async fn batches_wait_for_the_budget_and_give_it_back() {
        let memory = CopyMemory::new(SHAPES[4].bytes());
        let per_batch = SHAPES[4].batch_bytes() >> 10;
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(memory.take_batch().await);
        }
        assert_eq!(memory.free_kib(), 0);
        let waiting = tokio::spawn({
            let m = memory.clone();
            async move { m.take_batch().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "a fourth batch fits no budget of three");
        held.pop();
        let fourth = waiting.await.expect("joins");
        assert_eq!(memory.free_kib(), 0);
        drop((held, fourth));
        assert_eq!(memory.free_kib() as u64, 3 * per_batch);
    }
}
