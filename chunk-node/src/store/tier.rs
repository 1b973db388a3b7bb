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

use crate::disk::files::{fsync_dir, read_versioned, remove_file, write_atomic, write_versioned};
use crate::error::ChunkNodeError;
use crate::store::cache::{CacheStats, ReadCache};
use crate::store::packfile::{pack_path, Loc, Pack, HEADER};
use crate::store::shared::Shared;
use cairn_core::ChunkId;
use cairn_proto::objects::Objects;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, WriteMultipart};
use serde::{Deserialize, Serialize};
use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// Bytes of one part of a pack's multipart upload.
const PART_BYTES: usize = 16 << 20;
/// Parts of one upload in flight at once.
const PARTS_IN_FLIGHT: usize = 4;
/// Version of the `NNNNNNNN.remote` files.
const REMOTE_VERSION: u16 = 1;
/// The file naming this store's objects.
pub(crate) const TIER_ID: &str = "tier-id";
/// Longest wait before an upload that failed is tried again.
const RETRY_MAX: Duration = Duration::from_secs(60);

/// Where a chunk node's capacity tier lives and how much it caches.
pub struct TierSettings {
    pub objects: Objects,
    /// Prefix of this node's objects (the node id).
    pub prefix: String,
    /// Bytes of the read cache.
    pub cache_bytes: u64,
}

/// An object store holding a chunk store's sealed packs.
pub(crate) struct CapacityTier {
    objects: Objects,
    /// `{prefix}/{store id}`.
    prefix: String,
    cache: ReadCache,
    /// Object store calls run here, so that any thread (a blocking read, the
    /// uploader) can wait for them.
    runtime: Option<tokio::runtime::Runtime>,
    /// Sealed packs waiting to be uploaded.
    pub(crate) backlog: AtomicU64,
}

impl Drop for CapacityTier {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The `NNNNNNNN.remote` record of an uploaded pack.
#[derive(Serialize, Deserialize)]
struct Remote {
    size: u64,
    /// (id, record offset, payload length) of the records indexed when the
    /// pack was uploaded.
    records: Vec<([u8; 32], u64, u32)>,
}

fn remote_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:08}.remote"))
}

/// An object store error as I/O: never as a record cut short, so that a
/// store that cannot be reached, or a wrong bucket, buries nothing (opening
/// checks that every recorded pack is there, [`CapacityTier::check_packs`]).
fn io_err(e: object_store::Error) -> io::Error {
    let kind = match e {
        object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e.to_string())
}

impl CapacityTier {
    /// The tier of the store whose packs are under `dir` (its store id is
    /// created there on first use); the cache goes to `cache_dir`.
    pub(crate) fn open(
        settings: TierSettings,
        dir: &Path,
        cache_dir: &Path,
    ) -> Result<CapacityTier, ChunkNodeError> {
        let id_path = dir.join(TIER_ID);
        let id = match std::fs::read_to_string(&id_path) {
            Ok(id) => id.trim().to_string(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let id = format!("{:016x}", rand::random::<u64>());
                write_atomic(&id_path, id.as_bytes())?;
                id
            }
            Err(e) => return Err(ChunkNodeError::io("read", &id_path, e)),
        };
        let cache = ReadCache::open(cache_dir, settings.cache_bytes)
            .map_err(|e| ChunkNodeError::io("empty the read cache", cache_dir, e))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("capacity-tier")
            .enable_all()
            .build()
            .map_err(|e| ChunkNodeError::io("start the capacity tier's runtime for", dir, e))?;
        tracing::info!(store = %settings.objects.name, prefix = %settings.prefix, id, "capacity tier");
        Ok(CapacityTier {
            objects: settings.objects,
            prefix: format!("{}/{id}", settings.prefix.trim_matches('/')),
            cache,
            runtime: Some(runtime),
            backlog: AtomicU64::new(0),
        })
    }

    pub(crate) fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    fn key_name(&self, n: u32) -> String {
        format!("{}/{n:08}.pack", self.prefix)
    }

    fn key(&self, n: u32) -> ObjectPath {
        ObjectPath::from(self.key_name(n))
    }

