//! The copy's store step: one batch's non-zero blocks put at RF, and what
//! its checkpoint will record.

use crate::copy::read::Batch;
use crate::error::ChunkNodeError;
use crate::peers::Sender;
use cairn_core::{ChunkId, BLOCK_SIZE};
use std::sync::Arc;

/// A batch durable at RF: what its checkpoint records.
pub(crate) struct Stored {
    pub(crate) last: u64,
    pub(crate) entries: Vec<(u64, Option<ChunkId>)>,
    pub(crate) data_bytes: u64,
    /// `PutChunk` calls made.
    pub(crate) sent: u64,
    /// Bytes of the batch's chunks no replica held yet (the rest was
    /// deduplicated).
    pub(crate) new_bytes: u64,
}

/// Stores the chunks of `batch` at RF.
pub(crate) async fn store_batch(
    sender: Arc<Sender>,
    batch: Batch,
) -> Result<Stored, ChunkNodeError> {
    let mut entries = Vec::with_capacity(batch.blocks.len());
    let mut chunks = Vec::new();
    let mut data_bytes = 0u64;
    let Batch { last, blocks, memory } = batch;
    for (idx, id, data) in blocks {
        entries.push((idx, id));
        if let Some(id) = id {
            data_bytes += data.len() as u64;
            chunks.push((id, data));
        }
    }
    let sent = sender.store(chunks).await?;
    drop(memory);
    // Every chunk of a copy is one block.
    let new_bytes = sent.new_chunks * BLOCK_SIZE as u64;
    Ok(Stored { last, entries, data_bytes, sent: sent.puts, new_bytes })
}
