//! Runs a copy: checks the job against its freeze, then reads, stores and
//! checkpoints the blocks in batches (as many stored at once as the node's
//! copy memory's shape says, checkpointed in order), writing the manifest's
//! pages as the checkpoints pass them and its root once every block is
//! durable. See [`crate::copy`] for the design.

use crate::copy::budget::CopyMemory;
use crate::copy::checkpoint::{self, Tally};
use crate::copy::manifest::{ManifestFeed, StoredManifest};
use crate::copy::read::{self, Batch};
use crate::copy::store::store_batch;
use crate::error::ChunkNodeError;
use crate::peers::Sender;
use crate::store::LocalStore;
use crate::volume::blocks::blocks_in;
use crate::volume::copylog::CopyLog;
use crate::volume::freeze::Freeze;
use crate::volume::{Volume, VolumeHost};
use cairn_core::{ChunkId, BLOCK_SIZE};
use cairn_proto::pb::{CopyProgress, StoreNode};
use futures::stream::{FuturesOrdered, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

/// How long a copy waits for its caller to take a progress message before
/// it stops (its durable progress kept for the next call).
const STALLED_CALLER: Duration = Duration::from_secs(60);

/// What to copy, and where.
pub struct CopyJob {
    pub volume_id: String,
    pub snapshot_id: String,
    pub targets: Vec<StoreNode>,
    pub replication_factor: u32,
    /// The parent's manifest root (32 bytes) and id; empty for a full copy.
    pub parent_manifest_root: Vec<u8>,
    pub parent_snapshot_id: String,
    /// This node's own chunk store, when it may be among the targets: its
    /// replicas are stored directly, not through gRPC to ourselves.
    pub local: Option<LocalStore>,
    /// Fires when the copy must stop (a newer call for the snapshot, see
    /// [`crate::copy::fence`]): it stops between steps, never inside a
    /// checkpoint, so its copy log is whole when it returns.
    pub cancel: CancellationToken,
    /// The node's copy memory, which this copy's batches take their share
    /// of (shared by every copy of the node).
    pub memory: CopyMemory,
}

/// How a copy run ended without an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The copy is complete and durable, and its caller has its `done`
    /// message.
    Complete,
    /// It stopped before its caller had the `done` message (cancelled, or
    /// the caller went away or stopped reading); its durable progress is
    /// kept for the next run, which answers from it.
    Stopped,
}

/// Runs (or resumes) the copy of a frozen volume, reporting progress on
/// `progress`. The last message has `done` set and carries the manifest
/// root. A closed progress channel (the caller went away) or a cancellation
/// stops the copy early without error.
pub async fn run(
    host: &VolumeHost,
    job: CopyJob,
    progress: mpsc::Sender<CopyProgress>,
) -> Result<Ended, ChunkNodeError> {
    let (volume, freeze) = host.frozen(&job.volume_id, &job.snapshot_id)?;
    let parent_root = parent_root(&job, &freeze)?;
    let shape = job.memory.shape();
    let sender = Sender::new(&job.targets, job.replication_factor, job.local.clone(), shape.puts)?;
    let sender = Arc::new(sender);
    let log = checkpoint::open(&freeze, parent_root).await?;

    let read_set = &freeze.record.read_set;
    let total = read_set.count();
    let done = read_set.count_below(log.checkpoint);
    let mut tally = Tally::new(total, done);
    tracing::info!(
        snapshot = %job.snapshot_id, incremental = freeze.record.incremental, total,
        resume_at = log.checkpoint, to_read = total - done, "copy started"
    );
    let copy = CopyRun {
        volume,
        freeze,
        sender,
        parent_root,
        progress,
        cancel: job.cancel,
        storing: shape.storing,
    };
    if !copy.report(tally.report(log.checkpoint)).await {
        return Ok(Ended::Stopped);
    }

    let started = async {
        let record = &copy.freeze.record;
        let feed = ManifestFeed::start(
            copy.sender.clone(),
            copy.parent_root,
            record.incremental,
            record.volume_size,
        );
        let mut feed = feed.await?;
        let log = replay(log, &mut feed).await?;
        Ok::<_, ChunkNodeError>((log, feed))
    };
    let (log, mut feed) = tokio::select! {
        started = started => started?,
        // Nothing durable was written yet: the next run starts the same way.
        _ = copy.cancel.cancelled() => return Ok(Ended::Stopped),
    };
    let (reader, batches) =
        read::spawn(copy.volume.clone(), copy.freeze.clone(), job.memory, log.checkpoint);
    let Some(log) = copy.store_batches(log, &mut tally, &mut feed, batches).await? else {
        tracing::info!(snapshot = %job.snapshot_id, "copy abandoned by its caller, or stopped");
        reader.abort();
        return Ok(Ended::Stopped);
    };
    reader.await?;
    let built = tokio::select! {
        built = feed.finish() => built?,
        // The pages being stored are aborted as they drop; they are
        // content-addressed, so a later run stores them again harmlessly.
        _ = copy.cancel.cancelled() => return Ok(Ended::Stopped),
    };
    Ok(match copy.finish(&job.snapshot_id, &log, tally, built).await {
        true => Ended::Complete,
        false => Ended::Stopped,
    })
}