    /// Refuses a store whose recorded packs (number, size) are not all in
    /// the object store with their sizes: the tier is configured otherwise
    /// than when they were uploaded (another bucket, prefix or store id), or
    /// objects were lost. Opening then fails instead of serving with chunks
    /// missing; a pack truly lost is forgotten by deleting its
    /// `NNNNNNNN.remote` (re-replication restores the chunks' copies).
    pub(crate) fn check_packs(&self, recorded: &[(u32, u64)]) -> Result<(), ChunkNodeError> {
        if recorded.is_empty() {
            return Ok(());
        }
        let prefix = ObjectPath::from(self.prefix.as_str());
        let listed: std::collections::HashMap<String, u64> = self
            .block_on(self.objects.store.list(Some(&prefix)).try_collect::<Vec<_>>())
            .map_err(|e| ChunkNodeError::Tier(format!("listing {}: {e}", self.objects.name)))?
            .into_iter()
            .map(|m| (m.location.to_string(), m.size))
            .collect();
        let bad: Vec<u32> = recorded
            .iter()
            .filter(|(n, size)| listed.get(&self.key_name(*n)) != Some(size))
            .map(|(n, _)| *n)
            .collect();
        if bad.is_empty() {
            return Ok(());
        }
        Err(ChunkNodeError::Tier(format!(
            "{} of the {} packs this store uploaded are missing from {} under {}/ (or have another size), e.g. pack {:08}: is the capacity tier configured as when they were uploaded?",
            bad.len(),
            recorded.len(),
            self.objects.name,
            self.prefix,
            bad[0]
        )))
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.as_ref().expect("runtime until dropped").block_on(f)
    }

    /// Bytes `range` of pack `n`'s object: one ranged GET.
    /// A range past the object's end (the object is shorter than its
    /// record says) is `UnexpectedEof`, a record cut short.
    fn fetch(&self, n: u32, range: Range<u64>) -> io::Result<Vec<u8>> {
        let key = self.key(n);
        let want = range.end - range.start;
        let end = range.end;
        match self.block_on(self.objects.store.get_range(&key, range)) {
            Ok(bytes) if bytes.len() as u64 == want => Ok(bytes.to_vec()),
            Ok(_) => Err(io::ErrorKind::UnexpectedEof.into()),
            Err(e) => {
                // A range past the end of an object shorter than recorded.
                let head = self.block_on(self.objects.store.head(&key));
                if head.is_ok_and(|meta| meta.size < end) {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                Err(io_err(e))
            }
        }
    }

    /// Uploads the sealed pack `file` as pack `n`'s object, checks that
    /// the store holds all of it, and makes it durable.
    fn upload(&self, n: u32, file: &File, size: u64) -> io::Result<()> {
        let key = self.key(n);
        self.block_on(async {
            let upload = self.objects.store.put_multipart(&key).await.map_err(io_err)?;
            let mut parts = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
            match write_parts(&mut parts, file, size).await {
                Ok(()) => parts.finish().await.map_err(io_err)?,
                Err(e) => {
                    // No incomplete multipart upload is left to be billed.
                    let _ = parts.abort().await;
                    return Err(e);
                }
            };
            let stored = self.objects.store.head(&key).await.map_err(io_err)?.size;
            if stored != size {
                return Err(io::Error::other(format!("stored {stored} bytes of {size}")));
            }
            Ok(())
        })?;
        self.objects.sync(&self.key_name(n))
    }

    /// Deletes pack `n`'s object (absent counts as deleted).
    fn delete(&self, n: u32) -> io::Result<()> {
        match self.block_on(self.objects.store.delete(&self.key(n))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(io_err(e)),
        }
    }

    /// The pack numbers of the objects under this store's prefix.
    fn listed(&self) -> io::Result<Vec<u32>> {
        let prefix = ObjectPath::from(self.prefix.as_str());
        let metas: Vec<_> =
            self.block_on(self.objects.store.list(Some(&prefix)).try_collect()).map_err(io_err)?;
        Ok(metas
            .iter()
            .filter_map(|m| m.location.filename()?.strip_suffix(".pack")?.parse().ok())
            .collect())
    }
}

/// Hands `size` bytes of `file` to `parts`, at most [`PARTS_IN_FLIGHT`]
/// parts in flight.
async fn write_parts(parts: &mut WriteMultipart, file: &File, size: u64) -> io::Result<()> {
    let mut buf = vec![0u8; PART_BYTES];
    let mut at = 0u64;
    while at < size {
        let len = (size - at).min(PART_BYTES as u64) as usize;
        // A blocking read on the uploader's own thread; the parts already
        // handed over upload on the runtime's workers.
        file.read_exact_at(&mut buf[..len], at)?;
        parts.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(io_err)?;
        parts.write(&buf[..len]);
        at += len as u64;
    }
    Ok(())
}

/// A sealed pack whose bytes are in the capacity tier.
pub(crate) struct RemotePack {
    n: u32,
    size: u64,
    tier: Arc<CapacityTier>,
}

impl RemotePack {
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// `len` bytes at `from` holding `id`'s payload: through the cache, and
    /// from the store itself when the cached bytes do not verify.
    pub(crate) fn read(&self, id: &ChunkId, from: u64, len: usize) -> io::Result<Vec<u8>> {
        let range = from..from + len as u64;
        let tier = &self.tier;
        let data = tier.cache.read(self.n, self.size, range.clone(), |r| tier.fetch(self.n, r))?;
        if ChunkId::of(&data) == *id {
            return Ok(data);
        }
        tier.cache.forget(self.n, range.clone());
        tier.fetch(self.n, range)
    }

