//! The chunk store: immutable blocks named by their BLAKE3, appended to pack
//! files under `data_dir/packs/`, with an in-memory index rebuilt at open.
//!
//! Why packs and not a file per chunk: on ext4 a file per 512 KiB chunk (create
//! a temp file, write, fsync, rename, fsync the directory) ran at 130 to 380
//! MiB/s here, bound by inode creation and two journal commits per chunk;
//! appending to a pack with one `fdatasync` per batch ran at 1.2 GiB/s (see
//! the README's snapshot benchmark). restic and borg store packs for the
//! same reason.
//!
//! Record: magic (4 bytes), payload length (4, LE), chunk id (32), payload,
//! zeros up to the next multiple of [`ALIGN`](crate::packfile::ALIGN). The id is the BLAKE3 of the
//! payload, so every record checks itself. Records are aligned so that a
//! batch is one `O_DIRECT` write: on this kind of machine (a VM whose page
//! cache pages are costly to allocate) copying chunks into the page cache was
//! the largest cost of a snapshot; direct writes skip it. Where the file
//! system refuses `O_DIRECT`, writes go through the page cache.
//!
//! Discipline:
//! - One committer thread per store appends. It takes every put waiting (up
//!   to [`BATCH_BYTES`]), verifies that each payload hashes to its id,
//!   writes the new ones, `fdatasync`s once, and only then indexes them and
//!   acknowledges: a put is durable when it returns. Puts are put-if-absent.
//! - The pack being appended is `NNNNNNNN.open`; once it passes
//!   [`PACK_BYTES`] (after its last sync) it is renamed to `NNNNNNNN.pack`
//!   (sealed). Opening the store walks the headers of sealed packs and
//!   verifies every record of open ones (a crash may have left a torn or
//!   unsynced tail there, never acknowledged): the first bad record and all
//!   after it are cut off, then the pack is sealed. New puts go to a new pack.
//! - Every read verifies the hash. A corrupt record is recorded in
//!   `tombstones.log` (so it stays out of the index across restarts), counted,
//!   and reported as missing, so that repair (or the next put) stores the
//!   chunk again in a new record.
//! - A store written by earlier versions (one file per chunk under
//!   `data_dir/chunks/`) is moved into packs at open, verified, and the old
//!   files removed once the packs are durable.

use crate::error::ChunkNodeError;
use crate::files::fsync_dir;
use crate::packfile::{align_up, AlignedBuf, Pack, HEADER};
use crate::reclog::RecordLog;
use bytes::Bytes;
use cairn_core::ChunkId;
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use tokio::sync::oneshot;

const MAGIC: u32 = 0x4b50_4331; // "1CPK"
/// Largest chunk a store takes (blocks are 512 KiB; manifest pages smaller).
pub const MAX_CHUNK: usize = 16 << 20;
/// A pack is sealed once it holds this much.
const PACK_BYTES: u64 = 256 << 20;
/// Most payload bytes one commit (one `fdatasync`) takes.
const BATCH_BYTES: usize = 32 << 20;

/// Counters of the store, kept in memory and rebuilt at open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub chunks: u64,
    pub bytes: u64,
    /// Corrupt records found (and tombstoned) since the store was opened.
    pub corrupt: u64,
}

/// Where a chunk's record starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Loc {
    pack: u32,
    /// Offset of the record header.
    offset: u64,
    len: u32,
}

#[derive(Clone)]
pub struct ChunkStore {
    shared: Arc<Shared>,
    queue: mpsc::Sender<Put>,
}

struct Shared {
    dir: PathBuf,
    index: RwLock<HashMap<ChunkId, Loc>>,
    packs: RwLock<HashMap<u32, Arc<Pack>>>,
    tombstones: Mutex<RecordLog>,
    chunks: AtomicU64,
    bytes: AtomicU64,
    corrupt: AtomicU64,
}

/// One put waiting for the committer.
struct Put {
    id: ChunkId,
    data: Bytes,
    /// The caller hashed `data` itself; the committer need not again.
    hashed: bool,
    reply: oneshot::Sender<Result<bool, ChunkNodeError>>,
}

