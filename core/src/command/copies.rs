//! CopySnapshot: a snapshot one may use (one's own, or shared with one)
//! copied into a snapshot of one's own, with its own id, description and
//! tags. Chunk ids and manifests are content-addressed, so a copy's manifest
//! root is always its source's: what differs is where the chunks must be.
//!
//! - Within one placement domain (the region, or one Outpost) nothing moves:
//!   the copy is a completed record on the source's root. GC keeps the
//!   chunks while either exists; a pass reads all snapshots at one instant,
//!   and the copy exists before the source can be deleted, so every pass
//!   sees one of them.
//! - Into another domain the copy is `pending` with a transfer job (leased
//!   like CreateSnapshot's) and a hold on the source's root: the job puts
//!   what the destination lacks, then completes the copy on that root.

use super::messages::{
    CommandOutput, CommandResult, MetaError, DIRECT_VOLUME_ID, MAX_CONCURRENT_COPIES,
};
use super::store::Records;
use crate::block::ChunkId;
use crate::ids::{SnapshotId, VolumeId};
use crate::records::{CopyJobKind, Holder, Snapshot, SnapshotState};

impl Records {
    /// `source`'s snapshot and manifest root, when `account` may copy it: it
    /// is completed and the account's or shared with it.
    fn copy_source(
        &self,
        source: &SnapshotId,
        account: &str,
    ) -> Result<(Snapshot, ChunkId), MetaError> {
        let src = self.snapshot(source)?;
        if !self.usable_by(&src, account) {
            return Err(MetaError::SnapshotNotFound(source.to_string()));
        }
        match src.manifest_root.filter(|_| src.state == SnapshotState::Completed) {
            Some(root) => Ok((src, root)),
            None => Err(MetaError::IncorrectState(format!(
                "Snapshot '{source}' is in state '{}'; only completed snapshots can be copied.",
                src.state.as_str()
            ))),
        }
    }

    /// What every copy takes from its source, whatever the proposer sent:
    /// no real volume (as AWS gives copies), the size and the encryption.
    fn copy_fields(&self, copy: &mut Snapshot, src: &Snapshot) -> Result<(), MetaError> {
        if self.snapshots.contains_key(&copy.id) {
            return Err(MetaError::InvalidId(copy.id.to_string()));
        }
        copy.volume_id = VolumeId::parse(DIRECT_VOLUME_ID).unwrap_or(src.volume_id.clone());
        copy.volume_size_gib = src.volume_size_gib;
        copy.encrypted = src.encrypted;
        copy.parent = None;
        Ok(())
    }

    /// A copy within the source's placement domain (see the module comment).
    /// A copy the proposer found invalid (a bad presigned URL) fails as
    /// EC2's do: in `error` with the reason, holding nothing.
    pub(super) fn copy_snapshot(
        &mut self,
        mut copy: Snapshot,
        source: &SnapshotId,
    ) -> CommandResult {
        let (src, root) = self.copy_source(source, &copy.owner)?;
        if copy.state != SnapshotState::Error && copy.outpost != src.outpost {
            return Err(MetaError::IncorrectState(format!(
                "Snapshot '{source}' is stored elsewhere; its copy moves data."
            )));
        }
        self.copy_fields(&mut copy, &src)?;
        copy.completion_time_ms = Some(copy.completion_time_ms.unwrap_or(copy.start_time_ms));
        if copy.state == SnapshotState::Error {
            copy.progress = 0;
            copy.manifest_root = None;
            copy.full_size_bytes = None;
            self.put_snapshot(copy.clone());
            return Ok(CommandOutput::Snapshot(copy));
        }
        copy.state = SnapshotState::Completed;
        copy.state_message = None;
        copy.progress = 100;
        copy.storage_tier = src.storage_tier.clone();
        copy.manifest_root = Some(root);
        copy.full_size_bytes = src.full_size_bytes;
        self.put_snapshot(copy.clone());
        Ok(CommandOutput::Snapshot(copy))
    }

    /// A copy into another placement domain (see the module comment).
    pub(super) fn transfer_snapshot(
        &mut self,
        mut copy: Snapshot,
        source: &SnapshotId,
        job_owner: String,
        lease_expires_ms: u64,
    ) -> CommandResult {
        let (src, root) = self.copy_source(source, &copy.owner)?;
        if copy.outpost == src.outpost {
            return Err(MetaError::IncorrectState(format!(
                "Snapshot '{source}' is stored there already; its copy moves no data."
            )));
        }
        self.copy_fields(&mut copy, &src)?;
        let in_flight = self.copies_to(&copy);
        if in_flight >= MAX_CONCURRENT_COPIES {
            return Err(MetaError::ResourceLimitExceeded(format!(
                "{in_flight} snapshot copies to this destination are in progress, the most \
                 there may be at once ({MAX_CONCURRENT_COPIES}); retry when one has ended."
            )));
        }
        copy.state = SnapshotState::Pending;
        copy.state_message = None;
        copy.progress = 0;
        copy.completion_time_ms = None;
        copy.manifest_root = None;
        copy.full_size_bytes = None;
        copy.storage_tier = "standard".into();
        let kind = CopyJobKind::Transfer { source: src.id.clone(), root, from: src.outpost };
        self.hold(Holder::Snapshot(copy.id.clone()), vec![root]);
        self.create_copy_job(&copy, kind, job_owner, lease_expires_ms);
        self.put_snapshot(copy.clone());
        Ok(CommandOutput::Snapshot(copy))
    }

    /// Transfers in flight into `copy`'s destination.
    fn copies_to(&self, copy: &Snapshot) -> usize {
        self.copy_jobs
            .values()
            .filter(|j| matches!(j.kind, CopyJobKind::Transfer { .. }))
            .filter(|j| {
                self.snapshots.get(&j.snapshot_id).is_some_and(|s| s.outpost == copy.outpost)
            })
            .count()
    }
}
