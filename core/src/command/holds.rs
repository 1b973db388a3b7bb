//! Garbage collection's side of the records: the holds of pending snapshots
//! and hydrating volumes, and the generation each pass's fence raises.
//!
//! Invariants it keeps: a pending snapshot has a hold from the command that
//! creates it until the one that completes, fails or deletes it; a volume
//! restored from a snapshot has one (naming the snapshot's manifest root)
//! until it is released or the volume deleted; a hold records the
//! generation current when it was made, and the generation never goes down.

use super::messages::{CommandOutput, CommandResult};
use super::store::Records;
use crate::block::ChunkId;
use crate::records::{Hold, Holder, RecordKey, RECORD_VERSION};

impl Records {
    /// Makes `holder`'s hold, needing `roots` whole, at the current generation.
    pub(super) fn hold(&mut self, holder: Holder, roots: Vec<ChunkId>) {
        let hold = Hold { version: RECORD_VERSION, holder, generation: self.gc.generation, roots };
        self.dirty.insert(RecordKey::Hold(hold.holder.clone()));
        self.holds.insert(hold.holder.clone(), hold);
    }

    /// Drops `holder`'s hold, if it has one.
    pub(super) fn unhold(&mut self, holder: &Holder) {
        if self.holds.remove(holder).is_some() {
            self.dirty.insert(RecordKey::Hold(holder.clone()));
        }
    }

    pub(super) fn gc_fence(&mut self, generation: u64) -> CommandResult {
        if generation > self.gc.generation {
            self.gc.version = RECORD_VERSION;
            self.gc.generation = generation;
            self.dirty.insert(RecordKey::Gc);
        }
        Ok(CommandOutput::Done)
    }

    pub(super) fn release_hold(&mut self, holder: &Holder) -> CommandResult {
        self.unhold(holder);
        Ok(CommandOutput::Done)
    }

    /// The manifest root of `id` when it is a completed snapshot.
    pub(super) fn completed_root(&self, id: &crate::ids::SnapshotId) -> Option<ChunkId> {
        self.snapshots.get(id).filter(|s| s.manifest_root.is_some()).and_then(|s| s.manifest_root)
    }
}