fn pack_path(dir: &Path, n: u32, sealed: bool) -> PathBuf {
    dir.join(format!("{n:08}.{}", if sealed { "pack" } else { "open" }))
}

fn header(id: &ChunkId, len: usize) -> [u8; HEADER as usize] {
    let mut h = [0u8; HEADER as usize];
    h[..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&(len as u32).to_le_bytes());
    h[8..].copy_from_slice(&id.0);
    h
}

/// Decodes a record header: `(id, payload length)`, or `None` if it is not one.
fn parse_header(h: &[u8; HEADER as usize]) -> Option<(ChunkId, u32)> {
    let magic = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    let mut id = [0u8; 32];
    id.copy_from_slice(&h[8..]);
    (magic == MAGIC && len as usize <= MAX_CHUNK).then_some((ChunkId(id), len))
}

impl ChunkStore {
    /// Opens (creating if needed) the store under `data_dir`: indexes its
    /// packs, repairs and seals packs a crash left open, moves a legacy
    /// file-per-chunk store into packs, and starts the committer.
    pub async fn open(data_dir: &Path) -> Result<ChunkStore, ChunkNodeError> {
        let data_dir = data_dir.to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(&data_dir, PACK_BYTES)).await?
    }

    fn open_blocking(data_dir: &Path, pack_bytes: u64) -> Result<ChunkStore, ChunkNodeError> {
        let dir = data_dir.join("packs");
        fs::create_dir_all(&dir).map_err(|e| ChunkNodeError::io("create", &dir, e))?;
        let mut dead = HashSet::new();
        let tombstones = RecordLog::open(&dir.join("tombstones.log"), |_, p| {
            if p.len() == 12 {
                let pack = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
                let offset = u64::from_le_bytes(p[4..12].try_into().unwrap_or([0; 8]));
                dead.insert((pack, offset));
            }
            Ok(())
        })?;
        let mut found: Vec<(u32, bool)> = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| ChunkNodeError::io("list", &dir, e))? {
            let name = entry.map_err(|e| ChunkNodeError::io("list", &dir, e))?.file_name();
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
                None if name == "tombstones.log" => {}
                None => tracing::warn!(file = %name, "stray file in the chunk store"),
            }
        }
        found.sort_unstable();
        let mut index = HashMap::new();
        let mut packs = HashMap::new();
        let (mut chunks, mut bytes) = (0u64, 0u64);
        for &(n, sealed) in &found {
            let path = pack_path(&dir, n, sealed);
            let file = File::options()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| ChunkNodeError::io("open", &path, e))?;
            for loc in scan_pack(&file, &path, n, !sealed)? {
                let (id, loc) = loc;
                if dead.contains(&(n, loc.offset)) || index.contains_key(&id) {
                    continue;
                }
                index.insert(id, loc);
                chunks += 1;
                bytes += u64::from(loc.len);
            }
            if !sealed {
                let to = pack_path(&dir, n, true);
                fs::rename(&path, &to).map_err(|e| ChunkNodeError::io("seal", &path, e))?;
                fsync_dir(&dir)?;
            }
            let path = pack_path(&dir, n, true);
            packs.insert(n, Arc::new(Pack::new(file, &path)));
        }
        let next = found.last().map_or(0, |(n, _)| n + 1);
        tracing::info!(chunks, bytes, packs = found.len(), dir = %dir.display(), "chunk store opened");
        let shared = Arc::new(Shared {
            dir,
            index: RwLock::new(index),
            packs: RwLock::new(packs),
            tombstones: Mutex::new(tombstones),
            chunks: AtomicU64::new(chunks),
            bytes: AtomicU64::new(bytes),
            corrupt: AtomicU64::new(0),
        });
        let (queue, rx) = mpsc::channel();
        let committer = Committer {
            shared: shared.clone(),
            next,
            active: None,
            pack_bytes,
            buf: AlignedBuf::default(),
        };
        std::thread::Builder::new()
            .name("chunk-committer".into())
            .spawn(move || committer.run(rx))
            .map_err(|e| ChunkNodeError::io("start the committer for", data_dir, e))?;
        let store = ChunkStore { shared, queue };
        store.migrate_legacy(data_dir)?;
        Ok(store)
    }

    pub fn stats(&self) -> StoreStats {
        let s = &self.shared;
        StoreStats {
            chunks: s.chunks.load(Ordering::Relaxed),
            bytes: s.bytes.load(Ordering::Relaxed),
            corrupt: s.corrupt.load(Ordering::Relaxed),
        }
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
        let put = Put { id, data, hashed, reply };
        self.queue.send(put).map_err(|_| ChunkNodeError::StoreStopped)?;
        Ok(rx)
    }

    /// The verified bytes of `id`, or `None` when it is absent (or was corrupt).
    pub async fn get(&self, id: ChunkId) -> Result<Option<Vec<u8>>, ChunkNodeError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || shared.get(id)).await?
    }

    /// Whether each id is stored (contents are verified on read).
    pub async fn has(&self, ids: Vec<ChunkId>) -> Result<Vec<bool>, ChunkNodeError> {
        let index = self.shared.index.read().unwrap_or_else(|e| e.into_inner());
        Ok(ids.iter().map(|id| index.contains_key(id)).collect())
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

    /// Where `id`'s record lies: (pack path, payload offset). For tests that
    /// damage stored bytes.
    pub fn locate(&self, id: &ChunkId) -> Option<(PathBuf, u64)> {
        let loc = *self.shared.index.read().unwrap_or_else(|e| e.into_inner()).get(id)?;
        let dir = &self.shared.dir;
        let sealed = pack_path(dir, loc.pack, true);
        let path = if sealed.exists() { sealed } else { pack_path(dir, loc.pack, false) };
        Some((path, loc.offset + HEADER))
    }
}

