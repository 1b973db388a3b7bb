//! The volume host: every volume of this node by id, opened at start (with
//! what unfinished creates left dropped, and hydration restarted), created,
//! deleted, frozen and released, and closed cleanly; and the background work
//! on them: a hydrator worker per hydrating volume, stopped cleanly at
//! close, and copies, aborted. See [`crate::volume`] for
//! the on-disk layout and the point-in-time rule.

use crate::disk::files::{fsync_dir, remove_dir, remove_file};
use crate::disk::volfile::{self, VolumeFile};
use crate::error::{check_name, ChunkNodeError};
use crate::store::LocalStore;
use crate::volume::blockids::{BlockIdsWriter, WrittenIds};
use crate::volume::blocks::{blocks_in, BlockLocks};
use crate::volume::freeze::{self, Freeze, FreezeRecord, MAX_PENDING};
use crate::volume::hydration::Hydration;
use crate::volume::hydrator::Hydrator;
use crate::volume::io::Volume;
use crate::volume::restoremap::{self, HydrationMap};
use crate::volume::tracking::Tracking;
use cairn_proto::tls::ClusterTls;
use cairn_proto::MetadataClient;
use cairn_worker::{WorkerStatus, Workers};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::RwLock as Gate;
use tokio::task::JoinSet;

/// What a freeze answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FreezeInfo {
    pub incremental: bool,
    pub blocks_to_read: u64,
    /// The size of the frozen image, in bytes.
    pub volume_size: u64,
}

/// All volumes of this node, and the background work on them.
#[derive(Clone)]
pub struct VolumeHost {
    inner: Arc<HostInner>,
}

struct HostInner {
    data_dir: PathBuf,
    volumes_dir: PathBuf,
    volumes: RwLock<HashMap<String, Arc<Volume>>>,
    /// Copies in flight.
    tasks: Mutex<JoinSet<()>>,
    /// The node's workers; this host runs the hydrators in it.
    workers: Workers,
    /// Where to look up chunk nodes' current addresses, if anywhere.
    metadata: Option<Arc<MetadataClient>>,
    /// This node's chunk store: restores read the chunks it holds directly.
    local: Option<LocalStore>,
    /// Bytes of repeated chunks each restoring volume keeps between fetches.
    restore_cache_bytes: usize,
}

const CLEAN_MARKER: &str = "clean-shutdown";

impl VolumeHost {
    /// Opens the volumes under `data_dir` with their freezes, tracking and
    /// hydration, drops what unfinished creates left, and restarts hydration.
    pub async fn open(data_dir: &Path) -> Result<VolumeHost, ChunkNodeError> {
        let cache = crate::volume::chunkcache::DEFAULT_BUDGET_BYTES;
        Self::open_with(data_dir, Vec::new(), None, None, Workers::new(), cache).await
    }

    /// [`VolumeHost::open`], with the metadata group's members (gRPC URLs)
    /// to look up moved chunk nodes during hydration, this node's own chunk
    /// store, which restores read directly, and the node's worker set, which
    /// runs the hydrators.
    pub async fn open_with(
        data_dir: &Path,
        metadata: Vec<String>,
        tls: Option<ClusterTls>,
        local: Option<LocalStore>,
        workers: Workers,
        restore_cache_bytes: usize,
    ) -> Result<VolumeHost, ChunkNodeError> {
        let data_dir = data_dir.to_path_buf();
        let metadata =
            (!metadata.is_empty()).then(|| Arc::new(MetadataClient::new(metadata).with_tls(tls)));
        let host = tokio::task::spawn_blocking(move || {
            Self::open_blocking(&data_dir, metadata, local, workers, restore_cache_bytes)
        })
        .await??;
        let hydrating: Vec<Arc<Volume>> =
            host.all_volumes().into_iter().filter(|v| v.hydrating().is_some()).collect();
        for v in hydrating {
            host.start_hydrator(&v);
        }
        Ok(host)
    }

