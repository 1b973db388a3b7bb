//! One live volume: its I/O paths (read, write, write-zeroes, trim, flush)
//! and what they must do around freezes, change tracking and hydration.
//! See [`crate::volume`] for the design.

use crate::disk::sparse;
use crate::disk::volfile::VolumeFile;
use crate::error::ChunkNodeError;
use crate::volume::blocks::{block_of, block_range, blocks_in, BlockLocks};
use crate::volume::freeze::Freeze;
use crate::volume::hydration::Hydration;
use crate::volume::readahead::Readahead;
use crate::volume::tracking::Tracking;
use cairn_nbd::structured::ReadPiece;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::RwLock as Gate;

/// Counters of one volume.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VolumeStats {
    pub size_bytes: u64,
    pub copy_blocks_read: u64,
    pub tracking_known: bool,
    pub hydrated_blocks: u64,
    pub total_blocks: u64,
    pub pending_freezes: u64,
}

/// One live volume. I/O methods return `std::io::Error` so the NBD server
/// can map them to protocol errnos.
pub struct Volume {
    pub(crate) id: String,
    /// Bytes; only grows (ModifyVolume), under the exclusive gate.
    pub(crate) size: AtomicU64,
    pub(crate) path: PathBuf,
    pub(crate) state_dir: PathBuf,
    pub(crate) file: Arc<VolumeFile>,
    pub(crate) gate: Arc<Gate<()>>,
    pub(crate) deleted: AtomicBool,
    pub(crate) locks: Arc<BlockLocks>,
    pub(crate) tracking: Mutex<Tracking>,
    pub(crate) freezes: RwLock<Vec<Arc<Freeze>>>,
    pub(crate) copy_blocks_read: AtomicU64,
    pub(crate) hydration: Option<Arc<Hydration>>,
    pub(crate) readahead: Readahead,
}

fn gone(id: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("volume {id} was deleted"))
}

fn io_err(e: ChunkNodeError) -> io::Error {
    match e {
        ChunkNodeError::Io { source, .. } => source,
        other => io::Error::other(other),
    }
}

impl Volume {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn check(&self) -> io::Result<()> {
        if self.deleted.load(Ordering::Acquire) {
            return Err(gone(&self.id));
        }
        Ok(())
    }

    pub(crate) fn tracking(&self) -> std::sync::MutexGuard<'_, Tracking> {
        self.tracking.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn pending(&self) -> Vec<Arc<Freeze>> {
        self.freezes.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The hydration state while the volume is still being restored.
    pub(crate) fn hydrating(&self) -> Option<&Arc<Hydration>> {
        self.hydration.as_ref().filter(|h| !h.is_complete())
    }

    pub fn stats(&self) -> VolumeStats {
        let total = blocks_in(self.size());
        let (hydrated_blocks, total_blocks) =
            self.hydration.as_ref().map(|h| h.progress()).unwrap_or((total, total));
        VolumeStats {
            size_bytes: self.size(),
            copy_blocks_read: self.copy_blocks_read.load(Ordering::Relaxed),
            tracking_known: self.tracking().known(),
            hydrated_blocks,
            total_blocks,
            pending_freezes: self.pending().len() as u64,
        }
    }

    /// Reads `[offset, offset + len)`. On a hydrating volume, the blocks this
    /// read had to fetch are served from the fetched bytes (what it just
    /// installed); everything else is read from the file.
    pub async fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.check()?;
        let mut fetched = Vec::new();
        if len > 0 {
            if let Some(h) = self.hydrating() {
                let blocks: Vec<u64> =
                    (block_of(offset)..=block_of(offset + len as u64 - 1)).collect();
                fetched = h.ensure(&blocks).await.map_err(io_err)?;
            }
        }
        let (file, size) = (self.file.clone(), self.size());
        tokio::task::spawn_blocking(move || {
            let end = offset + len as u64;
            let mut buf = vec![0u8; len];
            // `fetched` is ascending; the file fills the gaps between.
            let mut pos = offset;
            for (i, data) in &fetched {
                let (bs, be) = block_range(*i, size);
                let (s, e) = (bs.max(offset), be.min(end));
                if s >= e {
                    continue;
                }
                if pos < s {
                    file.read_data_at(
                        &mut buf[(pos - offset) as usize..(s - offset) as usize],
                        pos,
                    )?;
                }
                // Past the fetched bytes the block is zero, as `buf` already is.
                let data = data.as_ref();
                let from = ((s - bs) as usize).min(data.len());
                let to = ((e - bs) as usize).min(data.len());
                let at = (s - offset) as usize;
                buf[at..at + (to - from)].copy_from_slice(&data[from..to]);
                pos = e;
            }
            if pos < end {
                file.read_data_at(&mut buf[(pos - offset) as usize..], pos)?;
            }
            Ok(buf)
        })
        .await
        .map_err(io::Error::other)?
    }

