//! What a store's handles and its committer share: the index of where each
//! chunk lies, the packs open for reading, the tombstones of corrupt records,
//! the queue of chunks to repair and the counters; and the verified read,
//! which buries a corrupt record so that it is reported missing from then
//! on and queues its id for repair from a replica.
//!
//! A read looks the chunk up, then its pack. Compaction
//! ([`crate::store::compact`]) switches an entry to its new record before it
//! drops the old pack from `packs`, so a read that finds its pack gone
//! looks the chunk up again: it moved (or was swept). A read that already
//! holds the old pack keeps reading the unlinked file.

use crate::disk::reclog::RecordLog;
use crate::error::ChunkNodeError;
use crate::store::index::Index;
use crate::store::pack::Pack;
use crate::store::packfile::{pack_path, Loc};
use crate::store::repair_queue::RepairQueue;
use cairn_core::ChunkId;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Times a read looks a chunk up again after its pack went away.
const MOVED_RETRIES: usize = 64;

pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) index: Index,
    pub(crate) packs: RwLock<HashMap<u32, Arc<Pack>>>,
    pub(crate) tombstones: Mutex<RecordLog>,
    pub(crate) chunks: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) corrupt: AtomicU64,
    /// Ids of buried chunks waiting for the repairer.
    pub(crate) repairs: Mutex<RepairQueue>,
    /// Chunks and payload bytes deleted by sweeps since the store was opened.
    pub(crate) gc_deleted: AtomicU64,
    pub(crate) gc_deleted_bytes: AtomicU64,
}

impl Shared {
    /// The verified bytes of `id`, or `None` when it is absent (or was corrupt).
    pub(crate) fn get(&self, id: ChunkId) -> Result<Option<Vec<u8>>, ChunkNodeError> {
        let mut loc = self.index.loc(&id);
        for _ in 0..MOVED_RETRIES {
            let Some(at) = loc else { return Ok(None) };
            let Some(pack) = self.pack(at.pack) else {
                // Compacted away: the entry moved (or the chunk was swept).
                let again = self.index.loc(&id);
                if again == loc {
                    tracing::error!(chunk = %id, pack = at.pack, "indexed chunk in a removed pack");
                    return Ok(None);
                }
                loc = again;
                continue;
            };
            let read = self.read(id, at, &pack);
            if !matches!(read, Ok(Some(_))) && !self.holds(at.pack, &pack) {
                // Compacted away while it was read (a remote pack's object
                // is gone at once; a local file stays readable): look again.
                loc = self.index.loc(&id);
                continue;
            }
            return read;
        }
        Err(ChunkNodeError::io(
            "read",
            &self.dir,
            std::io::Error::other("chunk kept moving between packs"),
        ))
    }

    /// Whether `pack` is still open as pack `n`.
    pub(crate) fn holds(&self, n: u32, pack: &Pack) -> bool {
        self.pack(n).is_some_and(|p| std::ptr::eq(Arc::as_ptr(&p), pack))
    }

    /// Pack `n`, if it is open.
    pub(crate) fn pack(&self, n: u32) -> Option<Arc<Pack>> {
        self.packs.read().unwrap_or_else(|e| e.into_inner()).get(&n).cloned()
    }

    /// The verified payload of `id`'s record at `loc` in `pack`; a corrupt
    /// record is buried and reported as `None`.
    pub(crate) fn read(
        &self,
        id: ChunkId,
        loc: Loc,
        pack: &Pack,
    ) -> Result<Option<Vec<u8>>, ChunkNodeError> {
        match pack.read_payload(&id, loc.offset, loc.len as usize) {
            Ok(data) if ChunkId::of(&data) == id => return Ok(Some(data)),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
            Err(e) => {
                return Err(ChunkNodeError::io("read", pack_path(&self.dir, loc.pack, true), e))
            }
        }
        // A pack removed while it was read is not rot (see `get`).
        if self.holds(loc.pack, pack) {
            self.bury(id, loc)?;
        }
        Ok(None)
    }

    /// Scrub's check of `id`'s record at `loc` in `pack`: header and payload
    /// read and verified, a bad record buried (and queued for repair).
    pub(crate) fn check(
        &self,
        id: ChunkId,
        loc: Loc,
        pack: &Pack,
    ) -> Result<Checked, ChunkNodeError> {
        let good = match pack.check(&id, loc) {
            Ok(good) => good,
            Err(_) if !self.holds(loc.pack, pack) => return Ok(Checked::Gone),
            Err(e) => {
                let path = pack_path(&self.dir, loc.pack, pack.sealed());
                return Err(ChunkNodeError::io("read", path, e));
            }
        };
        if good {
            Ok(Checked::Good)
        } else if self.holds(loc.pack, pack) && self.bury(id, loc)? {
            Ok(Checked::Buried)
        } else {
            Ok(Checked::Gone)
        }
    }

    /// Records that the record at `loc` is corrupt and forgets it; true when
    /// it was `id`'s indexed record (then `id` is queued for repair).
    pub(crate) fn bury(&self, id: ChunkId, loc: Loc) -> Result<bool, ChunkNodeError> {
        self.tombstones.lock().unwrap_or_else(|e| e.into_inner()).append(&tombstone(loc))?;
        let mut shard = self.index.write(&id);
        if shard.get(&id).map(|e| e.loc) == Some(loc) {
            shard.remove(&id);
            self.chunks.fetch_sub(1, Ordering::Relaxed);
            self.bytes.fetch_sub(u64::from(loc.len), Ordering::Relaxed);
            self.corrupt.fetch_add(1, Ordering::Relaxed);
            tracing::error!(chunk = %id, pack = loc.pack, offset = loc.offset, "corrupt chunk record tombstoned");
            drop(shard);
            self.repairs.lock().unwrap_or_else(|e| e.into_inner()).push(id);
            return Ok(true);
        }
        Ok(false)
    }
}

/// The `tombstones.log` record of a corrupt record at `loc`.
pub(crate) fn tombstone(loc: Loc) -> Vec<u8> {
    let mut payload = loc.pack.to_le_bytes().to_vec();
    payload.extend_from_slice(&loc.offset.to_le_bytes());
    payload
}

/// What scrub's check of one record found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Checked {
    Good,
    /// Corrupt: tombstoned, out of the index, queued for repair.
    Buried,
    /// Corrupt, but the index no longer pointed at it (moved or swept).
    Gone,
}