/// Feeds the batches an earlier run made durable (in its copy log) to the
/// manifest, one at a time, before this run adds its own.
async fn replay(log: CopyLog, feed: &mut ManifestFeed) -> Result<CopyLog, ChunkNodeError> {
    if log.checkpoint == 0 {
        return Ok(log);
    }
    let (tx, mut rx) = mpsc::channel(2);
    let scan = tokio::task::spawn_blocking(move || {
        // A failed feed drops the receiver, which stops the scan.
        let scanned =
            log.replay(|checkpoint, entries| tx.blocking_send((checkpoint, entries)).is_ok());
        (log, scanned)
    });
    let mut fed = Ok(());
    while let Some((checkpoint, entries)) = rx.recv().await {
        fed = feed.add(&entries, checkpoint).await;
        if fed.is_err() {
            break;
        }
    }
    drop(rx);
    let (log, scanned) = scan.await?;
    fed?;
    scanned?;
    Ok(log)
}

/// The parent manifest root `job` names, checked against the freeze.
fn parent_root(job: &CopyJob, freeze: &Freeze) -> Result<Option<ChunkId>, ChunkNodeError> {
    let parent_root = match job.parent_manifest_root.len() {
        0 => None,
        _ => Some(
            ChunkId::from_slice(&job.parent_manifest_root)
                .ok_or(ChunkNodeError::BadChunkId(job.parent_manifest_root.len()))?,
        ),
    };
    if freeze.record.incremental {
        // Blocks outside the read set are the parent's: it must be the one
        // the freeze measured changes against.
        if parent_root.is_none()
            || freeze.record.parent.as_deref() != Some(job.parent_snapshot_id.as_str())
        {
            return Err(ChunkNodeError::ParentMismatch {
                frozen: freeze.record.parent.clone().unwrap_or_default(),
                given: job.parent_snapshot_id.clone(),
            });
        }
    }
    Ok(parent_root)
}

/// A copy under way: what its steps share.
struct CopyRun {
    volume: Arc<Volume>,
    freeze: Arc<Freeze>,
    sender: Arc<Sender>,
    parent_root: Option<ChunkId>,
    progress: mpsc::Sender<CopyProgress>,
    cancel: CancellationToken,
    /// Batches stored at once. A batch's last puts leave the stores idle
    /// until the next batch begins; checkpoints are still recorded in
    /// order, each once its batch and every one before it are durable.
    storing: usize,
}

