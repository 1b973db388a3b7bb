//! The handle of a chunk store: opening it (indexing its packs, repairing
//! and sealing packs a crash left open, moving a legacy file-per-chunk store
//! into packs, starting the committer), puts, verified gets, `has`,
//! counters, and the entry points of garbage collection (fences and sweeps,
//! [`crate::store::gc`]; compaction, [`crate::store::compact`]). See
//! [`crate::store`] for the design.

use crate::disk::files::{fsync_dir, remove_file, write_atomic};
use crate::disk::reclog::RecordLog;
use crate::error::ChunkNodeError;
use crate::store::cache::CacheStats;
use crate::store::committer::{Committer, Put, Request};
use crate::store::compact::{
    self, parse_tombstone, read_next_pack, rewrite_tombstones, CompactReport, NEXT_PACK,
    TOMBSTONES, TOMBSTONES_NEW,
};
use crate::store::gc::{self, Fences, SweepReport};
use crate::store::index::Index;
use crate::store::pack::Pack;
use crate::store::packfile::Loc;
use crate::store::packfile::{pack_path, scan_pack, Scan, Scanned, HEADER, MAX_CHUNK};
use crate::store::remote::{self, CapacityTier, TierSettings, TIER_ID};
use crate::store::repair_queue::RepairQueue;
use crate::store::scrub;
use crate::store::shared::{tombstone, Checked, Shared};
use crate::store::tier;
use bytes::Bytes;
use cairn_core::gc::LiveFilter;
use cairn_core::ChunkId;
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use tokio::sync::oneshot;

/// A pack is sealed once it holds this much.
const PACK_BYTES: u64 = 256 << 20;
/// The capacity tier's read cache, under the data directory.
const CACHE_DIR: &str = "pack-cache";
/// Written by [`ChunkStore::close`], removed at open: without it, the
/// store was not closed cleanly and open verifies every sealed record.
pub(crate) const CLEAN_MARKER: &str = "clean-shutdown";

/// Counters of the store, kept in memory and rebuilt at open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub chunks: u64,
    pub bytes: u64,
    /// Corrupt records found (and tombstoned) since the store was opened.
    pub corrupt: u64,
    /// Pack files, the one being appended included.
    pub packs: u64,
    /// Chunks (and their payload bytes) garbage collection deleted since
    /// the store was opened.
    pub gc_deleted: u64,
    pub gc_deleted_bytes: u64,
}

/// What a store's capacity tier holds and caches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TierStats {
    /// Packs in the object store, and their bytes.
    pub packs: u64,
    pub bytes: u64,
    /// Sealed packs still waiting on local disk to be uploaded.
    pub backlog: u64,
    pub cache: CacheStats,
}

/// Live fraction under which [`ChunkStore::compact`] rewrites a pack, unless
/// told otherwise.
pub const COMPACT_LIVE_FRACTION: f64 = 0.5;

#[derive(Clone)]
pub struct ChunkStore {
    shared: Arc<Shared>,
    queue: mpsc::Sender<Request>,
    fences: Arc<Fences>,
    /// Held by the one compaction running (and by the pack uploader).
    compacting: Arc<Mutex<()>>,
    tier: Option<Arc<CapacityTier>>,
}

impl ChunkStore {
    /// Opens (creating if needed) the store under `data_dir`: indexes its
    /// packs, repairs and seals packs a crash left open, moves a legacy
    /// file-per-chunk store into packs, and starts the committer.
    pub async fn open(data_dir: &Path) -> Result<ChunkStore, ChunkNodeError> {
        Self::open_with(data_dir, PACK_BYTES, None).await
    }

