//! A pending freeze: the point-in-time image of a volume, kept by
//! copy-on-write instead of a copy.
//!
//! A freeze is a directory `freezes/<snap>/` in the volume's state directory
//! with its `record` (written last, atomically: the freeze exists once it
//! does) and its `overlay`, a [`RecordLog`] of blocks whose frozen content
//! was saved before a live write replaced it. The copy reads a block from
//! the overlay if it is there, else from the live volume; both under the
//! block's lock, so it never sees half a write.
//!
//! A block must be saved only while the copy still needs it: it is in the
//! freeze's read set and at or past the copy's durable checkpoint (blocks
//! before it are already in the chunk stores and recorded in the copy log).
//! The save is fsynced before the live write goes ahead, so a host killed at
//! any point restarts with the exact frozen image: a torn overlay record is
//! one whose live write never happened.

use crate::disk::files::{fsync_dir, read_versioned, remove_dir, write_versioned};
use crate::disk::reclog::{RecordAt, RecordLog};
use crate::disk::volfile::VolumeFile;
use crate::error::ChunkNodeError;
use crate::volume::blocks::{block_range, blocks_in, BlockSet};
use cairn_core::{is_zero, BLOCK_SIZE};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

const RECORD_VERSION: u16 = 1;

/// Most freezes (pending snapshots) a volume holds at once.
pub const MAX_PENDING: usize = 5;

/// What a freeze captured, as persisted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FreezeRecord {
    pub snapshot_id: String,
    pub volume_size: u64,
    /// The tracking epoch this freeze closed.
    pub epoch: u64,
    /// The parent whose changed blocks `read_set` holds, when incremental.
    pub parent: Option<String>,
    pub incremental: bool,
    /// Blocks the copy reads: changed since the parent, or every block that
    /// may hold data.
    pub read_set: BlockSet,
}

pub struct Freeze {
    pub record: FreezeRecord,
    dir: PathBuf,
    overlay: Mutex<Overlay>,
    /// Blocks below this are durably copied (see the module comment).
    checkpoint: AtomicU64,
}

struct Overlay {
    log: RecordLog,
    index: HashMap<u64, RecordAt>,
}

fn overlay_payload(idx: u64, data: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(8 + data.len());
    p.extend(idx.to_le_bytes());
    // A zero block is saved as its index alone.
    if !is_zero(data) {
        p.extend_from_slice(data);
    }
    p
}

impl Freeze {
    /// Creates the freeze durably under `freezes_dir`. Blocking.
    pub fn create(freezes_dir: &Path, record: FreezeRecord) -> Result<Freeze, ChunkNodeError> {
        let dir = freezes_dir.join(&record.snapshot_id);
        // Leftovers of a create that crashed before its record: start over.
        remove_dir(&dir)?;
        fs::create_dir_all(&dir).map_err(|e| ChunkNodeError::io("create", &dir, e))?;
        fsync_dir(freezes_dir)?;
        let log = RecordLog::open(&dir.join("overlay"), |_, _| Ok(()))?;
        write_versioned(&dir.join("record"), RECORD_VERSION, &record)?;
        Ok(Freeze {
            record,
            dir,
            overlay: Mutex::new(Overlay { log, index: HashMap::new() }),
            checkpoint: AtomicU64::new(0),
        })
    }

    /// Loads the freeze in `dir`; `None` (and the directory removed) when its
    /// record was never written. Blocking.
    pub fn load(dir: &Path) -> Result<Option<Freeze>, ChunkNodeError> {
        let Some(record): Option<FreezeRecord> =
            read_versioned(&dir.join("record"), RECORD_VERSION)?
        else {
            remove_dir(dir)?;
            return Ok(None);
        };
        let mut index = HashMap::new();
        let blocks = blocks_in(record.volume_size);
        let log = RecordLog::open(&dir.join("overlay"), |at, payload| {
            let idx = payload
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .filter(|i| *i < blocks)
                .ok_or_else(|| ChunkNodeError::CorruptState {
                    path: dir.join("overlay"),
                    why: "overlay record without a valid block index".into(),
                })?;
            // The first save of a block is its frozen content.
            index.entry(idx).or_insert(at);
            Ok(())
        })?;
        let checkpoint = crate::volume::copylog::CopyLog::peek_checkpoint(&dir.join("copy"))?;
        tracing::info!(snapshot = %record.snapshot_id, saved = index.len(), checkpoint, "freeze reopened");
        Ok(Some(Freeze {
            record,
            dir: dir.to_path_buf(),
            overlay: Mutex::new(Overlay { log, index }),
            checkpoint: AtomicU64::new(checkpoint),
        }))
    }

