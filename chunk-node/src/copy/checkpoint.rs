//! The copy's checkpoints: its copy log opened (or resumed) against the
//! parent, each durable batch recorded there (after which copy-on-write no
//! longer saves its blocks), and the progress reported to the caller.

use crate::copy::store::Stored;
use crate::error::ChunkNodeError;
use crate::volume::copylog::CopyLog;
use crate::volume::freeze::Freeze;
use cairn_core::ChunkId;
use cairn_proto::pb::CopyProgress;
use std::sync::Arc;

/// Opens (or resumes) the copy log of `freeze`, checked against
/// `parent_root`, and lets copy-on-write skip the blocks it already holds.
pub(crate) async fn open(
    freeze: &Arc<Freeze>,
    parent_root: Option<ChunkId>,
) -> Result<CopyLog, ChunkNodeError> {
    let log_path = freeze.dir().join("copy");
    let log = tokio::task::spawn_blocking(move || {
        let mut log = CopyLog::open(&log_path)?;
        log.start(parent_root)?;
        Ok::<_, ChunkNodeError>(log)
    })
    .await??;
    freeze.advance(log.checkpoint);
    Ok(log)
}

/// Records `stored`, durable at RF, as the checkpoint after its last block,
/// then lets copy-on-write skip those blocks.
pub(crate) async fn commit(
    log: CopyLog,
    freeze: &Arc<Freeze>,
    stored: Stored,
) -> Result<CopyLog, ChunkNodeError> {
    let Stored { last, entries, data_bytes, .. } = stored;
    let checkpoint = last + 1;
    let f = freeze.clone();
    tokio::task::spawn_blocking(move || {
        let mut l = log;
        l.commit(checkpoint, entries, data_bytes)?;
        f.advance(checkpoint);
        Ok::<_, ChunkNodeError>(l)
    })
    .await?
}

/// How far a copy is, as its progress messages tell it.
pub(crate) struct Tally {
    /// Blocks of the read set.
    total: u64,
    /// Blocks of the read set durably copied, by this run or an earlier one.
    done: u64,
    /// Blocks this run read.
    pub(crate) blocks_read: u64,
    /// `PutChunk` calls this run made.
    pub(crate) chunks_sent: u64,
    /// Bytes of blocks this run stored that no replica held before.
    pub(crate) new_data_bytes: u64,
}

impl Tally {
    /// A copy of `total` blocks of which `done` are durable already.
    pub(crate) fn new(total: u64, done: u64) -> Tally {
        Tally { total, done, blocks_read: 0, chunks_sent: 0, new_data_bytes: 0 }
    }

    /// Counts a batch made durable.
    pub(crate) fn add(&mut self, stored: &Stored) {
        self.blocks_read += stored.entries.len() as u64;
        self.done += stored.entries.len() as u64;
        self.chunks_sent += stored.sent;
        self.new_data_bytes += stored.new_bytes;
    }

    /// The progress message for `checkpoint`; 100% comes only with the
    /// manifest.
    pub(crate) fn report(&self, checkpoint: u64) -> CopyProgress {
        CopyProgress {
            percent: (self.done * 100 / self.total.max(1)).min(99) as u32,
            blocks_read: self.blocks_read,
            chunks_sent: self.chunks_sent,
            new_data_bytes: self.new_data_bytes,
            checkpoint_block: checkpoint,
            ..Default::default()
        }
    }
}