    /// [`ChunkStore::open`] sealing packs at `pack_bytes`, with sealed packs
    /// moved to the capacity tier `tier` if given.
    pub async fn open_with(
        data_dir: &Path,
        pack_bytes: u64,
        tier: Option<TierSettings>,
    ) -> Result<ChunkStore, ChunkNodeError> {
        let data_dir = data_dir.to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(&data_dir, pack_bytes, tier))
            .await?
    }

    pub(crate) fn open_blocking(
        data_dir: &Path,
        pack_bytes: u64,
        tier: Option<TierSettings>,
    ) -> Result<ChunkStore, ChunkNodeError> {
        let dir = data_dir.join("packs");
        fs::create_dir_all(&dir).map_err(|e| ChunkNodeError::io("create", &dir, e))?;
        let tier = match tier {
            Some(t) => Some(Arc::new(CapacityTier::open(t, &dir, &data_dir.join(CACHE_DIR))?)),
            None => None,
        };
        let mut dead = HashSet::new();
        let mut tombstones = RecordLog::open(&dir.join(TOMBSTONES), |_, p| {
            dead.extend(parse_tombstone(p));
            Ok(())
        })?;
        let clean = take_clean_marker(&dir)?;
        let (found, remote) = list_packs(&dir)?;
        if !clean && found.iter().any(|(_, sealed)| *sealed) {
            tracing::warn!(dir = %dir.display(), "no clean-shutdown marker: verifying every record of the sealed packs");
        }
        let mut entries = HashMap::new();
        let mut packs = HashMap::new();
        let mut bad = Vec::new();
        let (mut chunks, mut bytes) = (0u64, 0u64);
        let mut index = |n: u32, records: Vec<(ChunkId, Loc)>| {
            for (id, loc) in records {
                if dead.contains(&(n, loc.offset)) || entries.contains_key(&id) {
                    continue;
                }
                entries.insert(id, loc);
                chunks += 1;
                bytes += u64::from(loc.len);
            }
        };
        let mut recorded = Vec::new();
        for &n in &remote {
            let (records, pack) = tier::open_remote(&dir, n, tier.as_ref())?;
            index(n, records);
            recorded.push((n, pack.size().unwrap_or(0)));
            packs.insert(n, Arc::new(pack));
        }
        if let Some(t) = &tier {
            t.check_packs(&recorded)?;
        }
        let mut upload = Vec::new();
        for &(n, sealed) in &found {
            if remote.contains(&n) {
                // Uploaded and recorded; a crash kept the local file.
                remove_file(&pack_path(&dir, n, sealed))?;
                continue;
            }
            let (scanned, pack) = open_local(&dir, n, sealed, clean)?;
            index(n, scanned.records);
            bad.extend(scanned.corrupt.into_iter().filter(|(_, l)| !dead.contains(&(n, l.offset))));
            packs.insert(n, Arc::new(pack));
            upload.push(n);
        }
        // Corrupt records found by the check after an unclean stop: buried,
        // and queued for repair unless another record of the chunk is whole.
        let mut repairs = RepairQueue::default();
        for (id, loc) in &bad {
            tombstones.append(&tombstone(*loc))?;
            if !entries.contains_key(id) {
                repairs.push(*id);
            }
            tracing::error!(chunk = %id, pack = loc.pack, offset = loc.offset, "corrupt chunk record found at open and tombstoned");
        }
        if dead.iter().any(|(n, _)| !packs.contains_key(n)) {
            // Tombstones of packs compaction removed before a crash.
            if let Some(log) = rewrite_tombstones(&dir, |n| packs.contains_key(&n))? {
                tombstones = log;
            }
        }
        // Never reuse the number of a pack compaction removed.
        let highest = found.iter().map(|(n, _)| *n).chain(remote.iter().copied()).max();
        let next = highest.map_or(0, |n| n + 1).max(read_next_pack(&dir)?.unwrap_or(0));
        tracing::info!(chunks, bytes, packs = found.len(), dir = %dir.display(), "chunk store opened");
        let shared = Arc::new(Shared {
            dir,
            index: Index::new(entries),
            packs: RwLock::new(packs),
            tombstones: Mutex::new(tombstones),
            chunks: AtomicU64::new(chunks),
            bytes: AtomicU64::new(bytes),
            corrupt: AtomicU64::new(bad.len() as u64),
            repairs: Mutex::new(repairs),
            gc_deleted: AtomicU64::new(0),
            gc_deleted_bytes: AtomicU64::new(0),
        });
        let compacting = Arc::<Mutex<()>>::default();
        let uploads = match &tier {
            Some(t) => {
                Some(tier::start_uploader(shared.clone(), t.clone(), compacting.clone(), upload)?)
            }
            None => None,
        };
        let (queue, rx) = mpsc::channel();
        let committer = Committer::new(shared.clone(), next, pack_bytes, uploads);
        std::thread::Builder::new()
            .name("chunk-committer".into())
            .spawn(move || committer.run(rx))
            .map_err(|e| ChunkNodeError::io("start the committer for", data_dir, e))?;
        let store = ChunkStore { shared, queue, fences: Arc::default(), compacting, tier };
        store.migrate_legacy(data_dir)?;
        Ok(store)
    }

    /// Marks the store as closed cleanly: the next open trusts the headers
    /// of sealed packs instead of hashing every record. Call it last, once
    /// nothing else uses the store (puts after it are still durable; only
    /// the check at the next open is skipped).
    pub fn close(&self) -> Result<(), ChunkNodeError> {
        write_atomic(&self.shared.dir.join(CLEAN_MARKER), b"")
    }

    /// (bytes free to this process, bytes in all) of the file system that
    /// holds the store; zeros if it cannot be asked.
    pub fn disk_space(&self) -> (u64, u64) {
        match nix::sys::statvfs::statvfs(&self.shared.dir) {
            Ok(v) => {
                let unit = v.fragment_size();
                (v.blocks_available() * unit, v.blocks() * unit)
            }
            Err(_) => (0, 0),
        }
    }

    pub fn stats(&self) -> StoreStats {
        let s = &self.shared;
        StoreStats {
            chunks: s.chunks.load(Ordering::Relaxed),
            bytes: s.bytes.load(Ordering::Relaxed),
            corrupt: s.corrupt.load(Ordering::Relaxed),
            packs: s.packs.read().unwrap_or_else(|e| e.into_inner()).len() as u64,
            gc_deleted: s.gc_deleted.load(Ordering::Relaxed),
            gc_deleted_bytes: s.gc_deleted_bytes.load(Ordering::Relaxed),
        }
    }

    /// The capacity tier's figures, when the store has one.
    pub fn tier_stats(&self) -> Option<TierStats> {
        let tier = self.tier.as_ref()?;
        let (mut packs, mut bytes) = (0, 0);
        for pack in self.shared.packs.read().unwrap_or_else(|e| e.into_inner()).values() {
            if pack.local_file().is_none() {
                packs += 1;
                bytes += pack.size().unwrap_or(0);
            }
        }
        let backlog = tier.backlog.load(Ordering::SeqCst);
        Some(TierStats { packs, bytes, backlog, cache: tier.cache_stats() })
    }

    /// Stores `data` under `id` unless it is already there, durably. Returns
    /// whether it was newly stored. Refused (nothing stored) when `data` does
    /// not hash to `id`.
    pub async fn put(&self, id: ChunkId, data: impl Into<Bytes>) -> Result<bool, ChunkNodeError> {
        let rx = self.enqueue(id, data.into(), false)?;
        rx.await.map_err(|_| ChunkNodeError::StoreStopped)?
    }

    /// [`ChunkStore::put`] of bytes whose id this process computed from
    /// these very bytes (the copy executor's local replica): not hashed again.
    pub async fn put_hashed(&self, id: ChunkId, data: Bytes) -> Result<bool, ChunkNodeError> {
        let rx = self.enqueue(id, data, true)?;
        rx.await.map_err(|_| ChunkNodeError::StoreStopped)?
    }

    fn enqueue(
        &self,
        id: ChunkId,
        data: Bytes,
        hashed: bool,
    ) -> Result<oneshot::Receiver<Result<bool, ChunkNodeError>>, ChunkNodeError> {
        if data.len() > MAX_CHUNK {
            return Err(ChunkNodeError::InvalidArgument("chunk larger than the store takes"));
        }
        let (reply, rx) = oneshot::channel();
        let put = Put { id, data, hashed, relocate: None, reply };
        self.queue.send(Request::Put(put)).map_err(|_| ChunkNodeError::StoreStopped)?;
        Ok(rx)
    }

    /// The verified bytes of `id`, or `None` when it is absent (or was corrupt).
    pub async fn get(&self, id: ChunkId) -> Result<Option<Vec<u8>>, ChunkNodeError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || shared.get(id)).await?
    }

    /// Whether each id is stored (contents are verified on read). Each one
    /// found is touched: a sweep keeps it unless the sweep's fence is newer.
    pub async fn has(&self, ids: Vec<ChunkId>) -> Result<Vec<bool>, ChunkNodeError> {
        Ok(ids.iter().map(|id| self.shared.index.touch(id)).collect())
    }

    /// Records the touch sequence now as the fence of `generation`, unless
    /// that generation has one already (the first fence stays).
    pub fn gc_fence(&self, generation: u64) {
        self.fences.fence(generation, self.shared.index.current());
    }

    /// Deletes the chunks of `filter`'s partition that it lacks and that
    /// nobody touched since the fence of the latest known generation at or
    /// before `generation`. Without such a fence deletes nothing (`swept` is
    /// false). Blocking: it walks the whole index.
    pub fn gc_sweep(&self, generation: u64, filter: &LiveFilter) -> SweepReport {
        self.gc_sweep_batched(generation, filter, gc::BATCH)
    }

    /// [`ChunkStore::gc_sweep`] removing at most `batch` chunks per lock.
    pub(crate) fn gc_sweep_batched(
        &self,
        generation: u64,
        filter: &LiveFilter,
        batch: usize,
    ) -> SweepReport {
        match self.fences.threshold(generation) {
            Some(threshold) => gc::sweep(&self.shared, threshold, filter, batch.max(1)),
            None => SweepReport::default(),
        }
    }

    /// Removes sealed packs without live chunks and rewrites those whose
    /// live payload is below `max_live_fraction` (see
    /// [`COMPACT_LIVE_FRACTION`]) of their size. Blocking (it waits for the
    /// committer): call it off the async runtime.
    pub fn compact(&self, max_live_fraction: f64) -> Result<CompactReport, ChunkNodeError> {
        let _one = self.compacting.lock().unwrap_or_else(|e| e.into_inner());
        compact::compact(&self.shared, &self.queue, max_live_fraction)
    }

    /// Moves chunks of the file-per-chunk layout (before packs) into packs,
    /// then removes the old files. Blocking.
    fn migrate_legacy(&self, data_dir: &Path) -> Result<(), ChunkNodeError> {
        let old = data_dir.join("chunks");
        if !old.is_dir() {
            return Ok(());
        }
        let mut moved = 0u64;
        let shards = fs::read_dir(&old).map_err(|e| ChunkNodeError::io("list", &old, e))?;
        for shard in shards {
            let shard = shard.map_err(|e| ChunkNodeError::io("list", &old, e))?.path();
            if !shard.is_dir() {
                continue;
            }
            for f in fs::read_dir(&shard).map_err(|e| ChunkNodeError::io("list", &shard, e))? {
                let path = f.map_err(|e| ChunkNodeError::io("list", &shard, e))?.path();
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                let Some(id) = name.as_deref().and_then(ChunkId::from_hex) else { continue };
                let data = fs::read(&path).map_err(|e| ChunkNodeError::io("read", &path, e))?;
                if ChunkId::of(&data) != id {
                    tracing::error!(path = %path.display(), "corrupt legacy chunk not moved");
                    continue;
                }
                self.enqueue(id, data.into(), true)?
                    .blocking_recv()
                    .map_err(|_| ChunkNodeError::StoreStopped)??;
                moved += 1;
            }
        }
        // Every chunk is durable in a pack now.
        fs::remove_dir_all(&old).map_err(|e| ChunkNodeError::io("remove", &old, e))?;
        fsync_dir(data_dir)?;
        tracing::info!(moved, "file-per-chunk store moved into packs");
        Ok(())
    }

    /// The packs open now, by number (scrub walks them in this order).
    pub(crate) fn scrub_packs(&self) -> Vec<u32> {
        scrub::packs(&self.shared)
    }

    /// The indexed records of `pack` at `from` or after, by offset.
    /// Blocking: it walks the index.
    pub(crate) fn scrub_records(&self, pack: u32, from: u64) -> Vec<(ChunkId, Loc)> {
        scrub::records(&self.shared, pack, from)
    }

    /// Reads and verifies `id`'s record at `loc`; a bad one is buried and
    /// queued for repair. Blocking.
    pub(crate) fn scrub_check(&self, id: ChunkId, loc: Loc) -> Result<Checked, ChunkNodeError> {
        scrub::check(&self.shared, id, loc)
    }

    /// Takes up to `n` ids of buried chunks waiting for repair.
    pub fn take_repairs(&self, n: usize) -> Vec<ChunkId> {
        self.shared.repairs.lock().unwrap_or_else(|e| e.into_inner()).take(n)
    }

    /// Queues `id` for repair again (a repair that could not reach a replica).
    pub fn queue_repair(&self, id: ChunkId) {
        self.shared.repairs.lock().unwrap_or_else(|e| e.into_inner()).push(id);
    }

    /// Ids waiting for repair, and ids dropped because the queue was full.
    pub fn repairs_waiting(&self) -> (u64, u64) {
        let q = self.shared.repairs.lock().unwrap_or_else(|e| e.into_inner());
        (q.len() as u64, q.dropped)
    }

    /// Where `id`'s record lies: (pack path, payload offset). For tests that
    /// damage stored bytes.
    pub fn locate(&self, id: &ChunkId) -> Option<(PathBuf, u64)> {
        let loc = self.shared.index.loc(id)?;
        let dir = &self.shared.dir;
        let sealed = pack_path(dir, loc.pack, true);
        let path = if sealed.exists() { sealed } else { pack_path(dir, loc.pack, false) };
        Some((path, loc.offset + HEADER))
    }
}