    /// `[offset, offset + len)` as runs `(start, end, zero)` in order: zero
    /// where the file has a hole and the block is local. A block not yet
    /// hydrated is data (it reads as its snapshot's bytes, fetched then).
    /// With `max_extents`, the file is walked only that far, and the runs
    /// may stop short of the range's end.
    pub async fn allocation(
        &self,
        offset: u64,
        len: u64,
        max_extents: Option<usize>,
    ) -> io::Result<Vec<(u64, u64, bool)>> {
        self.check()?;
        let end = offset.saturating_add(len).min(self.size());
        if end <= offset {
            return Ok(Vec::new());
        }
        let size = self.size();
        let missing: Vec<(u64, u64)> = match self.hydrating() {
            Some(h) => (block_of(offset)..=block_of(end - 1))
                .filter(|i| !h.is_hydrated(*i))
                .map(|i| block_range(i, size))
                .collect(),
            None => Vec::new(),
        };
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || {
            let max = max_extents.unwrap_or(usize::MAX);
            let (mut data, known) = file.data_extents_upto(offset, end, max)?;
            data.extend(missing);
            Ok(sparse::runs(offset, known, data))
        })
        .await
        .map_err(io::Error::other)?
    }

    /// A client is about to read `[offset, offset + len)`: see
    /// [`crate::volume::readahead`].
    pub fn note_read(&self, offset: u64, len: u64) {
        let end = offset.saturating_add(len).min(self.size());
        self.readahead.note(&self.file, self.size(), self.hydrating(), offset, end);
    }

    /// [`Volume::read`] as pieces: data runs with their bytes, and holes
    /// (zero runs, per [`Volume::allocation`]) by their length only.
    ///
    /// When every block of the range is local (always, once a volume is
    /// whole) the extents are found and the data read in one trip to the
    /// blocking pool: a sequential reader such as `qemu-img` waits for each
    /// reply before asking again, and every hand-off between threads is a
    /// wake-up on its path.
    pub async fn read_pieces(&self, offset: u64, len: u64) -> io::Result<Vec<ReadPiece>> {
        let end = offset.saturating_add(len).min(self.size());
        let local = match self.hydrating() {
            Some(h) => {
                end <= offset || (block_of(offset)..=block_of(end - 1)).all(|i| h.is_hydrated(i))
            }
            None => true,
        };
        if local {
            self.check()?;
            let file = self.file.clone();
            return tokio::task::spawn_blocking(move || {
                let (data, _) = file.data_extents_upto(offset, end, usize::MAX)?;
                let mut pieces = Vec::new();
                for (start, stop, zero) in sparse::runs(offset, end, data) {
                    let n = (stop - start) as usize;
                    pieces.push(match zero {
                        true => ReadPiece::Hole { offset: start, len: n as u32 },
                        false => {
                            let mut data = vec![0u8; n];
                            file.read_exact_at(&mut data, start)?;
                            ReadPiece::Data { offset: start, data }
                        }
                    });
                }
                Ok(pieces)
            })
            .await
            .map_err(io::Error::other)?;
        }
        let mut pieces = Vec::new();
        for (start, end, zero) in self.allocation(offset, len, None).await? {
            let n = (end - start) as usize;
            pieces.push(match zero {
                true => ReadPiece::Hole { offset: start, len: n as u32 },
                false => ReadPiece::Data { offset: start, data: self.read(start, n).await? },
            });
        }
        Ok(pieces)
    }

    /// Runs a mutation of `[offset, offset + len)` under the shared gate (see
    /// the module comment): hydrates what it needs, saves frozen content for
    /// pending freezes, stamps change tracking, then runs `op`; with `fua`,
    /// the data is durable before it returns.
    async fn mutate<F>(self: &Arc<Self>, offset: u64, len: u64, fua: bool, op: F) -> io::Result<()>
    where
        F: FnOnce(&VolumeFile) -> io::Result<()> + Send + 'static,
    {
        let guard = self.gate.clone().read_owned().await;
        self.check()?;
        if len == 0 {
            return Ok(());
        }
        let (first, last) = (block_of(offset), block_of(offset + len - 1));
        let freezes = self.pending();
        let end = offset + len;
        let whole = |i: u64| {
            let (s, e) = block_range(i, self.size());
            offset <= s && e <= end
        };
        // Blocks not yet local whose old content matters: partly written, or
        // needed by a freeze. Fetched before taking the block locks.
        let mut fetched = Vec::new();
        let mut overwritten = Vec::new();
        if let Some(h) = self.hydrating() {
            let mut need = Vec::new();
            for i in first..=last {
                if h.is_hydrated(i) {
                    continue;
                }
                if !whole(i) || freezes.iter().any(|f| f.needs_save(i)) {
                    need.push(i);
                } else {
                    overwritten.push(i);
                }
            }
            fetched = h.fetch(&need).await.map_err(io_err)?;
        }
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let _held = guard;
            let _locks = me.locks.lock_range(first, last);
            if let Some(h) = me.hydrating() {
                h.install_locked(&fetched, &overwritten, Some((first, last))).map_err(io_err)?;
                if let Some(i) = (first..=last).find(|i| !h.is_hydrated(*i)) {
                    return Err(io::Error::other(format!("block {i} is not local")));
                }
            }
            for i in first..=last {
                let savers: Vec<&Arc<Freeze>> =
                    freezes.iter().filter(|f| f.needs_save(i)).collect();
                if savers.is_empty() {
                    continue;
                }
                let (s, e) = block_range(i, me.size());
                let mut old = vec![0u8; (e - s) as usize];
                me.file.read_exact_at(&mut old, s)?;
                for f in savers {
                    f.save(i, &old).map_err(io_err)?;
                }
            }
            me.tracking().stamp(first, last);
            op(&me.file)?;
            if fua {
                me.file.sync_data().inspect_err(|_| me.sync_failed())?;
            }
            Ok(())
        })
        .await
        .map_err(io::Error::other)?
    }

    pub async fn write(self: &Arc<Self>, offset: u64, data: Vec<u8>, fua: bool) -> io::Result<()> {
        let len = data.len() as u64;
        self.mutate(offset, len, fua, move |f| f.write_all_at(&data, offset)).await
    }

    /// Makes the range read as zeroes; `allocate` keeps it allocated
    /// (NBD's NO_HOLE), otherwise it is deallocated.
    pub async fn write_zeroes(
        self: &Arc<Self>,
        offset: u64,
        len: u64,
        allocate: bool,
        fua: bool,
    ) -> io::Result<()> {
        self.mutate(offset, len, fua, move |f| {
            if allocate {
                f.write_zeroes(offset, len)
            } else {
                f.punch_hole(offset, len)
            }
        })
        .await
    }

    /// Discards the range (it then reads as zeroes).
    pub async fn trim(self: &Arc<Self>, offset: u64, len: u64, fua: bool) -> io::Result<()> {
        self.mutate(offset, len, fua, move |f| f.punch_hole(offset, len)).await
    }

    /// A sync of the file failed: what it covered may be lost, so a restore
    /// in progress must not mark blocks local on the strength of later syncs.
    fn sync_failed(&self) {
        if let Some(h) = self.hydrating() {
            h.poison();
        }
    }

    /// Makes every completed write durable.
    pub async fn flush(&self) -> io::Result<()> {
        self.check()?;
        let file = self.file.clone();
        let synced = tokio::task::spawn_blocking(move || file.sync_all());
        synced.await.map_err(io::Error::other)?.inspect_err(|_| self.sync_failed())
    }

    /// The pending freeze of snapshot `snap`.
    pub(crate) fn freeze_of(&self, snap: &str) -> Option<Arc<Freeze>> {
        self.pending().into_iter().find(|f| f.snapshot_id() == snap)
    }

    /// Reads the frozen content of `blocks` of `freeze` (each under its
    /// lock), counting them as read by a copy.
    pub(crate) async fn read_frozen(
        self: &Arc<Self>,
        freeze: &Arc<Freeze>,
        blocks: Vec<u64>,
    ) -> Result<Vec<(u64, Vec<u8>)>, ChunkNodeError> {
        if let Some(h) = self.hydrating() {
            // Saved blocks come from the overlay; the rest must be local.
            h.ensure(&blocks).await?;
        }
        let (me, freeze) = (self.clone(), freeze.clone());
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::with_capacity(blocks.len());
            for i in blocks {
                let data = {
                    let _g = me.locks.lock([i]);
                    freeze.read_block(&me.file, i)?
                };
                me.copy_blocks_read.fetch_add(1, Ordering::Relaxed);
                out.push((i, data));
            }
            Ok(out)
        })
        .await?
    }
}
