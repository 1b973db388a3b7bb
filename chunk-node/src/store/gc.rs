//! The chunk store's side of garbage collection: fences and sweeps. The
//! gateway marks (it builds a [`LiveFilter`] of every chunk some holder
//! needs); the store deletes what the filter lacks and nobody touched since
//! the pass began. Compaction ([`crate::store::compact`]) then gives the
//! space back.
//!
//! - **Touches.** Every put (new or not) and every `has` hit stamps the
//!   chunk with the store's touch sequence ([`crate::store::index`]): a put
//!   before it is acknowledged, a `has` under its shard's read lock.
//! - **Fences.** [`Fences::fence`] records, once per generation, the touch
//!   sequence when that generation began on this node. The first value
//!   stays: when two coordinators race, the earlier fence is the safer one.
//!   Only the last [`MAX_FENCES`] are kept, in memory: after a restart the
//!   store knows none, and a sweep then deletes nothing.
//! - **Sweep.** [`sweep`] deletes every chunk of the filter's partition
//!   whose seq is at most the threshold (the fence of the largest known
//!   generation at or before the one asked for) and that the filter lacks.
//!   It walks the index a shard at a time: candidates are collected under the
//!   shard's read lock (at most [`BATCH`] at once), then each is checked
//!   again and removed under its write lock. A `has` that answered true, or
//!   a put acknowledged, after the fence stamped a seq above the threshold
//!   before it answered, and that stamp is what the write-locked check
//!   reads: such a chunk is never deleted. Seqs only grow, so every batch
//!   either removes its candidates or sees them touched: a sweep ends.
//! - **Nothing on disk.** A swept chunk only leaves the index and the
//!   counters; its record stays in its pack until compaction rewrites or
//!   removes the pack, and is not tombstoned. If the node restarts before
//!   that, opening the store indexes the record again: its bytes are valid,
//!   so it is an ordinary (dead) chunk that the next pass deletes again.
//!   Nobody was told it exists in between, so bringing it back is harmless.

use crate::store::index::SHARDS;
use crate::store::shared::Shared;
use cairn_core::gc::LiveFilter;
use cairn_core::ChunkId;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

/// Fences kept (the generations before them are forgotten).
pub(crate) const MAX_FENCES: usize = 256;
/// Most candidates a sweep collects before removing them (a shard with
/// more is scanned again after each batch).
pub(crate) const BATCH: usize = 4096;

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// False when no fence at or before the generation is known (nothing
    /// was deleted).
    pub swept: bool,
    /// Chunks of the filter's partition looked at.
    pub examined: u64,
    pub deleted: u64,
    /// Payload bytes of the deleted chunks.
    pub deleted_bytes: u64,
}

/// The touch sequence at which each recent generation began here.
#[derive(Default)]
pub(crate) struct Fences {
    by_generation: Mutex<BTreeMap<u64, u64>>,
}

impl Fences {
    /// Records `seq` as the fence of `generation` unless it has one.
    pub(crate) fn fence(&self, generation: u64, seq: u64) {
        let mut fences = self.by_generation.lock().unwrap_or_else(|e| e.into_inner());
        fences.entry(generation).or_insert(seq);
        while fences.len() > MAX_FENCES {
            fences.pop_first();
        }
    }

    /// The fence of the largest known generation at or before `generation`.
    pub(crate) fn threshold(&self, generation: u64) -> Option<u64> {
        let fences = self.by_generation.lock().unwrap_or_else(|e| e.into_inner());
        fences.range(..=generation).next_back().map(|(_, seq)| *seq)
    }
}

/// Deletes every chunk of `filter`'s partition with seq at most
/// `threshold` that `filter` lacks, removing at most `batch` per lock.
pub(crate) fn sweep(
    shared: &Shared,
    threshold: u64,
    filter: &LiveFilter,
    batch: usize,
) -> SweepReport {
    let mut report = SweepReport { swept: true, ..SweepReport::default() };
    for n in 0..SHARDS {
        // Deleted in earlier batches of this shard (the last scan, which
        // sees all the shard's survivors, no longer sees them).
        let mut gone = 0u64;
        loop {
            let (candidates, seen) = candidates(shared, n, threshold, filter, batch);
            let full = candidates.len() >= batch;
            let (deleted, bytes) = remove(shared, n, threshold, &candidates);
            report.deleted += deleted;
            report.deleted_bytes += bytes;
            gone += deleted;
            if !full {
                report.examined += seen + gone - deleted;
                break;
            }
        }
    }
    tracing::info!(
        threshold,
        partition = ?filter.partition(),
        examined = report.examined,
        deleted = report.deleted,
        deleted_bytes = report.deleted_bytes,
        "chunk store swept"
    );
    report
}

/// Up to `batch` ids of shard `n` to delete, and how many chunks of the
/// partition the scan looked at. Under the shard's read lock.
fn candidates(
    shared: &Shared,
    n: usize,
    threshold: u64,
    filter: &LiveFilter,
    batch: usize,
) -> (Vec<ChunkId>, u64) {
    let partition = filter.partition();
    let shard = shared.index.read_shard(n);
    let mut out = Vec::new();
    let mut seen = 0u64;
    for (id, entry) in shard.iter() {
        if !partition.covers(id) {
            continue;
        }
        seen += 1;
        if entry.seq() <= threshold && !filter.contains(id) {
            out.push(*id);
            if out.len() >= batch {
                break;
            }
        }
    }
    (out, seen)
}

/// Removes those of `ids` still untouched since `threshold`, under shard
/// `n`'s write lock: (chunks, payload bytes) removed.
fn remove(shared: &Shared, n: usize, threshold: u64, ids: &[ChunkId]) -> (u64, u64) {
    if ids.is_empty() {
        return (0, 0);
    }
    let mut shard = shared.index.write_shard(n);
    let (mut deleted, mut bytes) = (0u64, 0u64);
    for id in ids {
        if shard.get(id).is_some_and(|e| e.seq() <= threshold) {
            if let Some(entry) = shard.remove(id) {
                deleted += 1;
                bytes += u64::from(entry.loc.len);
            }
        }
    }
    drop(shard);
    shared.chunks.fetch_sub(deleted, Ordering::Relaxed);
    shared.bytes.fetch_sub(bytes, Ordering::Relaxed);
    shared.gc_deleted.fetch_add(deleted, Ordering::Relaxed);
    shared.gc_deleted_bytes.fetch_add(bytes, Ordering::Relaxed);
    (deleted, bytes)
}