/// The records of one pack, in order. With `verify`, payloads are read and
/// hashed and the pack is cut before the first bad record (a crash's torn
/// tail); otherwise only headers are read, and a bad header ends the walk.
fn scan_pack(
    file: &File,
    path: &Path,
    pack: u32,
    verify: bool,
) -> Result<Vec<(ChunkId, Loc)>, ChunkNodeError> {
    let size = file.metadata().map_err(|e| ChunkNodeError::io("stat", path, e))?.len();
    let mut out = Vec::new();
    let mut pos = 0u64;
    let mut h = [0u8; HEADER as usize];
    let mut payload = Vec::new();
    while pos + HEADER <= size {
        file.read_exact_at(&mut h, pos).map_err(|e| ChunkNodeError::io("read", path, e))?;
        let Some((id, len)) = parse_header(&h) else { break };
        let end = pos + HEADER + u64::from(len);
        if end > size {
            break;
        }
        let next = align_up(end).min(size);
        if verify {
            payload.resize(len as usize, 0);
            file.read_exact_at(&mut payload, pos + HEADER)
                .map_err(|e| ChunkNodeError::io("read", path, e))?;
            if ChunkId::of(&payload) != id {
                break;
            }
        }
        out.push((id, Loc { pack, offset: pos, len }));
        pos = next;
    }
    if pos < size {
        if verify {
            tracing::warn!(path = %path.display(), kept = pos, dropped = size - pos, "torn records at the end of a pack dropped");
            file.set_len(pos).map_err(|e| ChunkNodeError::io("truncate", path, e))?;
            file.sync_all().map_err(|e| ChunkNodeError::io("fsync", path, e))?;
        } else {
            tracing::error!(path = %path.display(), at = pos, "damaged record header; the rest of this pack is not indexed");
        }
    }
    Ok(out)
}

