//! The object store side of the capacity tier (see [`crate::store::tier`]
//! for what it is and how packs move there): the store handle with its
//! runtime and read cache, a pack's object (ranged reads through the cache,
//! scrub's reads from the store itself, removal), its `NNNNNNNN.remote`
//! record, uploads of whole packs, and the check made at open that every
//! recorded pack is in the store.

use crate::disk::files::{fsync_dir, read_versioned, remove_file, write_atomic, write_versioned};
use crate::error::ChunkNodeError;
use crate::store::cache::{CacheStats, ReadCache};
use crate::store::packfile::{Loc, HEADER};
use cairn_core::ChunkId;
use cairn_proto::objects::Objects;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, WriteMultipart};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// Bytes of one part of a pack's multipart upload.
const PART_BYTES: usize = 16 << 20;
/// Parts of one upload in flight at once.
const PARTS_IN_FLIGHT: usize = 4;
/// Version of the `NNNNNNNN.remote` files.
const REMOTE_VERSION: u16 = 1;
/// The file naming this store's objects.
pub(crate) const TIER_ID: &str = "tier-id";

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
    pub(crate) objects: Objects,
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

pub(crate) fn remote_path(dir: &Path, n: u32) -> PathBuf {
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
    pub(crate) fn upload(&self, n: u32, file: &File, size: u64) -> io::Result<()> {
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
    pub(crate) fn delete(&self, n: u32) -> io::Result<()> {
        match self.block_on(self.objects.store.delete(&self.key(n))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(io_err(e)),
        }
    }

    /// The pack numbers of the objects under this store's prefix.
    pub(crate) fn listed(&self) -> io::Result<Vec<u32>> {
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
    pub(crate) fn new(n: u32, size: u64, tier: Arc<CapacityTier>) -> RemotePack {
        RemotePack { n, size, tier }
    }

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

/// Whether `name` is a `.remote` file: its pack number.
pub(crate) fn remote_number(name: &str) -> Option<u32> {
    name.strip_suffix(".remote")?.parse().ok()
}

/// Writes pack `n`'s `.remote` record under `dir` durably: its size and
/// its `records`.
pub(crate) fn write_record(
    dir: &Path,
    n: u32,
    size: u64,
    records: &[(ChunkId, Loc)],
) -> Result<(), ChunkNodeError> {
    let remote =
        Remote { size, records: records.iter().map(|(id, l)| (id.0, l.offset, l.len)).collect() };
    write_versioned(&remote_path(dir, n), REMOTE_VERSION, &remote)
}

/// Pack `n`'s records and size, from its `.remote` record under `dir`.
pub(crate) fn read_record(
    dir: &Path,
    n: u32,
) -> Result<(Vec<(ChunkId, Loc)>, u64), ChunkNodeError> {
    let path = remote_path(dir, n);
    let remote: Remote = read_versioned(&path, REMOTE_VERSION)?
        .ok_or_else(|| ChunkNodeError::io("read", &path, io::ErrorKind::NotFound.into()))?;
    Ok((records_of(n, &remote), remote.size))
}
