//! The copy's read step: the frozen content of the blocks still to copy, in
//! batches, each block hashed next to its data (zero blocks get no id).

use crate::copy::budget::CopyMemory;
use crate::error::ChunkNodeError;
use crate::volume::freeze::Freeze;
use crate::volume::Volume;
use cairn_core::{chunk_of, ChunkId};
use std::sync::Arc;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::task::AbortOnDropHandle;

/// One batch from the reader: (index, chunk id or zero, bytes) per block,
/// ascending, and the last index it covers.
pub(crate) struct Batch {
    pub(crate) last: u64,
    pub(crate) blocks: Vec<(u64, Option<ChunkId>, Vec<u8>)>,
    /// Its share of the node's copy memory, given back once it is stored.
    pub(crate) memory: OwnedSemaphorePermit,
}

/// Starts reading the blocks of `freeze`'s read set from `from` on, in
/// batches of the budget's shape, each once its share of the budget is
/// free. The reader runs up to the shape's `read_ahead` batches ahead of
/// whoever takes them; it stops after a failed read (which it sends) or
/// once the receiver is gone, and is aborted if its handle drops first (a
/// copy that failed), so it takes no more of the budget.
pub(crate) fn spawn(
    volume: Arc<Volume>,
    freeze: Arc<Freeze>,
    memory: CopyMemory,
    from: u64,
) -> (AbortOnDropHandle<()>, mpsc::Receiver<Result<Batch, ChunkNodeError>>) {
    let shape = memory.shape();
    let (tx, rx) = mpsc::channel::<Result<Batch, ChunkNodeError>>(shape.read_ahead);
    let reader = tokio::spawn(async move {
        let mut next = from;
        loop {
            // The next batch's indices, from the read set's bitmap: the
            // blocks to copy are never listed whole.
            let part: Vec<u64> =
                freeze.record.read_set.iter_from(next).take(shape.batch_blocks).collect();
            let Some(&last) = part.last() else { return };
            next = last + 1;
            let held = memory.take_batch().await;
            let batch = volume.read_frozen(&freeze, part).await.map(|blocks| Batch {
                last,
                blocks: blocks.into_iter().map(|(i, data)| (i, chunk_of(&data), data)).collect(),
                memory: held,
            });
            let failed = batch.is_err();
            if tx.send(batch).await.is_err() || failed {
                return;
            }
        }
    });
    (AbortOnDropHandle::new(reader), rx)
}