    pub fn snapshot_id(&self) -> &str {
        &self.record.snapshot_id
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn checkpoint(&self) -> u64 {
        self.checkpoint.load(Ordering::Acquire)
    }

    /// Called once blocks below `block` are durably copied.
    pub fn advance(&self, block: u64) {
        self.checkpoint.fetch_max(block, Ordering::AcqRel);
    }

    fn overlay(&self) -> std::sync::MutexGuard<'_, Overlay> {
        self.overlay.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks whose frozen content the overlay holds.
    pub fn saved_blocks(&self) -> usize {
        self.overlay().index.len()
    }

    /// Whether a write to block `idx` must first save its content here.
    /// Caller holds the block's lock.
    pub fn needs_save(&self, idx: u64) -> bool {
        self.record.read_set.contains(idx)
            && idx >= self.checkpoint()
            && !self.overlay().index.contains_key(&idx)
    }

    /// Saves `data` as the frozen content of block `idx`, durably. Caller
    /// holds the block's lock and checked [`Freeze::needs_save`].
    pub fn save(&self, idx: u64, data: &[u8]) -> Result<(), ChunkNodeError> {
        let payload = overlay_payload(idx, data);
        let mut o = self.overlay();
        let at = o.log.append(&payload)?;
        o.index.insert(idx, at);
        Ok(())
    }

    /// The frozen content of block `idx`: from the overlay, else from the
    /// live file. Caller holds the block's lock. Blocking.
    pub fn read_block(&self, live: &VolumeFile, idx: u64) -> Result<Vec<u8>, ChunkNodeError> {
        let (start, end) = block_range(idx, self.record.volume_size);
        let len = (end - start) as usize;
        let saved = {
            let o = self.overlay();
            match o.index.get(&idx) {
                Some(at) => Some(o.log.read(*at)?),
                None => None,
            }
        };
        match saved {
            Some(p) => {
                let data = &p[8..];
                if data.is_empty() {
                    Ok(vec![0u8; len])
                } else if data.len() == len {
                    Ok(data.to_vec())
                } else {
                    Err(ChunkNodeError::CorruptState {
                        path: self.dir.join("overlay"),
                        why: format!("block {idx} saved with {} bytes", data.len()),
                    })
                }
            }
            None => {
                let mut buf = vec![0u8; len];
                live.read_exact_at(&mut buf, start)
                    .map_err(|e| ChunkNodeError::io("read block of", format!("block {idx}"), e))?;
                Ok(buf)
            }
        }
    }

    /// Drops the freeze's files. Blocking.
    pub fn remove(&self) -> Result<(), ChunkNodeError> {
        remove_dir(&self.dir)
    }
}

/// Block indices that may hold data, ascending: those overlapping a data
/// extent of a sparse file.
pub fn data_blocks(extents: &[(u64, u64)], total: u64) -> BlockSet {
    let bs = BLOCK_SIZE as u64;
    let mut set = BlockSet::new(total);
    for &(start, end) in extents {
        if end <= start {
            continue;
        }
        for i in start / bs..=(end - 1) / bs {
            set.insert(i);
        }
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(size: u64) -> FreezeRecord {
        FreezeRecord {
            snapshot_id: "snap-1".into(),
            volume_size: size,
            epoch: 3,
            parent: None,
            incremental: false,
            read_set: BlockSet::full(blocks_in(size)),
        }
    }

    #[test]
    fn overlay_survives_reopen_and_shadows_the_live_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let size = 4 * BLOCK_SIZE as u64;
        let path = dir.path().join("live.img");
        fs::File::create_new(&path).and_then(|f| f.set_len(size)).expect("live");
        let live = VolumeFile::open(&path).expect("open live");
        live.write_all_at(&vec![1u8; BLOCK_SIZE], 0).expect("w");
        let f = Freeze::create(dir.path(), record(size)).expect("create");
        assert!(f.needs_save(0));
        f.save(0, &vec![1u8; BLOCK_SIZE]).expect("save");
        f.save(1, &vec![0u8; BLOCK_SIZE]).expect("save zero");
        assert!(!f.needs_save(0));
        live.write_all_at(&vec![2u8; BLOCK_SIZE], 0).expect("w");
        live.write_all_at(&vec![3u8; BLOCK_SIZE], BLOCK_SIZE as u64).expect("w");
        f.advance(3);
        assert!(!f.needs_save(2), "copied blocks need no save");
        assert!(f.needs_save(3));
        drop(f);
        let f = Freeze::load(&dir.path().join("snap-1")).expect("load").expect("exists");
        assert_eq!(f.saved_blocks(), 2);
        assert_eq!(f.read_block(&live, 0).expect("read"), vec![1u8; BLOCK_SIZE]);
        assert_eq!(f.read_block(&live, 1).expect("read"), vec![0u8; BLOCK_SIZE]);
        assert_eq!(f.read_block(&live, 2).expect("read"), vec![0u8; BLOCK_SIZE]);
        f.remove().expect("remove");
        assert!(Freeze::load(&dir.path().join("snap-1")).expect("load").is_none());
    }

    #[test]
    fn extents_to_blocks() {
        let bs = BLOCK_SIZE as u64;
        let ids = |s: BlockSet| s.iter().collect::<Vec<_>>();
        assert!(ids(data_blocks(&[], 8)).is_empty());
        assert_eq!(ids(data_blocks(&[(0, 1)], 8)), vec![0]);
        assert_eq!(ids(data_blocks(&[(bs - 1, bs + 1), (bs + 5, 3 * bs)], 8)), vec![0, 1, 2]);
        assert_eq!(ids(data_blocks(&[(7 * bs, 7 * bs + 4096)], 8)), vec![7]);
    }
}
