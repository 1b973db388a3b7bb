//! What a store's handles and its committer share: the index of where each
//! chunk lies, the packs open for reading, the tombstones of corrupt records
//! and the counters; and the verified read, which buries a corrupt record
//! so that it is reported missing from then on.

use crate::disk::reclog::RecordLog;
use crate::error::ChunkNodeError;
use crate::store::packfile::{pack_path, Loc, Pack};
use cairn_core::ChunkId;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) index: RwLock<HashMap<ChunkId, Loc>>,
    pub(crate) packs: RwLock<HashMap<u32, Arc<Pack>>>,
    pub(crate) tombstones: Mutex<RecordLog>,
    pub(crate) chunks: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) corrupt: AtomicU64,
}

impl Shared {
    /// The verified bytes of `id`, or `None` when it is absent (or was corrupt).
    pub(crate) fn get(&self, id: ChunkId) -> Result<Option<Vec<u8>>, ChunkNodeError> {
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
