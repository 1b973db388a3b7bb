//! The copy's durable progress, `copy` in the freeze's directory: a
//! [`RecordLog`] whose first record says what is being built (the parent
//! manifest root, if any) and whose later records each say "every block of
//! the read set below `checkpoint` is durable at RF, and these are their
//! manifest entries". A re-run (after a failure, or after the host was
//! killed) continues after the last checkpoint, and replays the entries
//! (one record at a time, [`CopyLog::replay`]) into the manifest it writes.
//! The log keeps none of them in memory.

use crate::disk::reclog::RecordLog;
use crate::error::ChunkNodeError;
use cairn_core::ChunkId;
use serde::{Deserialize, Serialize};
use std::path::Path;

const VERSION: u16 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Rec {
    Start { version: u16, parent_root: Option<ChunkId> },
    Batch { checkpoint: u64, entries: Vec<(u64, Option<ChunkId>)>, data_bytes: u64 },
}

pub struct CopyLog {
    log: RecordLog,
    started: Option<Option<ChunkId>>,
    pub checkpoint: u64,
    /// Bytes of non-zero blocks copied.
    pub data_bytes: u64,
}

fn encode(r: &Rec) -> Result<Vec<u8>, ChunkNodeError> {
    bincode::serialize(r).map_err(|e| ChunkNodeError::Encode(e.to_string()))
}

impl CopyLog {
    /// Opens (creating) the log and replays it. Blocking.
    pub fn open(path: &Path) -> Result<CopyLog, ChunkNodeError> {
        let mut started = None;
        let mut checkpoint = 0;
        let mut data_bytes = 0;
        let log = RecordLog::open(path, |_, payload| {
            let rec: Rec = bincode::deserialize(payload).map_err(|e| {
                ChunkNodeError::CorruptState { path: path.to_path_buf(), why: e.to_string() }
            })?;
            match rec {
                Rec::Start { version, parent_root } => {
                    if version != VERSION {
                        return Err(ChunkNodeError::CorruptState {
                            path: path.to_path_buf(),
                            why: format!("copy log version {version}"),
                        });
                    }
                    started = Some(parent_root);
                }
                Rec::Batch { checkpoint: c, data_bytes: d, .. } => {
                    checkpoint = c;
                    data_bytes += d;
                }
            }
            Ok(())
        })?;
        Ok(CopyLog { log, started, checkpoint, data_bytes })
    }

    /// The durable checkpoint in the log at `path`, 0 if there is none. Blocking.
    pub fn peek_checkpoint(path: &Path) -> Result<u64, ChunkNodeError> {
        if !path.exists() {
            return Ok(0);
        }
        Ok(CopyLog::open(path)?.checkpoint)
    }

    /// Starts (or checks a resumed) copy against `parent_root`. A copy that
    /// already copied blocks cannot switch parents: blocks it passed are no
    /// longer protected by copy-on-write. Blocking.
    pub fn start(&mut self, parent_root: Option<ChunkId>) -> Result<(), ChunkNodeError> {
        match self.started {
            Some(p) if p == parent_root => Ok(()),
            Some(_) => Err(ChunkNodeError::CopyMismatch),
            None => {
                self.log.append(&encode(&Rec::Start { version: VERSION, parent_root })?)?;
                self.started = Some(parent_root);
                Ok(())
            }
        }
    }

    /// Records a durable batch. Blocking.
    pub fn commit(
        &mut self,
        checkpoint: u64,
        entries: Vec<(u64, Option<ChunkId>)>,
        data_bytes: u64,
    ) -> Result<(), ChunkNodeError> {
        let rec = Rec::Batch { checkpoint, entries, data_bytes };
        self.log.append(&encode(&rec)?)?;
        self.checkpoint = checkpoint;
        self.data_bytes += data_bytes;
        Ok(())
    }

    /// Calls `visit` with each recorded batch's checkpoint and manifest
    /// entries (None: zero), in order, until it returns false. Blocking.
    pub fn replay(
        &self,
        mut visit: impl FnMut(u64, Vec<(u64, Option<ChunkId>)>) -> bool,
    ) -> Result<(), ChunkNodeError> {
        self.log.replay(|_, payload| {
            let rec: Rec = bincode::deserialize(payload)
                .map_err(|e| ChunkNodeError::Encode(format!("copy log record: {e}")))?;
            Ok(match rec {
                Rec::Start { .. } => true,
                Rec::Batch { checkpoint, entries, .. } => visit(checkpoint, entries),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumes_from_the_last_commit_and_refuses_another_parent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("copy");
        let root = Some(ChunkId::of(b"parent"));
        let mut log = CopyLog::open(&path).expect("open");
        log.start(root).expect("start");
        log.commit(10, vec![(3, Some(ChunkId::of(b"x"))), (5, None)], 100).expect("commit");
        log.commit(20, vec![(12, Some(ChunkId::of(b"y")))], 50).expect("commit");
        drop(log);
        assert_eq!(CopyLog::peek_checkpoint(&path).expect("peek"), 20);
        let mut log = CopyLog::open(&path).expect("reopen");
        assert_eq!(log.checkpoint, 20);
        assert_eq!(log.data_bytes, 150);
        let mut replayed = Vec::new();
        log.replay(|c, e| {
            replayed.push((c, e.len()));
            true
        })
        .expect("replay");
        assert_eq!(replayed, [(10, 2), (20, 1)]);
        let mut first = Vec::new();
        log.replay(|c, _| {
            first.push(c);
            false
        })
        .expect("stopped early");
        assert_eq!(first, [10]);
        log.start(root).expect("same parent resumes");
        assert!(matches!(log.start(None), Err(ChunkNodeError::CopyMismatch)));
    }
}
