//! The store's side of scrubbing: which records to check, pack by pack in
//! offset order, and checking one (see [`crate::store::shared`] for the
//! check itself and burying). The pace, the checkpoint and repair are the
//! scrubber's (`crate::scrub`).
//!
//! A pass checks the records the index points at: every stored chunk
//! (manifest pages and roots included), in sealed packs and in the pack
//! being appended (an indexed record is durable and never changes).
//! Records the index does not point at (swept, duplicates, tombstoned) are
//! dead and left to compaction. A position is (pack, offset): packs are
//! checked in number order and records in offset order, so a pass resumed
//! from a position checks what lies after it.

use crate::error::ChunkNodeError;
use crate::store::index::SHARDS;
use crate::store::packfile::Loc;
use crate::store::shared::{Checked, Shared};
use cairn_core::ChunkId;

/// The numbers of the packs open now, in order.
pub(crate) fn packs(shared: &Shared) -> Vec<u32> {
    let mut all: Vec<u32> =
        shared.packs.read().unwrap_or_else(|e| e.into_inner()).keys().copied().collect();
    all.sort_unstable();
    all
}

/// The indexed records of pack `pack` at `from` or after, by offset.
/// Walks the whole index, one shard at a time.
pub(crate) fn records(shared: &Shared, pack: u32, from: u64) -> Vec<(ChunkId, Loc)> {
    let mut out = Vec::new();
    for n in 0..SHARDS {
        let shard = shared.index.read_shard(n);
        out.extend(
            shard
                .iter()
                .filter(|(_, e)| e.loc.pack == pack && e.loc.offset >= from)
                .map(|(id, e)| (*id, e.loc)),
        );
    }
    out.sort_unstable_by_key(|(_, l)| l.offset);
    out
}

/// Checks `id`'s record at `loc` if the index still points at it.
/// Blocking: it reads the record.
pub(crate) fn check(shared: &Shared, id: ChunkId, loc: Loc) -> Result<Checked, ChunkNodeError> {
    if shared.index.loc(&id) != Some(loc) {
        return Ok(Checked::Gone);
    }
    match shared.pack(loc.pack) {
        Some(pack) => shared.check(id, loc, &pack),
        None => Ok(Checked::Gone),
    }
}
