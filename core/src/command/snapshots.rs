//! Snapshots of volumes, from creation to deletion: CreateSnapshot (within
//! the pending limit, with its copy job and the parent chosen here), progress,
//! completion, failure and deletion. These apply to EBS direct snapshots as
//! well, once started (see `staging`).
//!
//! Invariants it keeps: a snapshot's state changes only from `pending`, to
//! `completed` (100%, with its manifest root) or `error`, and its copy job
//! goes when it does or when the snapshot is deleted; progress never goes
//! down and reaches 100 only on completion; completing twice with the same
//! root is a retry, not an error; a pending snapshot has a hold (see
//! `holds`) naming its parent's manifest root, gone when it stops pending.

use super::messages::{CommandOutput, CommandResult, MetaError};
use super::store::Records;
use crate::block::ChunkId;
use crate::ids::SnapshotId;
use crate::records::{CopyJobKind, Holder, RecordKey, Snapshot, SnapshotState, VolumeState};

/// Pending snapshots allowed per volume, as EC2 has it for gp2/gp3/io1/io2.
pub const MAX_PENDING_SNAPSHOTS: usize = 5;

impl Records {
    /// A pending snapshot of an available or attached volume, its parent
    /// chosen here whatever the proposer sent, and its copy job leased to
    /// `job_owner`.
    pub(super) fn create_snapshot(
        &mut self,
        mut snapshot: Snapshot,
        client_token: Option<String>,
        job_owner: String,
        lease_expires_ms: u64,
    ) -> CommandResult {
        let fingerprint =
            format!("snap:{}:{}:{:?}", snapshot.volume_id, snapshot.description, snapshot.outpost);
        if let Some(id) = self.token_hit(&snapshot.owner, &client_token, &fingerprint)? {
            let existing = SnapshotId::parse(&id).and_then(|s| self.snapshots.get(&s).cloned());
            if let Some(s) = existing {
                return Ok(CommandOutput::Snapshot(s));
            }
        }
        let vol = self.volume(&snapshot.volume_id)?;
        if vol.state != VolumeState::Available && vol.state != VolumeState::InUse {
            return Err(MetaError::IncorrectState(format!(
                "Volume '{}' is in state '{}'.",
                vol.id,
                vol.state.as_str()
            )));
        }
        if self.pending_snapshots(&vol.id) >= MAX_PENDING_SNAPSHOTS {
            return Err(MetaError::ConcurrentSnapshotLimit(vol.id.to_string()));
        }
        self.remember_token(&snapshot.owner, client_token, fingerprint, snapshot.id.to_string());
        snapshot.parent = self.latest_completed(&snapshot);
        let roots = snapshot.parent.as_ref().and_then(|p| self.completed_root(p));
        self.hold(Holder::Snapshot(snapshot.id.clone()), roots.into_iter().collect());
        self.create_copy_job(&snapshot, CopyJobKind::Snapshot, job_owner, lease_expires_ms);
        self.put_snapshot(snapshot.clone());
        Ok(CommandOutput::Snapshot(snapshot))
    }

    pub(super) fn snapshot_progress(&mut self, id: SnapshotId, progress: u8) -> CommandResult {
        let mut s = self.snapshot(&id)?;
        if s.state == SnapshotState::Pending && progress > s.progress {
            s.progress = progress.min(99);
            self.put_snapshot(s.clone());
        }
        Ok(CommandOutput::Snapshot(s))
    }

    pub(super) fn raise_snapshot_volume_size(
        &mut self,
        id: SnapshotId,
        size_gib: u64,
    ) -> CommandResult {
        let mut s = self.snapshot(&id)?;
        if s.state == SnapshotState::Pending && size_gib > s.volume_size_gib {
            s.volume_size_gib = size_gib;
            self.put_snapshot(s.clone());
        }
        Ok(CommandOutput::Snapshot(s))
    }

    pub(super) fn complete_snapshot(
        &mut self,
        id: SnapshotId,
        manifest_root: ChunkId,
        full_size_bytes: u64,
        at_ms: u64,
    ) -> CommandResult {
        let mut s = self.snapshot(&id)?;
        match s.state {
            SnapshotState::Pending => {
                s.state = SnapshotState::Completed;
                s.progress = 100;
                s.manifest_root = Some(manifest_root);
                s.full_size_bytes = Some(full_size_bytes);
                s.completion_time_ms = Some(at_ms);
                self.put_snapshot(s.clone());
                self.remove_copy_job(&id);
                self.unhold(&Holder::Snapshot(id));
                Ok(CommandOutput::Snapshot(s))
            }
            // Completing twice with the same root is a retry, not an error.
            SnapshotState::Completed if s.manifest_root == Some(manifest_root) => {
                Ok(CommandOutput::Snapshot(s))
            }
            _ => Err(MetaError::IncorrectState(format!(
                "Snapshot {id} is in state {}.",
                s.state.as_str()
            ))),
        }
    }

    pub(super) fn fail_snapshot(
        &mut self,
        id: SnapshotId,
        message: String,
        at_ms: u64,
    ) -> CommandResult {
        let mut s = self.snapshot(&id)?;
        if s.state == SnapshotState::Pending {
            s.state = SnapshotState::Error;
            s.state_message = Some(message);
            s.completion_time_ms = Some(at_ms);
            self.put_snapshot(s.clone());
            self.remove_copy_job(&id);
            self.unhold(&Holder::Snapshot(id));
        }
        Ok(CommandOutput::Snapshot(s))
    }

    pub(super) fn delete_snapshot(&mut self, id: SnapshotId) -> CommandResult {
        self.snapshot(&id)?;
        self.remove_snapshot(&id);
        self.remove_copy_job(&id);
        self.unhold(&Holder::Snapshot(id.clone()));
        if self.sharing.remove(&id).is_some() {
            self.dirty.insert(RecordKey::Sharing(id.clone()));
        }
        self.untier_deleted(&id);
        self.dirty.insert(RecordKey::Snapshot(id));
        Ok(CommandOutput::Done)
    }
}