    /// The header and payload of the record at `loc`, from the store (one
    /// ranged GET; scrub checks what the store holds, not the cache).
    pub(crate) fn fetch_record(&self, loc: Loc) -> io::Result<([u8; HEADER as usize], Vec<u8>)> {
        let end = loc.offset + HEADER + u64::from(loc.len);
        if end > self.size {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut data = self.tier.fetch(self.n, loc.offset..end)?;
        let payload = data.split_off(HEADER as usize);
        let head = data.try_into().map_err(|_| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        Ok((head, payload))
    }

    /// The records of the pack, from its `.remote` file under `dir`.
    pub(crate) fn records(&self, dir: &Path) -> Result<Vec<(ChunkId, Loc)>, ChunkNodeError> {
        let path = remote_path(dir, self.n);
        let remote: Remote = read_versioned(&path, REMOTE_VERSION)?
            .ok_or_else(|| ChunkNodeError::io("read", &path, io::ErrorKind::NotFound.into()))?;
        Ok(records_of(self.n, &remote))
    }

    /// Removes the pack: its `.remote` file (durably), then its object.
    /// An object left behind by a crash is swept at the next open.
    pub(crate) fn remove(&self, dir: &Path) -> Result<(), ChunkNodeError> {
        remove_file(&remote_path(dir, self.n))?;
        fsync_dir(dir)?;
        self.tier.cache.forget_pack(self.n);
        if let Err(e) = self.tier.delete(self.n) {
            tracing::warn!(pack = self.n, error = %e, "cannot delete a pack's object; the next open sweeps it");
        }
        Ok(())
    }
}

fn records_of(n: u32, remote: &Remote) -> Vec<(ChunkId, Loc)> {
    let mut records: Vec<(ChunkId, Loc)> = remote
        .records
        .iter()
        .map(|(id, offset, len)| (ChunkId(*id), Loc { pack: n, offset: *offset, len: *len }))
        .collect();
    records.sort_unstable_by_key(|(_, l)| l.offset);
    records
}

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
    let path = remote_path(dir, n);
    let remote: Remote = read_versioned(&path, REMOTE_VERSION)?
        .ok_or_else(|| ChunkNodeError::io("read", &path, io::ErrorKind::NotFound.into()))?;
    let pack = Pack::remote(RemotePack { n, size: remote.size, tier: tier.clone() });
    Ok((records_of(n, &remote), pack))
}

/// Whether `name` is a `.remote` file: its pack number.
pub(crate) fn remote_number(name: &str) -> Option<u32> {
    name.strip_suffix(".remote")?.parse().ok()
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
    let remote =
        Remote { size, records: records.iter().map(|(id, l)| (id.0, l.offset, l.len)).collect() };
    write_versioned(&remote_path(dir, n), REMOTE_VERSION, &remote)?;
    let new = Arc::new(Pack::remote(RemotePack { n, size, tier: tier.clone() }));
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
