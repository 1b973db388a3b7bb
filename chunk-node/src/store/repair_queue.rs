//! The ids of chunks whose local record was found corrupt and buried (by a
//! read, a scrub or the check at open after an unclean stop), waiting for
//! the repairer (`crate::scrub`) to fetch a good copy from a replica.
//!
//! Bounded: past [`CAPACITY`] ids, new ones are dropped and counted (the
//! chunk is still absent, so `HasChunks` answers false and the next copy
//! that needs it stores it again). An id is queued once while it waits.

use cairn_core::ChunkId;
use std::collections::{HashSet, VecDeque};

/// Most ids waiting for repair.
pub(crate) const CAPACITY: usize = 65_536;

#[derive(Default)]
pub(crate) struct RepairQueue {
    ids: VecDeque<ChunkId>,
    queued: HashSet<ChunkId>,
    /// Ids dropped because the queue was full.
    pub(crate) dropped: u64,
}

impl RepairQueue {
    /// Queues `id` unless it waits already; false when the queue is full.
    pub(crate) fn push(&mut self, id: ChunkId) -> bool {
        if self.queued.contains(&id) {
            return true;
        }
        if self.ids.len() >= CAPACITY {
            self.dropped += 1;
            tracing::error!(chunk = %id, "repair queue full; chunk left for a later copy to store again");
            return false;
        }
        self.queued.insert(id);
        self.ids.push_back(id);
        true
    }

    /// Takes up to `n` ids, oldest first.
    pub(crate) fn take(&mut self, n: usize) -> Vec<ChunkId> {
        let n = n.min(self.ids.len());
        let out: Vec<ChunkId> = self.ids.drain(..n).collect();
        for id in &out {
            self.queued.remove(id);
        }
        out
    }

    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_once_in_order_and_is_bounded() {
        let mut q = RepairQueue::default();
        let ids: Vec<ChunkId> = (0..3u8).map(|i| ChunkId::of(&[i])).collect();
        for id in &ids {
            assert!(q.push(*id));
        }
        assert!(q.push(ids[0]), "an id waiting already is not queued twice");
        assert_eq!(q.len(), 3);
        assert_eq!(q.take(2), ids[..2].to_vec());
        assert_eq!(q.take(5), ids[2..].to_vec());
        for i in 0..CAPACITY as u32 {
            q.push(ChunkId::of(&i.to_le_bytes()));
        }
        assert!(!q.push(ChunkId::of(b"one more")));
        assert_eq!(q.dropped, 1);
    }
}
