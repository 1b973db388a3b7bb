//! The capacity tier: a chunk node's sealed packs in an object store (a
//! directory or an S3-compatible bucket), so that what a node stores is
//! bounded by the object store, not by its disk. The disk keeps the pack
//! being appended, sealed packs until they are uploaded, one small record
//! per uploaded pack, and a bounded read cache ([`crate::store::cache`]);
//! the index stays in memory as for local packs.
//!
//! Uploading a sealed pack (one thread per store, one pack at a time, never
//! while compaction runs): its bytes go up as a multipart upload to
//! `{prefix}/{store id}/NNNNNNNN.pack`, the object's size is checked, then
//! `NNNNNNNN.remote` (the pack's size and its indexed records) is written
//! durably beside the packs, then the pack in memory is switched to the
//! remote one and the local file is removed. A crash before the record
//! leaves the local pack (uploaded again; the object is overwritten); after
//! it, the local file is removed at the next open. Opening reads the
//! records instead of walking pack headers, and sweeps objects under the
//! store's prefix that no record names (an upload a crash cut short, a pack
//! whose removal a crash interrupted).
//!
//! The store id (random, `packs/tier-id`) keeps two stores that share a
//! bucket and a node name (a node whose disk was replaced, two clusters)
//! from ever naming the same object.
//!
//! Reads go through the cache by ranges; a record from the cache that does
//! not verify is fetched again from the store before it is called corrupt.
//! Scrub fetches every record it checks from the store itself (not the
//! cache), so it checks what the store holds. Garbage collection and
//! compaction work unchanged: a remote pack with no live record has its
//! record and then its object removed; a mostly dead one is read back and
//! its live records appended locally (and uploaded again later).

use crate::disk::files::{fsync_dir, remove_file};
use crate::error::ChunkNodeError;
use crate::store::pack::Pack;
use crate::store::packfile::{pack_path, Loc};
use crate::store::remote::{self, CapacityTier, RemotePack};
use crate::store::shared::Shared;
use cairn_core::ChunkId;
use std::collections::{HashSet, VecDeque};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// Longest wait before an upload that failed is tried again.
const RETRY_MAX: Duration = Duration::from_secs(60);

/// Opens uploaded pack `n` under `dir`: its records and the pack. Refused
/// when the store has no capacity tier configured.
pub(crate) fn open_remote(
    dir: &Path,
    n: u32,
    tier: Option<&Arc<CapacityTier>>,
) -> Result<(Vec<(ChunkId, Loc)>, Pack), ChunkNodeError> {
    let Some(tier) = tier else {
        return Err(ChunkNodeError::Config(
            "this store has packs in a capacity tier, but no capacity_tier is configured",
        ));
    };
    let (records, size) = remote::read_record(dir, n)?;
    Ok((records, Pack::remote(RemotePack::new(n, size, tier.clone()))))
}

/// Where the committer sends the packs it seals.
pub(crate) struct Uploads {
    tx: mpsc::Sender<u32>,
    tier: Arc<CapacityTier>,
}

impl Uploads {
    /// Queues sealed pack `n` for upload.
    pub(crate) fn send(&self, n: u32) {
        self.tier.backlog.fetch_add(1, Ordering::SeqCst);
        if self.tx.send(n).is_err() {
            self.tier.backlog.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Starts the thread that uploads sealed packs: those `queued` at open,
/// then each the committer seals (through the returned [`Uploads`]). It
/// holds `compacting` while it uploads, so a pack is never uploaded while
/// compaction rewrites or removes it, and stops once the committer is gone.
pub(crate) fn start_uploader(
    shared: Arc<Shared>,
    tier: Arc<CapacityTier>,
    compacting: Arc<Mutex<()>>,
    queued: Vec<u32>,
) -> Result<Uploads, ChunkNodeError> {
    let (tx, rx) = mpsc::channel();
    let uploads = Uploads { tx, tier: tier.clone() };
    for n in queued {
        uploads.send(n);
    }
    let dir = shared.dir.clone();
    std::thread::Builder::new()
        .name("pack-uploader".into())
        .spawn(move || {
            sweep_orphans(&shared, &tier);
            let mut waiting = VecDeque::new();
            let mut retry = Duration::from_secs(1);
            loop {
                waiting.extend(rx.try_iter());
                if waiting.is_empty() {
                    match rx.recv() {
                        Ok(n) => waiting.push_back(n),
                        Err(_) => return,
                    }
                }
                let Some(n) = waiting.pop_front() else { continue };
                let done = {
                    let _one = compacting.lock().unwrap_or_else(|e| e.into_inner());
                    upload_pack(&shared, &tier, n)
                };
                match done {
                    Ok(()) => {
                        tier.backlog.fetch_sub(1, Ordering::SeqCst);
                        retry = Duration::from_secs(1);
                    }
                    Err(e) => {
                        tracing::warn!(pack = n, store = %tier.objects.name, error = %e, retry_secs = retry.as_secs(), "cannot upload a sealed pack to the capacity tier; it stays on local disk");
                        // Behind the others: one pack that cannot be read
                        // does not hold back the rest.
                        waiting.push_back(n);
                        std::thread::sleep(retry);
                        retry = (retry * 2).min(RETRY_MAX);
                    }
                }
            }
        })
        .map_err(|e| ChunkNodeError::io("start the pack uploader for", &dir, e))?;
    Ok(uploads)
}

/// Uploads local sealed pack `n`, records it, switches it and removes the
/// local file. A pack no longer local and sealed (compacted away, already
/// uploaded) is done.
fn upload_pack(shared: &Shared, tier: &Arc<CapacityTier>, n: u32) -> Result<(), ChunkNodeError> {
    let Some(pack) = shared.pack(n).filter(|p| p.sealed()) else { return Ok(()) };
    let Some(file) = pack.local_file() else { return Ok(()) };
    let dir = &shared.dir;
    let path = pack_path(dir, n, true);
    let size = pack.size().map_err(|e| ChunkNodeError::io("stat", &path, e))?;
    let records = crate::store::scrub::records(shared, n, 0);
    tier.upload(n, file, size).map_err(|e| ChunkNodeError::io("upload", &path, e))?;
    remote::write_record(dir, n, size, &records)?;
    let new = Arc::new(Pack::remote(RemotePack::new(n, size, tier.clone())));
    {
        let mut packs = shared.packs.write().unwrap_or_else(|e| e.into_inner());
        match packs.get(&n) {
            Some(p) if Arc::ptr_eq(p, &pack) => {
                packs.insert(n, new);
            }
            _ => return Ok(()),
        }
    }
    // Readers holding the local pack keep reading the unlinked file.
    remove_file(&path)?;
    fsync_dir(dir)?;
    tracing::info!(pack = n, bytes = size, records = records.len(), store = %tier.objects.name, "pack moved to the capacity tier");
    Ok(())
}

/// Deletes the objects under the store's prefix that no open pack names.
fn sweep_orphans(shared: &Shared, tier: &CapacityTier) {
    let open: HashSet<u32> =
        shared.packs.read().unwrap_or_else(|e| e.into_inner()).keys().copied().collect();
    match tier.listed() {
        Ok(listed) => {
            for n in listed.into_iter().filter(|n| !open.contains(n)) {
                match tier.delete(n) {
                    Ok(()) => tracing::info!(pack = n, "orphaned pack object deleted"),
                    Err(e) => {
                        tracing::warn!(pack = n, error = %e, "cannot delete an orphaned pack object")
                    }
                }
            }
        }
        Err(e) => {
            tracing::warn!(store = %tier.objects.name, error = %e, "cannot list the capacity tier")
        }
    }
}
