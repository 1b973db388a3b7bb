//! Lazy restore: a volume created from a snapshot is usable at once; its
//! blocks come from the chunk stores when first needed, and a background
//! hydrator fetches the rest.
//!
//! State, in the volume's state directory (see [`crate::volume::restoremap`]):
//! `hydrate.map` (written before the volume appears: size, replication
//! factor, sources, block count), `hydrate.ids` (written before it: the
//! manifest's non-zero blocks and their chunks, read from disk as needed,
//! see [`BlockIds`]) and `hydrate.log`, a [`RecordLog`] of blocks made
//! local. Zero blocks are holes already and need nothing. When every block
//! is local the files are removed (after the volume file is synced), the
//! map first and durably, so a map never outlives its chunk map.
//!
//! Marks: a block written by the hydrator is local at once in memory (reads
//! use it) but its mark reaches the log lazily: the hydrator flushes marks
//! (fdatasync of the volume file, then the log) in the background once
//! [`MARKS_PER_SYNC`] blocks are pending, and keeps fetching meanwhile.
//! Hydrated bytes are a copy of durable snapshot data, so losing them in a
//! crash costs only a refetch; syncing every round, or stopping for a sync,
//! made restores wait on the disk. The one rule that needs durable marks: a
//! user write to a block goes ahead only after the block's mark is durable
//! (pending marks are flushed first, and a flush under way is waited for), so
//! the hydrator never overwrites a user's write, even across a crash. The
//! volume counts as whole only once the final sync and the removal of the
//! state files are done.
//!
//! Who fetches: a read fetches the blocks it touches itself, ahead of the
//! background queue; a partial write fetches its blocks first; a write that
//! covers whole blocks just marks them. The hydrator fetches a bounded
//! number at a time, starting where reads were last seen, so it reads ahead
//! of the access pattern. It pipelines: the next round is fetched while the
//! previous one is written, synced and marked.
//!
//! A read serves the blocks it installed itself from the fetched bytes (they
//! are what the file held when the block locks were released); blocks that
//! were local already, or that someone else made local first, are read from
//! the file.

use crate::disk::direct::align_up;
use crate::disk::files::remove_file;
use crate::disk::reclog::RecordLog;
use crate::disk::volfile::VolumeFile;
use crate::error::ChunkNodeError;
use crate::peers::{self, Peer};
use crate::store::ChunkStore;
use crate::store::LocalStore;
use crate::volume::blockids::BlockIds;
use crate::volume::blocks::{block_range, blocks_in, BlockLocks};
use crate::volume::chunkcache::{ChunkCache, UseCount};
use crate::volume::restoremap::{ids_path, log_path, map_path, read_map};
use bytes::Bytes;
use cairn_core::placement::Candidate;
use cairn_core::ChunkId;
use cairn_proto::pb::StoreNode;
use futures::stream::{self, StreamExt, TryStreamExt};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::pressure::ReadPressure;

/// Concurrent chunk fetches of the background hydrator (and of one request).
pub const FETCHES_IN_FLIGHT: usize = 16;
/// Blocks marked local in memory before their marks are made durable
/// (1 GiB): see the module comment.
pub const MARKS_PER_SYNC: usize = 2048;
/// Marks per log record (512 KiB of payload).
const MARKS_PER_RECORD: usize = 65536;

/// Marks of blocks local in memory but not durably (module comment).
#[derive(Default)]
struct Marks {
    /// Not flushed yet.
    pending: Vec<u64>,
    /// Being flushed now.
    in_flush: Vec<u64>,
}

/// The chunk nodes blocks are fetched from; this node's own store is read
/// directly when it is one of them.
pub(super) struct Sources {
    pub(super) peers: Vec<Peer>,
    cands: Vec<Candidate>,
    pub(super) local: Option<(usize, ChunkStore)>,
}

