//! The in-memory index of a chunk store: where each chunk's record lies and
//! the touch sequence at which it was last put or found by `has`.
//!
//! The index is cut into [`SHARDS`] hash maps by a byte of the chunk id, each
//! under its own lock, so that a garbage collection sweep can walk it one
//! shard at a time ([`crate::store::gc`]) and never holds a lock over the
//! whole store: a `HashMap` cannot resume an iteration once its lock is let
//! go, a shard is simply done or not.
//!
//! Touch sequence: one counter per store, starting at 1 at each open; a
//! chunk found at open has seq 0. [`Index::stamp`] hands out a value larger
//! than any value [`Index::current`] returned before it, and an entry's seq
//! only grows ([`Entry::touch`] is a `fetch_max`), so a touch that happened
//! after a fence is never hidden by a slower, older one. Stamps of existing
//! entries are made while holding their shard's read lock, and a sweep
//! removes an entry only under the shard's write lock after reading its seq
//! again: the stamp is visible to it or the entry is not there to stamp.

use crate::store::packfile::Loc;
use cairn_core::ChunkId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Number of shards of the index.
pub(crate) const SHARDS: usize = 256;

/// One chunk's index entry.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) loc: Loc,
    seq: AtomicU64,
}

impl Entry {
    pub(crate) fn new(loc: Loc, seq: u64) -> Entry {
        Entry { loc, seq: AtomicU64::new(seq) }
    }

    /// The touch sequence at which the chunk was last put or found.
    pub(crate) fn seq(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }

    /// Records a touch at `seq` (never moves the entry's seq back).
    pub(crate) fn touch(&self, seq: u64) {
        self.seq.fetch_max(seq, Ordering::SeqCst);
    }
}

pub(crate) type Shard = HashMap<ChunkId, Entry>;

/// The sharded index and the store's touch sequence.
pub(crate) struct Index {
    shards: Box<[RwLock<Shard>]>,
    touch: AtomicU64,
}

impl Index {
    /// An index holding `entries` (found at open, seq 0).
    pub(crate) fn new(entries: impl IntoIterator<Item = (ChunkId, Loc)>) -> Index {
        let mut shards: Vec<Shard> = (0..SHARDS).map(|_| HashMap::new()).collect();
        for (id, loc) in entries {
            shards[shard_of(&id)].insert(id, Entry::new(loc, 0));
        }
        let shards = shards.into_iter().map(RwLock::new).collect();
        Index { shards, touch: AtomicU64::new(1) }
    }

    /// The shard of `id`, for reading.
    pub(crate) fn read(&self, id: &ChunkId) -> RwLockReadGuard<'_, Shard> {
        self.read_shard(shard_of(id))
    }

    /// The shard of `id`, for writing.
    pub(crate) fn write(&self, id: &ChunkId) -> RwLockWriteGuard<'_, Shard> {
        self.write_shard(shard_of(id))
    }

    pub(crate) fn read_shard(&self, n: usize) -> RwLockReadGuard<'_, Shard> {
        self.shards[n].read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn write_shard(&self, n: usize) -> RwLockWriteGuard<'_, Shard> {
        self.shards[n].write().unwrap_or_else(|e| e.into_inner())
    }

    /// Where `id` lies, if it is indexed.
    pub(crate) fn loc(&self, id: &ChunkId) -> Option<Loc> {
        self.read(id).get(id).map(|e| e.loc)
    }

    /// A fresh touch sequence value: larger than every value
    /// [`Index::current`] returned before this call.
    pub(crate) fn stamp(&self) -> u64 {
        self.touch.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The touch sequence now (what a fence records).
    pub(crate) fn current(&self) -> u64 {
        self.touch.load(Ordering::SeqCst)
    }

    /// Whether `id` is indexed; if so it is stamped as touched, under the
    /// shard's read lock.
    pub(crate) fn touch(&self, id: &ChunkId) -> bool {
        let shard = self.read(id);
        match shard.get(id) {
            Some(e) => {
                e.touch(self.stamp());
                true
            }
            None => false,
        }
    }
}

/// Which shard holds `id`: a byte of the id that neither the live filter's
/// probes (bytes 0..16) nor its partitions (bytes 24..32) use.
fn shard_of(id: &ChunkId) -> usize {
    usize::from(id.0[16]) % SHARDS
}
