//! The copy executor: moves a frozen image into the chunk stores of its
//! destination and writes its manifest.
//!
//! A reader on the blocking pool walks the image's data extents (holes are
//! zero blocks and are never read), reads 512 KiB blocks, drops all-zero ones
//! and hashes the rest next to the data, handing batches to the sender. The
//! sender asks each replica chosen by placement which chunks it lacks
//! (`HasChunks`, one call per target per batch) and puts only those, a
//! bounded number at a time. Manifest pages and the root go the same way.
//! Every step is idempotent, so a retried copy sends only what is missing.

use crate::error::ChunkNodeError;
use crate::peers::{self, Peer};
use crate::sparse;
use crate::volumes::VolumeHost;
use cairn_core::manifest::ManifestBuilder;
use cairn_core::placement::{place, Candidate};
use cairn_core::{is_zero, ChunkId, BLOCK_SIZE};
use cairn_proto::pb::{CopyProgress, StoreNode};
use futures::stream::{self, StreamExt, TryStreamExt};
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Blocks per batch (and ids per `HasChunks` call): 32 MiB of data.
const BATCH_BLOCKS: usize = 64;
/// Concurrent `PutChunk` calls.
const PUTS_IN_FLIGHT: usize = 8;

/// What to copy, and where.
pub struct CopyJob {
    pub volume_id: String,
    pub snapshot_id: String,
    pub targets: Vec<StoreNode>,
    pub replication_factor: u32,
}

/// Stores chunks at their placement among the targets, remembering what each
/// target is known to hold so repeated content is checked and sent once.
pub(crate) struct Sender {
    peers: Vec<Peer>,
    cands: Vec<Candidate>,
    rf: usize,
    confirmed: HashSet<(usize, ChunkId)>,
}

impl Sender {
    pub(crate) fn new(targets: &[StoreNode], rf: u32) -> Result<Sender, ChunkNodeError> {
        if targets.is_empty() {
            return Err(ChunkNodeError::InvalidArgument("no target chunk nodes"));
        }
        let peers = peers::connect(targets)?;
        let cands = peers::candidates(&peers);
        Ok(Sender { peers, cands, rf: peers::replication_factor(rf), confirmed: HashSet::new() })
    }

    /// Makes every chunk durable on its replicas. Returns how many
    /// `PutChunk` calls were made.
    pub(crate) async fn store(
        &mut self,
        chunks: Vec<(ChunkId, Vec<u8>)>,
    ) -> Result<u64, ChunkNodeError> {
        let mut data: BTreeMap<ChunkId, Arc<Vec<u8>>> = BTreeMap::new();
        for (id, bytes) in chunks {
            data.entry(id).or_insert_with(|| Arc::new(bytes));
        }
        // Per target: the ids it should hold and is not yet known to hold.
        let mut wanted: BTreeMap<usize, Vec<ChunkId>> = BTreeMap::new();
        for id in data.keys() {
            for t in place(id, &self.cands, self.rf) {
                if !self.confirmed.contains(&(t, *id)) {
                    wanted.entry(t).or_default().push(*id);
                }
            }
        }
        let checks = wanted.into_iter().map(|(t, ids)| {
            let peer = self.peers[t].clone();
            async move {
                let mut missing = Vec::new();
                let mut present = Vec::new();
                for part in ids.chunks(BATCH_BLOCKS) {
                    let has = peer.has(part).await?;
                    for (id, h) in part.iter().zip(has) {
                        if h {
                            present.push((t, *id));
                        } else {
                            missing.push((t, *id));
                        }
                    }
                }
                Ok::<_, ChunkNodeError>((present, missing))
            }
        });
        let mut to_put = Vec::new();
        for r in futures::future::join_all(checks).await {
            let (present, missing) = r?;
            self.confirmed.extend(present);
            to_put.extend(missing);
        }
        let puts = to_put.into_iter().map(|(t, id)| {
            let peer = self.peers[t].clone();
            let bytes = data.get(&id).cloned();
            async move {
                let bytes = bytes.ok_or(ChunkNodeError::ChunkUnavailable(id))?;
                peer.put(id, bytes.as_ref().clone()).await?;
                Ok::<_, ChunkNodeError>((t, id))
            }
        });
        let done: Vec<(usize, ChunkId)> =
            stream::iter(puts).buffer_unordered(PUTS_IN_FLIGHT).try_collect().await?;
        let sent = done.len() as u64;
        self.confirmed.extend(done);
        Ok(sent)
    }
}

/// One batch from the reader: how many blocks it covers, and the non-zero
/// ones as (index, id, bytes).
struct Batch {
    blocks: u64,
    chunks: Vec<(u64, ChunkId, Vec<u8>)>,
}