impl Sources {
    pub(super) fn new(
        nodes: &[StoreNode],
        local: Option<&LocalStore>,
    ) -> Result<Sources, ChunkNodeError> {
        let peers = peers::connect(nodes)?;
        let cands = peers::candidates(&peers);
        let local = local.and_then(|l| {
            nodes.iter().position(|n| n.node_id == l.node_id).map(|i| (i, l.store.clone()))
        });
        Ok(Sources { peers, cands, local })
    }
}

pub struct Hydration {
    pub(super) dir: PathBuf,
    size: u64,
    /// The blocks to hydrate and their chunks.
    pub(super) ids: BlockIds,
    bits: Vec<AtomicU64>,
    pub(super) remaining: AtomicU64,
    /// Blocks local in memory whose marks are not durable yet.
    marks: Mutex<Marks>,
    /// Held while marks are being made durable (and by `finish`).
    flushing: Mutex<()>,
    /// A sync of the volume file failed (see `sync_volume`).
    poisoned: AtomicBool,
    /// Every block is local and the state files are gone.
    whole: AtomicBool,
    cache: ChunkCache,
    log: Mutex<Option<RecordLog>>,
    file: Arc<VolumeFile>,
    /// The volume file opened with `O_DIRECT`, while the file system takes
    /// it: hydrated blocks are written past the page cache (see
    /// [`Hydration::write_block`]).
    direct: Option<VolumeFile>,
    direct_ok: AtomicBool,
    locks: Arc<BlockLocks>,
    pub(super) sources: RwLock<Arc<Sources>>,
    rf: usize,
    /// The block after the last one a reader asked for.
    pub(super) hint: AtomicU64,
    /// Random reads that had to fetch lately: the hydrator yields to them.
    pub(super) pressure: ReadPressure,
    pub(super) cancelled: AtomicBool,
    /// Chunk fetches under way or done and not yet installed, shared by
    /// everyone who needs the chunk (see [`Hydration::fetch`]).
    inflight: Mutex<HashMap<ChunkId, Inflight>>,
}

/// One chunk's fetch, shared: the first caller fetches, the others wait for
/// its bytes (if it fails, the next waiter fetches). Kept until its blocks
/// are local.
#[derive(Clone)]
struct Inflight {
    blocks: Vec<u64>,
    bytes: Arc<tokio::sync::OnceCell<Bytes>>,
}

/// Whether block `i` is marked local in `bits`.
fn bit_set(bits: &[AtomicU64], i: u64) -> bool {
    bits.get((i / 64) as usize).is_some_and(|w| w.load(Ordering::Acquire) & (1 << (i % 64)) != 0)
}

