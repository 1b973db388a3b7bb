//! The one thread that appends to a store's packs (group commit).
//!
//! It takes every put waiting (up to [`BATCH_BYTES`]), verifies that each
//! payload hashes to its id, writes the new ones as one aligned write,
//! `fdatasync`s once, and only then indexes them and acknowledges: a put is
//! durable when it returns. Puts are put-if-absent; a put of a chunk already
//! stored stamps it with a fresh touch sequence before it is acknowledged
//! (see [`crate::store::index`]), new chunks are indexed with one. Once the
//! pack being appended passes its size limit (after its last sync) it is
//! sealed (renamed from `.open` to `.pack`) and a new one is started.
//!
//! A relocation ([`Put::relocate`], from compaction) is written even though
//! its id is indexed; once durable, the entry is switched to the new record
//! only if it still points at the old one (a sweep may have removed it, a
//! corrupt read buried it), keeping its touch sequence.

use crate::disk::direct::{align_up, AlignedBuf};
use crate::disk::files::fsync_dir;
use crate::error::ChunkNodeError;
use crate::store::index::Entry;
use crate::store::pack::Pack;
use crate::store::packfile::{header, pack_path, Loc, HEADER};
use crate::store::shared::Shared;
use crate::store::tier::Uploads;
use bytes::Bytes;
use cairn_core::ChunkId;
use std::collections::hash_map::Entry as Slot;
use std::collections::HashSet;
use std::fs::{self, File};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use tokio::sync::oneshot;

/// Most payload bytes one commit (one `fdatasync`) takes.
const BATCH_BYTES: usize = 32 << 20;

/// One put waiting for the committer.
pub(crate) struct Put {
    pub(crate) id: ChunkId,
    pub(crate) data: Bytes,
    /// The caller hashed `data` itself; the committer need not again.
    pub(crate) hashed: bool,
    /// Compaction moves the record at this location: written whatever the
    /// index holds; the reply tells whether the entry was switched to it.
    pub(crate) relocate: Option<Loc>,
    pub(crate) reply: oneshot::Sender<Result<bool, ChunkNodeError>>,
}

/// What the committer is asked to do.
pub(crate) enum Request {
    Put(Put),
    /// Seal the active pack now (compaction, so that dead records in it can
    /// be given back); answered once it is sealed, or at once if there is
    /// none.
    Seal(oneshot::Sender<Result<(), ChunkNodeError>>),
}

/// The pack being appended.
struct Active {
    n: u32,
    /// Opened with `O_DIRECT` where the file system allows it.
    file: File,
    direct: bool,
    end: u64,
}

/// The one thread that appends to packs (group commit).
pub(crate) struct Committer {
    shared: Arc<Shared>,
    next: u32,
    active: Option<Active>,
    /// Seal the active pack once it holds this much ([`PACK_BYTES`]).
    pack_bytes: u64,
    /// The batch being written, laid out as on disk.
    buf: AlignedBuf,
    /// Where sealed packs go with a capacity tier.
    uploads: Option<Uploads>,
}

impl Committer {
    /// A committer for the store `shared`, starting new packs at number
    /// `next`, sealing them at `pack_bytes` and sending each sealed one to
    /// `uploads`, if given.
    pub(crate) fn new(
        shared: Arc<Shared>,
        next: u32,
        pack_bytes: u64,
        uploads: Option<Uploads>,
    ) -> Committer {
        Committer { shared, next, active: None, pack_bytes, buf: AlignedBuf::default(), uploads }
    }