impl CopyRun {
    /// Sends one progress message; false when the caller went away, read
    /// nothing for [`STALLED_CALLER`], or the copy was stopped while the
    /// caller was not reading. (A copy waiting on its caller would hold its
    /// share of the node's copy memory from the node's other copies.)
    async fn report(&self, p: CopyProgress) -> bool {
        tokio::select! {
            sent = self.progress.send(p) => sent.is_ok() && !self.cancel.is_cancelled(),
            _ = self.cancel.cancelled() => false,
            _ = tokio::time::sleep(STALLED_CALLER) => {
                tracing::warn!("copy stopped: its caller read no progress for {STALLED_CALLER:?}");
                false
            }
        }
    }

    /// Stores the reader's batches, a few at a time, and checkpoints each
    /// once it and every one before it are durable, adding its entries to
    /// the manifest. Returns the log once every batch is, or `None` when
    /// the caller went away.
    async fn store_batches(
        &self,
        mut log: CopyLog,
        tally: &mut Tally,
        feed: &mut ManifestFeed,
        mut batches: mpsc::Receiver<Result<Batch, ChunkNodeError>>,
    ) -> Result<Option<CopyLog>, ChunkNodeError> {
        let mut storing = FuturesOrdered::new();
        let mut read_all = false;
        loop {
            // Take batches while there is room, and finish them in order.
            let stored = tokio::select! {
                b = batches.recv(), if !read_all && storing.len() < self.storing => {
                    match b {
                        // A task of its own: its puts go on while a checkpoint
                        // is being recorded; aborted if the copy ends early.
                        Some(b) => {
                            let task = tokio::spawn(store_batch(self.sender.clone(), b?));
                            storing.push_back(AbortOnDropHandle::new(task));
                        }
                        None => read_all = true,
                    }
                    continue;
                }
                Some(stored) = storing.next() => stored??,
                // Stopped: between steps, so no checkpoint is cut in half.
                _ = self.cancel.cancelled(), if !read_all || !storing.is_empty() => {
                    return Ok(None)
                }
                else => break,
            };
            // Durable at RF: write the pages it completes, record it, then
            // let copy-on-write skip these blocks.
            tally.add(&stored);
            let checkpoint = stored.last + 1;
            feed.add(&stored.entries, checkpoint).await?;
            log = checkpoint::commit(log, &self.freeze, stored).await?;
            if !self.report(tally.report(checkpoint)).await {
                return Ok(None);
            }
        }
        Ok(Some(log))
    }

    /// Sends the last progress message: done, with the manifest root.
    /// Reports the copy done; true when the caller took the message.
    async fn finish(
        &self,
        snapshot_id: &str,
        log: &CopyLog,
        tally: Tally,
        built: StoredManifest,
    ) -> bool {
        let blocks_read = tally.blocks_read;
        let chunks_sent = tally.chunks_sent + built.sent;
        let pages_written = built.pages_written;
        let size = self.freeze.record.volume_size;
        let full_size = (built.data_blocks * BLOCK_SIZE as u64).min(size);
        tracing::info!(
            snapshot = %snapshot_id, root = %built.root_id, blocks_read, chunks_sent, pages_written,
            copied_bytes = log.data_bytes, "copy done"
        );
        let last = CopyProgress {
            percent: 100,
            done: true,
            manifest_root: built.root_id.0.to_vec(),
            full_size_bytes: full_size,
            blocks_read,
            chunks_sent,
            new_data_bytes: tally.new_data_bytes,
            checkpoint_block: blocks_in(size),
        };
        // The caller may be gone, or not reading: the copy is complete and
        // durable either way (a call again answers from its log), so it
        // waits no longer than for any progress, and not past a stop. A
        // caller with room for it gets it even after a stop (`biased`: the
        // send is tried first, and it does not wait when there is room).
        tokio::select! {
            biased;
            sent = self.progress.send(last) => sent.is_ok(),
            _ = self.cancel.cancelled() => false,
            _ = tokio::time::sleep(STALLED_CALLER) => {
                tracing::warn!(snapshot = %snapshot_id, "copy done, but its caller read no progress for {STALLED_CALLER:?}");
                false
            }
        }
    }
}