impl Hydration {
    /// Loads the hydration state of the volume whose state is in `dir`;
    /// `None` when the volume is whole. Blocking.
    pub fn load(
        dir: &Path,
        path: &Path,
        file: Arc<VolumeFile>,
        locks: Arc<BlockLocks>,
        local: Option<&LocalStore>,
        cache_bytes: usize,
    ) -> Result<Option<Arc<Hydration>>, ChunkNodeError> {
        let Some(map) = read_map(dir)? else {
            // A log or chunk map without the map is left from a completed
            // hydration.
            remove_file(&ids_path(dir))?;
            remove_file(&log_path(dir))?;
            return Ok(None);
        };
        let blocks = blocks_in(map.size);
        let bits: Vec<AtomicU64> = (0..blocks.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        let log = RecordLog::open(&log_path(dir), |_, payload| {
            for b in payload.chunks_exact(8) {
                let i = u64::from_le_bytes(b.try_into().unwrap_or([0xff; 8]));
                if i < blocks {
                    bits[(i / 64) as usize].fetch_or(1 << (i % 64), Ordering::Relaxed);
                }
            }
            Ok(())
        })?;
        let (mut uses, mut remaining) = (UseCount::new(cache_bytes), 0u64);
        let ids = BlockIds::open(&ids_path(dir), blocks, |i, id| {
            if !bit_set(&bits, i) {
                remaining += 1;
                uses.add(id);
            }
        })?;
        if ids.count() != map.blocks {
            let why = format!("{} blocks, {} expected", ids.count(), map.blocks);
            return Err(ChunkNodeError::CorruptState { path: ids_path(dir), why });
        }
        let sources = RwLock::new(Arc::new(Sources::new(&map.store_nodes(), local)?));
        let cache = uses.cache();
        let direct = file
            .open_direct()
            .inspect_err(|e| {
                tracing::info!(path = %path.display(), error = %e, "no direct I/O here; hydrating through the page cache")
            })
            .ok();
        let h = Hydration {
            dir: dir.to_path_buf(),
            size: map.size,
            ids,
            bits,
            remaining: AtomicU64::new(remaining),
            marks: Mutex::new(Marks::default()),
            flushing: Mutex::new(()),
            poisoned: AtomicBool::new(false),
            whole: AtomicBool::new(false),
            cache,
            log: Mutex::new(Some(log)),
            file,
            direct,
            direct_ok: AtomicBool::new(true),
            locks,
            sources,
            rf: peers::replication_factor(map.replication_factor),
            hint: AtomicU64::new(0),
            pressure: ReadPressure::new(),
            cancelled: AtomicBool::new(false),
            inflight: Mutex::new(HashMap::new()),
        };
        tracing::info!(dir = %dir.display(), blocks = h.ids.count(), remaining, "hydration state loaded");
        let h = Arc::new(h);
        if remaining == 0 {
            h.finish()?;
        }
        Ok(Some(h))
    }

    pub(super) fn bit(&self, i: u64) -> bool {
        bit_set(&self.bits, i)
    }

    /// The blocks not local yet, ascending (only the manifest's data
    /// blocks can be: zero blocks are holes from the start).
    pub fn missing(&self) -> impl Iterator<Item = u64> + '_ {
        self.ids.iter_from(0).filter(|i| !self.bit(*i))
    }

    /// Whether block `i` is local (zero blocks always are).
    pub fn is_hydrated(&self, i: u64) -> bool {
        !self.ids.contains(i) || self.bit(i)
    }

    /// Whether the volume is whole: every block local, durably.
    pub fn is_complete(&self) -> bool {
        self.whole.load(Ordering::Acquire)
    }

    /// (local blocks, all blocks) of the volume.
    pub fn progress(&self) -> (u64, u64) {
        let total = blocks_in(self.size);
        (total - self.remaining.load(Ordering::Acquire), total)
    }