/// Opens local pack `n` under `dir` and walks it (headers only after a
/// clean stop, every record otherwise; a pack a crash left open has its
/// torn tail cut off and is sealed).
fn open_local(
    dir: &Path,
    n: u32,
    sealed: bool,
    clean: bool,
) -> Result<(Scanned, Pack), ChunkNodeError> {
    let path = pack_path(dir, n, sealed);
    let file = File::options()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| ChunkNodeError::io("open", &path, e))?;
    let mode = match (sealed, clean) {
        (false, _) => Scan::CutTail,
        (true, true) => Scan::Headers,
        (true, false) => Scan::Verify,
    };
    let scanned = scan_pack(&file, &path, n, mode)?;
    if !sealed {
        let to = pack_path(dir, n, true);
        fs::rename(&path, &to).map_err(|e| ChunkNodeError::io("seal", &path, e))?;
        fsync_dir(dir)?;
    }
    Ok((scanned, Pack::new(file, &pack_path(dir, n, true), true)))
}

/// Whether the clean-shutdown marker was there; removes it (durably), so
/// that a stop without [`ChunkStore::close`] leaves none.
fn take_clean_marker(dir: &Path) -> Result<bool, ChunkNodeError> {
    let marker = dir.join(CLEAN_MARKER);
    if !marker.exists() {
        return Ok(false);
    }
    remove_file(&marker)?;
    fsync_dir(dir)?;
    Ok(true)
}