/// Block indices that may hold data, ascending: those overlapping a data extent.
fn data_blocks(extents: &[(u64, u64)]) -> Vec<u64> {
    let bs = BLOCK_SIZE as u64;
    let mut out: Vec<u64> = Vec::new();
    for &(start, end) in extents {
        let first = start / bs;
        let last = (end - 1) / bs;
        let from = match out.last() {
            Some(&l) if l >= first => l + 1,
            _ => first,
        };
        out.extend(from..=last);
    }
    out
}

/// Reads `blocks` of `file` in batches, hashing non-zero ones, and sends the
/// batches to `tx` until done or the receiver is gone. Runs on the blocking pool.
fn read_blocks(
    file: &File,
    label: &str,
    size: u64,
    blocks: &[u64],
    tx: mpsc::Sender<Result<Batch, ChunkNodeError>>,
) {
    let bs = BLOCK_SIZE as u64;
    for part in blocks.chunks(BATCH_BLOCKS) {
        let mut chunks = Vec::new();
        for &idx in part {
            let off = idx * bs;
            let len = (size - off).min(bs) as usize;
            let mut buf = vec![0u8; len];
            if let Err(e) = file.read_exact_at(&mut buf, off) {
                let err =
                    ChunkNodeError::io("read frozen image", format!("{label} block {idx}"), e);
                // If the receiver is gone there is nobody left to tell.
                let _ = tx.blocking_send(Err(err));
                return;
            }
            if !is_zero(&buf) {
                chunks.push((idx, ChunkId::of(&buf), buf));
            }
        }
        if tx.blocking_send(Ok(Batch { blocks: part.len() as u64, chunks })).is_err() {
            return;
        }
    }
}

/// Runs a copy, reporting progress on `progress`. The last message has
/// `done` set and carries the manifest root. A closed progress channel
/// (the caller went away) stops the copy early without error.
pub async fn run(
    host: &VolumeHost,
    job: CopyJob,
    progress: mpsc::Sender<CopyProgress>,
) -> Result<(), ChunkNodeError> {
    let (file, size) = host.open_frozen(&job.snapshot_id).await?;
    let mut sender = Sender::new(&job.targets, job.replication_factor)?;
    let file = Arc::new(file);
    let walk = file.clone();
    let blocks = tokio::task::spawn_blocking(move || {
        sparse::data_extents(&walk, size).map(|e| data_blocks(&e))
    })
    .await?
    .map_err(|e| ChunkNodeError::io("walk extents of", &job.snapshot_id, e))?;
    let total = blocks.len() as u64;
    tracing::info!(snapshot = %job.snapshot_id, size, data_blocks = total, "copy started");

    let (tx, mut rx) = mpsc::channel(2);
    let label = job.snapshot_id.clone();
    let reader = tokio::task::spawn_blocking(move || read_blocks(&file, &label, size, &blocks, tx));

    let mut manifest = ManifestBuilder::new(size);
    let (mut blocks_read, mut chunks_sent, mut full_size) = (0u64, 0u64, 0u64);
    while let Some(batch) = rx.recv().await {
        let batch = batch?;
        blocks_read += batch.blocks;
        let mut chunks = Vec::with_capacity(batch.chunks.len());
        for (idx, id, data) in batch.chunks {
            manifest.set(idx, Some(id));
            full_size += data.len() as u64;
            chunks.push((id, data));
        }
        chunks_sent += sender.store(chunks).await?;
        let percent = (blocks_read * 100 / total.max(1)).min(99) as u32;
        let p = CopyProgress { percent, blocks_read, chunks_sent, ..Default::default() };
        if progress.send(p).await.is_err() {
            tracing::info!(snapshot = %job.snapshot_id, "copy abandoned by its caller");
            return Ok(());
        }
    }
    reader.await?;

    let built = manifest.finish();
    let mut objects = built.pages;
    objects.push((built.root_id, built.root));
    chunks_sent += sender.store(objects).await?;
    tracing::info!(
        snapshot = %job.snapshot_id, root = %built.root_id, blocks_read, chunks_sent, full_size,
        "copy done"
    );
    let last = CopyProgress {
        percent: 100,
        done: true,
        manifest_root: built.root_id.0.to_vec(),
        full_size_bytes: full_size,
        blocks_read,
        chunks_sent,
        ..Default::default()
    };
    // The caller may be gone; the copy is complete and durable either way.
    let _ = progress.send(last).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_of_extents() {
        let bs = BLOCK_SIZE as u64;
        assert_eq!(data_blocks(&[]), Vec::<u64>::new());
        assert_eq!(data_blocks(&[(0, 1)]), vec![0]);
        assert_eq!(data_blocks(&[(bs - 1, bs + 1), (bs + 5, 3 * bs)]), vec![0, 1, 2]);
        assert_eq!(data_blocks(&[(10 * bs, 10 * bs + 4096)]), vec![10]);
    }
}