impl Shared {
    fn get(&self, id: ChunkId) -> Result<Option<Vec<u8>>, ChunkNodeError> {
        let Some(loc) = self.index.read().unwrap_or_else(|e| e.into_inner()).get(&id).copied()
        else {
            return Ok(None);
        };
        let pack = self.packs.read().unwrap_or_else(|e| e.into_inner()).get(&loc.pack).cloned();
        let Some(pack) = pack else { return Ok(None) };
        match pack.read_payload(loc.offset, loc.len as usize) {
            Ok(data) if ChunkId::of(&data) == id => return Ok(Some(data)),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
            Err(e) => {
                return Err(ChunkNodeError::io("read", pack_path(&self.dir, loc.pack, true), e))
            }
        }
        self.bury(id, loc)?;
        Ok(None)
    }

    /// Records that the record at `loc` is corrupt and forgets it.
    fn bury(&self, id: ChunkId, loc: Loc) -> Result<(), ChunkNodeError> {
        let mut payload = loc.pack.to_le_bytes().to_vec();
        payload.extend_from_slice(&loc.offset.to_le_bytes());
        self.tombstones.lock().unwrap_or_else(|e| e.into_inner()).append(&payload)?;
        let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
        if index.get(&id) == Some(&loc) {
            index.remove(&id);
            self.chunks.fetch_sub(1, Ordering::Relaxed);
            self.bytes.fetch_sub(u64::from(loc.len), Ordering::Relaxed);
            self.corrupt.fetch_add(1, Ordering::Relaxed);
            tracing::error!(chunk = %id, pack = loc.pack, offset = loc.offset, "corrupt chunk record tombstoned");
        }
        Ok(())
    }
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
struct Committer {
    shared: Arc<Shared>,
    next: u32,
    active: Option<Active>,
    /// Seal the active pack once it holds this much ([`PACK_BYTES`]).
    pack_bytes: u64,
    /// The batch being written, laid out as on disk.
    buf: AlignedBuf,
}

impl Committer {
    fn run(mut self, rx: mpsc::Receiver<Put>) {
        while let Ok(first) = rx.recv() {
            let mut size = first.data.len();
            let mut batch = vec![first];
            while size < BATCH_BYTES {
                match rx.try_recv() {
                    Ok(p) => {
                        size += p.data.len();
                        batch.push(p);
                    }
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
    }

    fn commit(&mut self, batch: Vec<Put>) {
        // (put, new) of the puts that hash right.
        let mut ok: Vec<(Put, bool)> = Vec::with_capacity(batch.len());
        let mut fresh = HashSet::new();
        {
            let index = self.shared.index.read().unwrap_or_else(|e| e.into_inner());
            for p in batch {
                if !p.hashed && ChunkId::of(&p.data) != p.id {
                    let _ = p.reply.send(Err(ChunkNodeError::HashMismatch(p.id)));
                    continue;
                }
                let new = !index.contains_key(&p.id) && fresh.insert(p.id);
                ok.push((p, new));
            }
        }
        match self.append(&ok) {
            Ok(locs) => {
                {
                    let mut index = self.shared.index.write().unwrap_or_else(|e| e.into_inner());
                    for (id, loc) in locs {
                        index.insert(id, loc);
                        self.shared.chunks.fetch_add(1, Ordering::Relaxed);
                        self.shared.bytes.fetch_add(u64::from(loc.len), Ordering::Relaxed);
                    }
                }
                // Sealed before answering, so that once a put returns the
                // committer is idle and the store may be reopened.
                if let Err(e) = self.seal_if_full() {
                    tracing::error!(error = %e, "cannot seal a full pack; starting another");
                    self.active = None;
                }
                for (p, new) in ok {
                    let _ = p.reply.send(Ok(new));
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

    /// Writes the new chunks of `puts` as one aligned write and syncs them.
    /// Returns their locations.
    fn append(&mut self, puts: &[(Put, bool)]) -> Result<Vec<(ChunkId, Loc)>, ChunkNodeError> {
        let new: Vec<&Put> = puts.iter().filter(|(_, new)| *new).map(|(p, _)| p).collect();
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
            let pack = Arc::new(Pack::new(file, &path));
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
        self.active = None;
        Ok(())
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
