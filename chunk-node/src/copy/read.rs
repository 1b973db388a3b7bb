//! The copy's read step: the frozen content of the blocks still to copy, in
//! batches, each block hashed next to its data (zero blocks get no id).

use crate::error::ChunkNodeError;
use crate::volume::freeze::Freeze;
use crate::volume::Volume;
use cairn_core::{chunk_of, ChunkId};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Blocks per batch: 32 MiB of data.
const BATCH_BLOCKS: usize = 64;

/// One batch from the reader: (index, chunk id or zero, bytes) per block,
/// ascending, and the last index it covers.
pub(crate) struct Batch {
    pub(crate) last: u64,
    pub(crate) blocks: Vec<(u64, Option<ChunkId>, Vec<u8>)>,
}

/// Starts reading `todo` (ascending block indices) of `freeze` in batches.
/// The reader runs up to two batches ahead of whoever takes them; it stops
/// after a failed read (which it sends) or once the receiver is gone.
pub(crate) fn spawn(
    volume: Arc<Volume>,
    freeze: Arc<Freeze>,
    todo: Vec<u64>,
) -> (JoinHandle<()>, mpsc::Receiver<Result<Batch, ChunkNodeError>>) {
    let (tx, rx) = mpsc::channel::<Result<Batch, ChunkNodeError>>(2);
    let reader = tokio::spawn(async move {
        for part in todo.chunks(BATCH_BLOCKS) {
            let batch = volume.read_frozen(&freeze, part.to_vec()).await.map(|blocks| Batch {
                last: part[part.len() - 1],
                blocks: blocks.into_iter().map(|(i, data)| (i, chunk_of(&data), data)).collect(),
            });
            let failed = batch.is_err();
            if tx.send(batch).await.is_err() || failed {
                return;
            }
        }
    });
    (reader, rx)
}