    /// Commits puts from `rx` until every sender is gone.
    pub(crate) fn run(mut self, rx: mpsc::Receiver<Request>) {
        let mut next = rx.recv().ok();
        while let Some(request) = next.take() {
            let first = match request {
                Request::Put(p) => p,
                Request::Seal(reply) => {
                    let _ = reply.send(self.seal_now());
                    next = rx.recv().ok();
                    continue;
                }
            };
            let mut size = first.data.len();
            let mut batch = vec![first];
            while size < BATCH_BYTES {
                match rx.try_recv() {
                    Ok(Request::Put(p)) => {
                        size += p.data.len();
                        batch.push(p);
                    }
                    // A seal waits for the puts before it.
                    Ok(seal) => {
                        next = Some(seal);
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.commit(batch);
            if next.is_none() {
                next = rx.recv().ok();
            }
        }
    }

    /// Seals the active pack whatever its size, if it holds anything.
    fn seal_now(&mut self) -> Result<(), ChunkNodeError> {
        match &self.active {
            Some(a) if a.end > 0 => {
                let limit = std::mem::replace(&mut self.pack_bytes, 0);
                let sealed = self.seal_if_full();
                self.pack_bytes = limit;
                sealed
            }
            _ => Ok(()),
        }
    }

    fn commit(&mut self, batch: Vec<Put>) {
        // (put, to write) of the puts that hash right.
        let mut ok: Vec<(Put, bool)> = Vec::with_capacity(batch.len());
        let mut fresh = HashSet::new();
        for p in batch {
            if !p.hashed && ChunkId::of(&p.data) != p.id {
                let _ = p.reply.send(Err(ChunkNodeError::HashMismatch(p.id)));
                continue;
            }
            // A put of a stored chunk touches it (before the answer).
            let write =
                p.relocate.is_some() || (!self.shared.index.touch(&p.id) && fresh.insert(p.id));
            ok.push((p, write));
        }
        match self.append(&ok) {
            Ok(locs) => {
                let mut locs = locs.into_iter();
                let answers: Vec<bool> = ok
                    .iter()
                    .map(|(p, write)| match write.then(|| locs.next()).flatten() {
                        Some((_, loc)) => self.index(p, loc),
                        None => false,
                    })
                    .collect();
                // Sealed before answering, so that once a put returns the
                // committer is idle and the store may be reopened.
                if let Err(e) = self.seal_if_full() {
                    tracing::error!(error = %e, "cannot seal a full pack; starting another");
                    self.active = None;
                }
                for ((p, _), answer) in ok.into_iter().zip(answers) {
                    let _ = p.reply.send(Ok(answer));
                }
            }
            Err(e) => {
                // The pack may hold a partial record now: leave it (opening
                // the store verifies it) and append to a new one.
                tracing::error!(error = %e, "chunk store write failed");
                self.active = None;
                for (p, _) in ok {
                    let _ = p.reply.send(Err(ChunkNodeError::io(
                        "append to",
                        &self.shared.dir,
                        std::io::Error::other(e.to_string()),
                    )));
                }
            }
        }
    }

    /// Indexes the durable record `loc` of `p`; returns the put's answer
    /// (newly stored, or relocated).
    fn index(&self, p: &Put, loc: Loc) -> bool {
        let index = &self.shared.index;
        let mut shard = index.write(&p.id);
        match (p.relocate, shard.entry(p.id)) {
            (None, Slot::Vacant(slot)) => {
                slot.insert(Entry::new(loc, index.stamp()));
                self.shared.chunks.fetch_add(1, Ordering::Relaxed);
                self.shared.bytes.fetch_add(u64::from(loc.len), Ordering::Relaxed);
                true
            }
            (Some(old), Slot::Occupied(mut slot)) if slot.get().loc == old => {
                slot.get_mut().loc = loc;
                true
            }
            _ => false,
        }
    }

    /// Writes the new chunks of `puts` as one aligned write and syncs them.
    /// Returns their locations.
    fn append(&mut self, puts: &[(Put, bool)]) -> Result<Vec<(ChunkId, Loc)>, ChunkNodeError> {
        let new: Vec<&Put> = puts.iter().filter(|(_, write)| *write).map(|(p, _)| p).collect();
        if new.is_empty() {
            return Ok(Vec::new());
        }
        let size: u64 = new.iter().map(|p| align_up(HEADER + p.data.len() as u64)).sum();
        let dir = self.shared.dir.clone();
        let mut buf = std::mem::take(&mut self.buf);
        let written = self.write_batch(&mut buf, &new, size as usize, &dir);
        self.buf = buf;
        written
    }

    fn write_batch(
        &mut self,
        buf: &mut AlignedBuf,
        new: &[&Put],
        size: usize,
        dir: &Path,
    ) -> Result<Vec<(ChunkId, Loc)>, ChunkNodeError> {
        let active = self.active()?;
        let path = pack_path(dir, active.n, false);
        buf.reset(size);
        let mut locs = Vec::with_capacity(new.len());
        for p in new {
            let offset = active.end + buf.len() as u64;
            buf.push(&header(&p.id, p.data.len()));
            buf.push(&p.data);
            buf.pad();
            locs.push((p.id, Loc { pack: active.n, offset, len: p.data.len() as u32 }));
        }
        let mut wrote = active.file.write_all_at(buf.bytes(), active.end);
        if active.direct
            && wrote.as_ref().is_err_and(|e| e.raw_os_error() == Some(nix::libc::EINVAL))
        {
            // The file system takes O_DIRECT at open but not this write:
            // go through the page cache from now on.
            tracing::warn!(path = %path.display(), "direct write refused; using buffered writes");
            active.file = File::options()
                .write(true)
                .open(&path)
                .map_err(|e| ChunkNodeError::io("open", &path, e))?;
            active.direct = false;
            wrote = active.file.write_all_at(buf.bytes(), active.end);
        }
        wrote.map_err(|e| ChunkNodeError::io("write", &path, e))?;
        active.file.sync_data().map_err(|e| ChunkNodeError::io("fsync", &path, e))?;
        active.end += buf.len() as u64;
        Ok(locs)
    }

    /// The pack to append to, created (and made durable) if needed.
    fn active(&mut self) -> Result<&mut Active, ChunkNodeError> {
        if self.active.is_none() {
            let n = self.next;
            self.next += 1;
            let path = pack_path(&self.shared.dir, n, false);
            let file = File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| ChunkNodeError::io("create", &path, e))?;
            fsync_dir(&self.shared.dir)?;
            let direct = File::options().write(true).custom_flags(nix::libc::O_DIRECT).open(&path);
            let (writer, direct) = match direct {
                Ok(f) => (f, true),
                Err(e) => {
                    tracing::info!(path = %path.display(), error = %e, "no direct I/O here; using buffered writes");
                    (file.try_clone().map_err(|e| ChunkNodeError::io("open", &path, e))?, false)
                }
            };
            let pack = Arc::new(Pack::new(file, &path, false));
            self.shared.packs.write().unwrap_or_else(|e| e.into_inner()).insert(n, pack);
            self.active = Some(Active { n, file: writer, direct, end: 0 });
        }
        Ok(self.active.as_mut().expect("just set"))
    }

    fn seal_if_full(&mut self) -> Result<(), ChunkNodeError> {
        let Some(a) = self.active.as_ref().filter(|a| a.end >= self.pack_bytes) else {
            return Ok(());
        };
        let from = pack_path(&self.shared.dir, a.n, false);
        fs::rename(&from, pack_path(&self.shared.dir, a.n, true))
            .map_err(|e| ChunkNodeError::io("seal", &from, e))?;
        fsync_dir(&self.shared.dir)?;
        if let Some(pack) = self.shared.pack(a.n) {
            pack.seal();
        }
        if let Some(uploads) = &self.uploads {
            uploads.send(a.n);
        }
        self.active = None;
        Ok(())
    }
}