/// Local packs: (number, sealed).
type LocalPacks = Vec<(u32, bool)>;

/// The packs under `dir`: local ones as (number, sealed) and the numbers of
/// those in the capacity tier, sorted. Removes temp files a crash left
/// behind.
fn list_packs(dir: &Path) -> Result<(LocalPacks, Vec<u32>), ChunkNodeError> {
    let mut found: Vec<(u32, bool)> = Vec::new();
    let mut remote = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| ChunkNodeError::io("list", dir, e))? {
        let name = entry.map_err(|e| ChunkNodeError::io("list", dir, e))?.file_name();
        let name = name.to_string_lossy();
        let parsed = name.split_once('.').and_then(|(n, ext)| {
            let sealed = match ext {
                "pack" => true,
                "open" => false,
                _ => return None,
            };
            n.parse::<u32>().ok().map(|n| (n, sealed))
        });
        match parsed {
            Some(p) => found.push(p),
            None if remote::remote_number(&name).is_some() => {
                remote.extend(remote::remote_number(&name))
            }
            None if [TOMBSTONES, NEXT_PACK, CLEAN_MARKER, TIER_ID].contains(&&*name) => {}
            None if name == TOMBSTONES_NEW || name.starts_with(".tmp") => {
                remove_file(&dir.join(&*name))?;
            }
            None => tracing::warn!(file = %name, "stray file in the chunk store"),
        }
    }
    found.sort_unstable();
    remote.sort_unstable();
    Ok((found, remote))
}

#[cfg(test)]
#[path = "chunk_store_tests.rs"]
mod tests;