    /// Stops the background hydrator (the volume is being deleted).
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
    }

    /// Fetches the not-yet-local blocks among `blocks`, verified, in any
    /// order. A block's bytes may be shorter than the block: the rest is
    /// zero (and a hole in the volume file until the block is installed).
    /// Each chunk is fetched once, however many of the blocks use it, and
    /// not at all when the [`ChunkCache`] holds it.
    ///
    /// Fetches are shared: a reader that needs a block the background
    /// hydrator is fetching (it fetches just ahead of the reader) waits for
    /// that fetch instead of starting its own, and its fetched bytes are
    /// kept until the block is installed, so a reader arriving between the
    /// fetch and the install does not fetch again either.
    pub async fn fetch(&self, blocks: &[u64]) -> Result<Vec<(u64, Bytes)>, ChunkNodeError> {
        self.fetch_as(blocks, false).await
    }

    /// [`Hydration::fetch`] for the hydrator: each chunk fetch it starts
    /// takes a [`ReadPressure`] slot first (fewer at once while random reads
    /// fetch). It waits for a slot before claiming the chunk's shared fetch,
    /// so a reader needing that chunk meanwhile fetches it itself.
    pub(super) async fn fetch_yielding(
        &self,
        blocks: &[u64],
    ) -> Result<Vec<(u64, Bytes)>, ChunkNodeError> {
        self.fetch_as(blocks, true).await
    }

    async fn fetch_as(
        &self,
        blocks: &[u64],
        yielding: bool,
    ) -> Result<Vec<(u64, Bytes)>, ChunkNodeError> {
        let mut wanted: BTreeMap<ChunkId, Vec<u64>> = BTreeMap::new();
        let mut needed: Vec<u64> =
            blocks.iter().copied().filter(|i| !self.is_hydrated(*i)).collect();
        needed.sort_unstable();
        needed.dedup();
        // One read of the chunk map per run of adjacent records (a request
        // or a round is usually one), from the page cache once warm.
        for (i, id) in self.ids.get_many(&needed)? {
            wanted.entry(id).or_default().push(i);
        }
        let mut out = Vec::new();
        let mut missing = Vec::new();
        for (id, blocks) in wanted {
            match self.cache.take(&id, blocks.len() as u64) {
                Some(data) => out.extend(blocks.into_iter().map(|i| (i, data.clone()))),
                None => missing.push((id, blocks)),
            }
        }
        let src = self.sources.read().unwrap_or_else(|e| e.into_inner()).clone();
        let src = &src;
        let shared = self.share(&missing);
        let fetched: Vec<(ChunkId, Vec<u64>, Bytes)> =
            stream::iter(missing.into_iter().zip(shared))
                .map(|((id, blocks), cell)| async move {
                    let _slot = match yielding && !cell.initialized() {
                        true => Some(self.pressure.slot().await),
                        false => None,
                    };
                    let data = cell
                        .get_or_try_init(|| {
                            peers::fetch_near(
                                &src.peers,
                                &src.cands,
                                self.rf,
                                id,
                                src.local.as_ref(),
                            )
                        })
                        .await?
                        .clone();
                    for i in &blocks {
                        let (start, end) = block_range(*i, self.size);
                        if data.len() as u64 > end - start {
                            return Err(ChunkNodeError::ChunkUnavailable(id));
                        }
                    }
                    Ok((id, blocks, data))
                })
                .buffer_unordered(FETCHES_IN_FLIGHT)
                .try_collect()
                .await?;
        for (id, blocks, data) in fetched {
            self.cache.offer(id, &data, blocks.len() as u64);
            out.extend(blocks.into_iter().map(|i| (i, data.clone())));
        }
        Ok(out)
    }

    /// Whether someone (the hydrator, a reader) is fetching block `i`'s
    /// chunk or has fetched it and not yet installed it. (After a failed
    /// fetch the entry stays until its blocks are local: such a block then
    /// does not count as a random read's, a heuristic's miss.) A chunk map
    /// that cannot be read counts as not fetched: this only steers the
    /// hydrator's pace, and the fetch that follows reports the error.
    fn being_fetched(&self, i: u64) -> bool {
        if self.inflight.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
            return false;
        }
        self.ids.get(i).ok().flatten().is_some_and(|id| {
            self.inflight.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&id)
        })
    }

    /// The shared fetch of each of `missing`'s chunks, registered for the
    /// blocks they are wanted for; fetches whose blocks are all local now
    /// are forgotten first.
    fn share(&self, missing: &[(ChunkId, Vec<u64>)]) -> Vec<Arc<tokio::sync::OnceCell<Bytes>>> {
        let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        inflight.retain(|_, f| !f.blocks.iter().all(|i| self.is_hydrated(*i)));
        missing
            .iter()
            .map(|(id, blocks)| {
                let f = inflight.entry(*id).or_insert_with(|| Inflight {
                    blocks: Vec::new(),
                    bytes: Arc::new(tokio::sync::OnceCell::new()),
                });
                for i in blocks {
                    if !f.blocks.contains(i) {
                        f.blocks.push(*i);
                    }
                }
                f.bytes.clone()
            })
            .collect()
    }

    /// Makes `fetched` blocks local (unless already) and marks them and the
    /// `overwritten` blocks (which the caller's write covers whole) as local.
    /// With `durable` (the blocks a caller is about to write), the marks of
    /// those blocks are durable when it returns; other marks become durable
    /// lazily (module comment). Caller holds the locks of all of them.
    /// Returns the fetched blocks it wrote, ascending: while the caller holds
    /// their locks, the file holds exactly their fetched bytes (zero-padded).
    /// Blocking.
    pub fn install_locked<D: AsRef<[u8]>>(
        &self,
        fetched: &[(u64, D)],
        overwritten: &[u64],
        durable: Option<(u64, u64)>,
    ) -> Result<Vec<u64>, ChunkNodeError> {
        let mut marks = Vec::new();
        for (i, data) in fetched {
            if self.is_hydrated(*i) {
                continue;
            }
            self.write_block(*i, data.as_ref())
                .map_err(|e| ChunkNodeError::io("write hydrated block", format!("block {i}"), e))?;
            marks.push(*i);
        }
        marks.sort_unstable();
        marks.dedup();
        let installed = marks.clone();
        marks.extend(overwritten.iter().filter(|i| !self.is_hydrated(**i)));
        marks.sort_unstable();
        marks.dedup();
        let (left, needed) = {
            let mut m = self.marks();
            for i in &marks {
                self.bits[(i / 64) as usize].fetch_or(1 << (i % 64), Ordering::AcqRel);
            }
            m.pending.extend(&marks);
            let left =
                self.remaining.fetch_sub(marks.len() as u64, Ordering::AcqRel) - marks.len() as u64;
            let needed = durable.is_some_and(|(first, last)| {
                m.pending.iter().chain(&m.in_flush).any(|i| (first..=last).contains(i))
            });
            (left, needed)
        };
        if left == 0 {
            self.finish()?;
        } else if needed {
            self.flush_marks()?;
        }
        Ok(installed)
    }

    /// Writes a fetched block into the volume file. Directly where it can:
    /// a restore writes every block once and reads it at most once, and on
    /// this kind of machine (a VM) filling page-cache pages was a quarter of
    /// a restore's CPU. The zero padding up to the next 4 KiB stays inside
    /// the block, whose bytes past `data` are zero. Buffered otherwise.
    fn write_block(&self, i: u64, data: &[u8]) -> std::io::Result<()> {
        let (start, end) = block_range(i, self.size);
        if let Some(direct) = &self.direct {
            if self.direct_ok.load(Ordering::Relaxed) && start + align_up(data.len() as u64) <= end
            {
                match direct.write_direct_at(data, start) {
                    Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
                        tracing::warn!(dir = %self.dir.display(), "direct write refused; hydrating through the page cache");
                        self.direct_ok.store(false, Ordering::Relaxed);
                    }
                    done => return done,
                }
            }
        }
        self.file.write_all_at(data, start)
    }

    fn marks(&self) -> std::sync::MutexGuard<'_, Marks> {
        self.marks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Syncs the volume file before marks are recorded. After a failed sync
    /// nothing is marked any more: the kernel reports a writeback error once
    /// and may drop the pages, so a later sync that succeeds proves nothing.
    /// The blocks not durably marked are fetched again after a restart.
    fn sync_volume(&self, all: bool) -> Result<(), ChunkNodeError> {
        let path = self.dir.join("volume");
        if self.poisoned.load(Ordering::Acquire) {
            let e = std::io::Error::other("an earlier fsync of the volume file failed");
            return Err(ChunkNodeError::io("fsync", path, e));
        }
        let synced = if all { self.file.sync_all() } else { self.file.sync_data() };
        synced.map_err(|e| {
            self.poison();
            ChunkNodeError::io("fsync", path, e)
        })
    }

    /// Stops all marking (a sync of the volume file failed): see
    /// [`Hydration::sync_volume`].
    pub fn poison(&self) {
        if !self.poisoned.swap(true, Ordering::AcqRel) {
            tracing::error!(dir = %self.dir.display(), "volume file sync failed; hydration marks stop until a restart");
        }
    }

    /// Blocks whose marks wait for a flush.
    pub(super) fn pending_marks(&self) -> usize {
        self.marks().pending.len()
    }

    /// Makes the pending marks durable: the volume file first, then the log.
    /// Waits for a flush under way first. Blocking.
    pub(super) fn flush_marks(&self) -> Result<(), ChunkNodeError> {
        let _flushing = self.flushing.lock().unwrap_or_else(|e| e.into_inner());
        let batch = {
            let mut m = self.marks();
            m.in_flush = std::mem::take(&mut m.pending);
            m.in_flush.clone()
        };
        if batch.is_empty() {
            return Ok(());
        }
        let flushed = self.sync_volume(false).and_then(|()| {
            let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            // Without a log the volume is whole already: nothing to mark.
            let Some(l) = log.as_mut() else { return Ok(()) };
            for part in batch.chunks(MARKS_PER_RECORD) {
                let payload: Vec<u8> = part.iter().flat_map(|i| i.to_le_bytes()).collect();
                l.append(&payload)?;
            }
            Ok(())
        });
        let mut m = self.marks();
        let batch = std::mem::take(&mut m.in_flush);
        if flushed.is_err() {
            m.pending.extend(batch);
        }
        flushed
    }

    /// [`Hydration::install_locked`] under the fetched blocks' locks. Blocking.
    pub(super) fn lock_and_install<D: AsRef<[u8]>>(
        &self,
        fetched: &[(u64, D)],
    ) -> Result<Vec<u64>, ChunkNodeError> {
        let _g = self.locks.lock(fetched.iter().map(|(i, _)| *i));
        self.install_locked(fetched, &[], None)
    }

    /// Makes `blocks` local now (a read, or a copy, needs their bytes).
    /// Returns the bytes of the blocks this call installed, ascending (see
    /// [`Hydration::install_locked`]); a caller may serve those from them
    /// instead of reading the file back. Other blocks must be read from the
    /// file.
    pub async fn ensure(
        self: &Arc<Self>,
        blocks: &[u64],
    ) -> Result<Vec<(u64, Bytes)>, ChunkNodeError> {
        // A block the hydrator is fetching or installing is not a random
        // read's: with zero blocks left out of its rounds, a sequential
        // reader catching up with it can be more than NEAR_BLOCKS from the
        // hint while reading the round being installed.
        let first = blocks.first().copied();
        if let Some(first) = first.filter(|i| !self.is_hydrated(*i) && !self.being_fetched(*i)) {
            self.pressure.note(first, self.hint.load(Ordering::Relaxed));
        }
        if let Some(last) = blocks.iter().max() {
            self.hint.store(last + 1, Ordering::Relaxed);
        }
        let fetched = if blocks.iter().all(|i| self.is_hydrated(*i)) {
            Vec::new()
        } else {
            self.fetch(blocks).await?
        };
        if fetched.is_empty() {
            return Ok(fetched);
        }
        self.install(fetched).await
    }

    /// Installs `fetched` under its block locks on the blocking pool; keeps
    /// the blocks it wrote.
    async fn install<D: AsRef<[u8]> + Send + 'static>(
        self: &Arc<Self>,
        mut fetched: Vec<(u64, D)>,
    ) -> Result<Vec<(u64, D)>, ChunkNodeError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let installed = me.lock_and_install(&fetched)?;
            fetched.retain(|(i, _)| installed.binary_search(i).is_ok());
            fetched.sort_unstable_by_key(|(i, _)| *i);
            Ok(fetched)
        })
        .await?
    }

    /// Drops the state files once every block is local; from then on the
    /// volume is whole. Blocking.
    pub(super) fn finish(&self) -> Result<(), ChunkNodeError> {
        let _flushing = self.flushing.lock().unwrap_or_else(|e| e.into_inner());
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if log.is_some() {
            self.sync_volume(true)?;
            remove_file(&map_path(&self.dir))?;
            crate::disk::files::fsync_dir(&self.dir)?;
            *log = None;
        }
        // The map is gone: the volume is whole from here on.
        self.marks().pending.clear();
        self.cache.clear();
        self.inflight.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.whole.store(true, Ordering::Release);
        remove_file(&ids_path(&self.dir))?;
        remove_file(&log_path(&self.dir))?;
        tracing::info!(dir = %self.dir.display(), "volume fully hydrated");
        Ok(())
    }
}