    fn open_blocking(
        data_dir: &Path,
        metadata: Option<Arc<MetadataClient>>,
        local: Option<LocalStore>,
        workers: Workers,
        restore_cache_bytes: usize,
    ) -> Result<VolumeHost, ChunkNodeError> {
        let volumes_dir = data_dir.join("volumes");
        fs::create_dir_all(&volumes_dir)
            .map_err(|e| ChunkNodeError::io("create", &volumes_dir, e))?;
        let marker = data_dir.join(CLEAN_MARKER);
        let clean = marker.exists();
        // From here on, until `close`, a stop is unclean.
        remove_file(&marker)?;
        fsync_dir(data_dir)?;
        let mut volumes = HashMap::new();
        let mut states = Vec::new();
        let mut segments = Vec::new();
        for entry in
            fs::read_dir(&volumes_dir).map_err(|e| ChunkNodeError::io("list", &volumes_dir, e))?
        {
            let entry = entry.map_err(|e| ChunkNodeError::io("list", &volumes_dir, e))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp") {
                remove_file(&path)?;
            } else if let Some(id) = name.strip_suffix(".state") {
                states.push((id.to_string(), path));
            } else if volfile::segment_owner(&name).is_some() {
                segments.push(path);
            } else if let Some(id) = name.strip_suffix(".img") {
                let fetching = (local.as_ref(), restore_cache_bytes);
                let vol = Self::load_volume(id, &path, &volumes_dir, clean, fetching)?;
                volumes.insert(id.to_string(), Arc::new(vol));
            }
        }
        for path in segments.into_iter().filter(|p| volfile::is_orphan_segment(p)) {
            // A create or a delete cut short (see `disk::volfile`).
            remove_file(&path)?;
        }
        for (id, path) in states {
            if !volumes.contains_key(&id) {
                // A create that never installed its volume, or a delete cut short.
                remove_dir(&path)?;
            }
        }
        tracing::info!(volumes = volumes.len(), clean, "volume host opened");
        Ok(VolumeHost {
            inner: Arc::new(HostInner {
                data_dir: data_dir.to_path_buf(),
                volumes_dir,
                volumes: RwLock::new(volumes),
                tasks: Mutex::new(JoinSet::new()),
                workers,
                metadata,
                local,
                restore_cache_bytes,
            }),
        })
    }

    fn load_volume(
        id: &str,
        path: &Path,
        volumes_dir: &Path,
        clean: bool,
        (local, cache_bytes): (Option<&LocalStore>, usize),
    ) -> Result<Volume, ChunkNodeError> {
        let file =
            Arc::new(VolumeFile::open(path).map_err(|e| ChunkNodeError::io("open", path, e))?);
        let size = file.size().map_err(|e| ChunkNodeError::io("stat", path, e))?;
        let state_dir = volumes_dir.join(format!("{id}.state"));
        let freezes_dir = state_dir.join("freezes");
        fs::create_dir_all(&freezes_dir)
            .map_err(|e| ChunkNodeError::io("create", &freezes_dir, e))?;
        let mut freezes = Vec::new();
        for entry in
            fs::read_dir(&freezes_dir).map_err(|e| ChunkNodeError::io("list", &freezes_dir, e))?
        {
            let entry = entry.map_err(|e| ChunkNodeError::io("list", &freezes_dir, e))?;
            if let Some(f) = Freeze::load(&entry.path())? {
                freezes.push(Arc::new(f));
            }
        }
        freezes.sort_by_key(|f| f.record.epoch);
        let epochs: Vec<(String, u64)> =
            freezes.iter().map(|f| (f.snapshot_id().to_string(), f.record.epoch)).collect();
        let tracking = Tracking::load(&state_dir, size, clean, &epochs)?;
        tracking.save_meta(&state_dir)?;
        let locks = Arc::new(BlockLocks::default());
        let hydration =
            Hydration::load(&state_dir, path, file.clone(), locks.clone(), local, cache_bytes)?;
        Ok(Volume {
            id: id.to_string(),
            size: AtomicU64::new(size),
            path: path.to_path_buf(),
            state_dir,
            file,
            gate: Arc::new(Gate::new(())),
            deleted: AtomicBool::new(false),
            locks,
            tracking: Mutex::new(tracking),
            freezes: RwLock::new(freezes),
            copy_blocks_read: AtomicU64::new(0),
            hydration,
            readahead: Default::default(),
        })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.inner.volumes_dir.join(format!("{id}.img"))
    }

    fn state_dir(&self, id: &str) -> PathBuf {
        self.inner.volumes_dir.join(format!("{id}.state"))
    }

    pub fn get(&self, id: &str) -> Option<Arc<Volume>> {
        self.inner.volumes.read().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    /// (id, size) of every volume, sorted by id.
    pub fn list(&self) -> Vec<(String, u64)> {
        let map = self.inner.volumes.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = map.values().map(|v| (v.id.clone(), v.size())).collect();
        v.sort();
        v
    }

    /// Runs `fut` (a copy) as background work of this host; it is aborted
    /// at close.
    pub fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner());
        while tasks.try_join_next().is_some() {}
        tasks.spawn(fut);
    }

    fn start_hydrator(&self, v: &Arc<Volume>) {
        if let Some(h) = v.hydration.clone() {
            self.inner.workers.spawn(Hydrator::new(&v.id, h, self.inner.metadata.clone()));
        }
    }

    /// The workers of this host's node (its hydrators among them).
    pub fn workers(&self) -> Vec<WorkerStatus> {
        self.inner.workers.list()
    }

    /// Creates an empty volume of `size` bytes. Idempotent: an existing
    /// volume of the same size is left as it is.
    pub async fn create(&self, id: &str, size: u64) -> Result<(), ChunkNodeError> {
        self.install(id, size, None).await
    }

    /// A new chunk map for a restore, to fill and pass to
    /// [`VolumeHost::create_restored`] (a temporary file until then).
    /// Blocking.
    pub(crate) fn new_block_ids(&self) -> Result<BlockIdsWriter, ChunkNodeError> {
        BlockIdsWriter::create(&self.inner.volumes_dir)
    }

    /// Creates a volume restored lazily from `map` and its chunk map `ids`:
    /// usable at once, its blocks are fetched on demand and by a background
    /// hydrator.
    pub(crate) async fn create_restored(
        &self,
        id: &str,
        map: HydrationMap,
        ids: WrittenIds,
    ) -> Result<(), ChunkNodeError> {
        self.install(id, map.size, Some((map, ids))).await
    }

    /// `Some(())` when `id` exists with `size`; an error if with another size.
    fn existing(&self, id: &str, size: u64) -> Result<Option<()>, ChunkNodeError> {
        match self.get(id) {
            Some(v) if v.size() == size => Ok(Some(())),
            Some(v) => Err(ChunkNodeError::VolumeExists { id: id.into(), size: v.size() }),
            None => Ok(None),
        }
    }

    /// Writes the volume's state (tracking, and hydration if restoring),
    /// then makes its file appear (temp file, rename, directory fsync).
    async fn install(
        &self,
        id: &str,
        size: u64,
        map: Option<(HydrationMap, WrittenIds)>,
    ) -> Result<(), ChunkNodeError> {
        check_name("volume id", id)?;
        if size == 0 {
            return Err(ChunkNodeError::InvalidArgument("volume size must be positive"));
        }
        if self.existing(id, size)?.is_some() {
            return Ok(());
        }
        let host = self.clone();
        let id = id.to_string();
        let vol = tokio::task::spawn_blocking(move || {
            let mut map_guard = host.inner.volumes.write().unwrap_or_else(|e| e.into_inner());
            if let Some(v) = map_guard.get(&id) {
                return if v.size() == size {
                    Ok(None)
                } else {
                    Err(ChunkNodeError::VolumeExists { id: id.clone(), size: v.size() })
                };
            }
            let state_dir = host.state_dir(&id);
            remove_dir(&state_dir)?;
            let freezes_dir = state_dir.join("freezes");
            fs::create_dir_all(&freezes_dir)
                .map_err(|e| ChunkNodeError::io("create", &freezes_dir, e))?;
            let tracking = Tracking::fresh(size);
            tracking.save_meta(&state_dir)?;
            let restored = map.is_some();
            if let Some((m, ids)) = map {
                restoremap::create(&state_dir, &m, ids)?;
            }
            fsync_dir(&state_dir)?;
            fsync_dir(&host.inner.volumes_dir)?;
            let dir = &host.inner.volumes_dir;
            let tmp = tempfile::Builder::new()
                .prefix(".tmp")
                .tempfile_in(dir)
                .map_err(|e| ChunkNodeError::io("create temp in", dir, e))?;
            let path = host.path(&id);
            VolumeFile::create_later_segments(&path, size)
                .map_err(|e| ChunkNodeError::io("create segments of", &path, e))?;
            // The segments are in the directory before the rename that
            // makes the volume exist is.
            fsync_dir(dir)?;
            let first = VolumeFile::first_len(size);
            tmp.as_file().set_len(first).map_err(|e| ChunkNodeError::io("size", tmp.path(), e))?;
            tmp.as_file().sync_all().map_err(|e| ChunkNodeError::io("fsync", tmp.path(), e))?;
            tmp.persist(&path).map_err(|e| ChunkNodeError::io("rename to", &path, e.error))?;
            fsync_dir(dir)?;
            let file = Arc::new(
                VolumeFile::open(&path).map_err(|e| ChunkNodeError::io("open", &path, e))?,
            );
            let locks = Arc::new(BlockLocks::default());
            let hydration = match restored {
                true => Hydration::load(
                    &state_dir,
                    &path,
                    file.clone(),
                    locks.clone(),
                    host.inner.local.as_ref(),
                    host.inner.restore_cache_bytes,
                )?,
                false => None,
            };
            let vol = Arc::new(Volume {
                id: id.clone(),
                size: AtomicU64::new(size),
                path,
                state_dir,
                file,
                gate: Arc::new(Gate::new(())),
                deleted: AtomicBool::new(false),
                locks,
                tracking: Mutex::new(tracking),
                freezes: RwLock::new(Vec::new()),
                copy_blocks_read: AtomicU64::new(0),
                hydration,
                readahead: Default::default(),
            });
            map_guard.insert(id.clone(), vol.clone());
            tracing::info!(volume = %id, size, lazy = vol.hydration.is_some(), "volume created");
            Ok(Some(vol))
        })
        .await??;
        if let Some(v) = vol {
            self.start_hydrator(&v);
        }
        Ok(())
    }

    /// Deletes a volume with its state; open NBD connections to it then fail
    /// their I/O. Deleting a missing volume succeeds.
    pub async fn delete(&self, id: &str) -> Result<(), ChunkNodeError> {
        check_name("volume id", id)?;
        let removed = self.inner.volumes.write().unwrap_or_else(|e| e.into_inner()).remove(id);
        let Some(vol) = removed else { return Ok(()) };
        // Wait for in-flight mutations, then refuse new ones.
        let _g = vol.gate.clone().write_owned().await;
        vol.deleted.store(true, Ordering::Release);
        if let Some(h) = &vol.hydration {
            h.cancel();
        }
        let dir = self.inner.volumes_dir.clone();
        let (path, state) = (vol.path.clone(), vol.state_dir.clone());
        tokio::task::spawn_blocking(move || {
            VolumeFile::remove(&path).map_err(|e| ChunkNodeError::io("remove", &path, e))?;
            fsync_dir(&dir)?;
            remove_dir(&state)
        })
        .await??;
        tracing::info!(volume = %id, "volume deleted");
        Ok(())
    }

    /// Freezes `vol` for snapshot `snap` at this instant, by copy-on-write:
    /// nothing is copied now. With `parent` (the volume's last completed
    /// snapshot) and exact tracking since its freeze, the copy will read only
    /// the blocks changed since; otherwise every block that may hold data.
    /// Idempotent: freezing the same snapshot again answers the same.
    pub async fn freeze(
        &self,
        vol: &str,
        snap: &str,
        parent: Option<&str>,
    ) -> Result<FreezeInfo, ChunkNodeError> {
        check_name("volume id", vol)?;
        check_name("snapshot id", snap)?;
        if let Some(p) = parent {
            check_name("parent snapshot id", p)?;
        }
        let volume = self.get(vol).ok_or_else(|| ChunkNodeError::VolumeNotFound(vol.into()))?;
        let guard = volume.gate.clone().write_owned().await;
        if volume.deleted.load(Ordering::Acquire) {
            return Err(ChunkNodeError::VolumeNotFound(vol.into()));
        }
        let info = |f: &Freeze| FreezeInfo {
            incremental: f.record.incremental,
            blocks_to_read: f.record.read_set.count(),
            volume_size: f.record.volume_size,
        };
        if let Some(f) = volume.freeze_of(snap) {
            return Ok(info(&f));
        }
        if volume.pending().len() >= MAX_PENDING {
            return Err(ChunkNodeError::TooManyFreezes(vol.into()));
        }
        let (v, snap, parent) = (volume.clone(), snap.to_string(), parent.map(str::to_string));
        let started = std::time::Instant::now();
        let freeze = tokio::task::spawn_blocking(move || {
            let _held = guard;
            let mut tracking = v.tracking();
            let total = blocks_in(v.size());
            let changed = parent.as_deref().and_then(|p| tracking.changed_since(p));
            let incremental = changed.is_some();
            let read_set = match changed {
                Some(set) => set,
                None => {
                    let extents = v
                        .file
                        .data_extents_in(0, v.size())
                        .map_err(|e| ChunkNodeError::io("walk extents of", &v.path, e))?;
                    let mut set = freeze::data_blocks(&extents, total);
                    if let Some(h) = v.hydrating() {
                        // Blocks not yet restored are holes here but data in truth.
                        for i in h.missing() {
                            set.insert(i);
                        }
                    }
                    set
                }
            };
            let record = FreezeRecord {
                snapshot_id: snap.clone(),
                volume_size: v.size(),
                epoch: tracking.epoch(),
                parent: if incremental { parent } else { None },
                incremental,
                read_set,
            };
            let f = Arc::new(Freeze::create(&v.state_dir.join("freezes"), record)?);
            tracking.freeze(&snap);
            v.freezes.write().unwrap_or_else(|e| e.into_inner()).push(f.clone());
            tracking.save_meta(&v.state_dir)?;
            Ok::<_, ChunkNodeError>(f)
        })
        .await??;
        let out = info(&freeze);
        tracing::info!(
            volume = vol, snapshot = %freeze.snapshot_id(), incremental = out.incremental,
            blocks_to_read = out.blocks_to_read, elapsed = ?started.elapsed(), "volume frozen"
        );
        Ok(out)
    }

    /// The pending freeze of `snap` on `vol`: `NotFrozen` when the volume
    /// has none, `VolumeNotFound` when this host does not hold the volume at
    /// all (its disk was lost or replaced: freezes are durable otherwise).
    pub(crate) fn frozen(
        &self,
        vol: &str,
        snap: &str,
    ) -> Result<(Arc<Volume>, Arc<Freeze>), ChunkNodeError> {
        check_name("volume id", vol)?;
        check_name("snapshot id", snap)?;
        let volume = self.get(vol).ok_or_else(|| ChunkNodeError::VolumeNotFound(vol.into()))?;
        let freeze =
            volume.freeze_of(snap).ok_or_else(|| ChunkNodeError::NotFrozen(snap.into()))?;
        Ok((volume, freeze))
    }

    /// Drops the freeze of `snap` on `vol`; releasing twice succeeds.
    pub async fn release(&self, vol: &str, snap: &str) -> Result<(), ChunkNodeError> {
        check_name("volume id", vol)?;
        check_name("snapshot id", snap)?;
        let Some(volume) = self.get(vol) else { return Ok(()) };
        // No mutation is using the freeze while the gate is held.
        let removed = {
            let _g = volume.gate.clone().write_owned().await;
            let mut list = volume.freezes.write().unwrap_or_else(|e| e.into_inner());
            let pos = list.iter().position(|f| f.snapshot_id() == snap);
            pos.map(|p| list.remove(p))
        };
        if let Some(f) = removed {
            tokio::task::spawn_blocking(move || f.remove()).await??;
            tracing::info!(volume = vol, snapshot = snap, "freeze released");
        }
        Ok(())
    }

    /// Every open volume, cloned out of the map so no lock is held.
    fn all_volumes(&self) -> Vec<Arc<Volume>> {
        self.inner.volumes.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    /// Stops background work, makes every volume durable, saves change
    /// tracking and marks the stop clean. Copies are aborted; the workers
    /// stop cleanly first: a hydrator finishes the round it is installing,
    /// so nothing writes a volume once it is synced.
    pub async fn close(&self) -> Result<(), ChunkNodeError> {
        self.abort_copies().await;
        self.inner.workers.shutdown().await;
        let volumes = self.all_volumes();
        let mut guards = Vec::new();
        for v in &volumes {
            guards.push(v.gate.clone().write_owned().await);
        }
        let data_dir = self.inner.data_dir.clone();
        tokio::task::spawn_blocking(move || {
            let _held = guards;
            for v in volumes.iter().filter(|v| !v.deleted.load(Ordering::Acquire)) {
                v.file.sync_all().map_err(|e| ChunkNodeError::io("fsync", &v.path, e))?;
                v.tracking().save_all(&v.state_dir)?;
            }
            crate::disk::files::write_atomic(&data_dir.join(CLEAN_MARKER), b"1")
        })
        .await??;
        tracing::info!("volume host closed cleanly");
        Ok(())
    }

    /// Stops background work without saving anything: what a killed process
    /// leaves behind (tests use it to simulate SIGKILL).
    pub async fn stop_tasks(&self) {
        self.abort_copies().await;
        self.inner.workers.abort().await;
    }

    async fn abort_copies(&self) {
        let mut tasks =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}
