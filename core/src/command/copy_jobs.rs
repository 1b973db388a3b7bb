//! Copy jobs: the lease-holding side of a pending snapshot. A job is created
//! with its snapshot (by the gateway that will freeze the volume, which holds
//! the first lease), and removed when the snapshot completes, fails or is
//! deleted. Every step names the gateway taking it; a step by a gateway that
//! does not hold the lease changes nothing and answers the job as it is, so
//! the caller sees that it lost the job and stops. The steps themselves
//! ([`JobOp`], [`CopyOutcome`]) are commands, so they live with the rest of
//! the vocabulary in `messages`.

use super::messages::{Command, CommandOutput, CommandResult, CopyOutcome, JobOp, MetaError};
use super::store::Records;
use crate::ids::SnapshotId;
use crate::records::{CopyJob, CopyJobKind, RecordKey, Snapshot, SnapshotState, RECORD_VERSION};

impl Records {
    /// The volume's latest completed snapshot of the same owner and
    /// destination (regional, or the same Outpost): the parent an incremental
    /// copy of `s` builds on. Latest by start time (the freeze instant), ties
    /// broken by id, so every member chooses alike.
    pub(super) fn latest_completed(&self, s: &Snapshot) -> Option<SnapshotId> {
        self.completed_newest_first(&s.volume_id)
            .find(|p| p.owner == s.owner && p.outpost == s.outpost && p.id != s.id)
            .map(|p| p.id.clone())
    }

    /// The job of snapshot `s`, just created, leased to `owner` until `lease_expires_ms`.
    pub(super) fn create_copy_job(
        &mut self,
        s: &Snapshot,
        kind: CopyJobKind,
        owner: String,
        lease_expires_ms: u64,
    ) {
        self.put_copy_job(CopyJob {
            version: RECORD_VERSION,
            snapshot_id: s.id.clone(),
            volume_id: s.volume_id.clone(),
            kind,
            owner: Some(owner),
            lease_expires_ms,
            checkpoint_block: 0,
            acquisitions: 1,
            failed_attempts: 0,
            host_down_since_ms: None,
            last_error: None,
        });
    }

    fn put_copy_job(&mut self, job: CopyJob) {
        self.dirty.insert(RecordKey::CopyJob(job.snapshot_id.clone()));
        self.copy_jobs.insert(job.snapshot_id.clone(), job);
    }

    pub(super) fn remove_copy_job(&mut self, id: &SnapshotId) {
        if self.copy_jobs.remove(id).is_some() {
            self.dirty.insert(RecordKey::CopyJob(id.clone()));
        }
    }

    pub(super) fn apply_job_op(
        &mut self,
        id: SnapshotId,
        owner: String,
        now_ms: u64,
        op: JobOp,
    ) -> CommandResult {
        let Some(mut job) = self.copy_jobs.get(&id).cloned() else {
            let s = self.snapshot(&id)?;
            // Finishing twice is a retry: answer the snapshot as it ended.
            if matches!(op, JobOp::Finish { .. }) && s.state != SnapshotState::Pending {
                return Ok(CommandOutput::Snapshot(s));
            }
            return Err(MetaError::IncorrectState(format!(
                "Snapshot {id} is {}; it has no copy job.",
                s.state.as_str()
            )));
        };
        let holds = job.owner.as_deref() == Some(owner.as_str());
        match op {
            JobOp::Acquire { lease_ms } => {
                if job.can_acquire(&owner, now_ms) {
                    take(&mut job, owner, holds, now_ms, lease_ms);
                    self.put_copy_job(job.clone());
                }
            }
            JobOp::AcquireObserved { lease_ms, seen_expiry_ms } => {
                let lapsed = seen_expiry_ms == Some(job.lease_expires_ms);
                if holds || job.owner.is_none() || lapsed {
                    take(&mut job, owner, holds, now_ms, lease_ms);
                    self.put_copy_job(job.clone());
                }
            }
            JobOp::Renew { lease_ms } if holds => {
                job.lease_expires_ms = now_ms.saturating_add(lease_ms);
                self.put_copy_job(job.clone());
            }
            JobOp::Checkpoint { checkpoint_block, progress, lease_ms } if holds => {
                // Only a checkpoint that moves stops the failure clock: a
                // host that answers without moving is still failing.
                if checkpoint_block > job.checkpoint_block {
                    job.host_down_since_ms = None;
                }
                job.checkpoint_block = job.checkpoint_block.max(checkpoint_block);
                job.lease_expires_ms = now_ms.saturating_add(lease_ms);
                self.put_copy_job(job.clone());
                let mut s = self.snapshot(&id)?;
                let progress = progress.min(99);
                if s.state == SnapshotState::Pending && progress > s.progress {
                    s.progress = progress;
                    self.put_snapshot(s);
                }
            }
            JobOp::HostDown { error } if holds => {
                job.failed_attempts = job.failed_attempts.saturating_add(1);
                job.host_down_since_ms.get_or_insert(now_ms);
                job.last_error = Some(error);
                self.put_copy_job(job.clone());
            }
            JobOp::HostUp if holds => {
                if job.host_down_since_ms.take().is_some() {
                    self.put_copy_job(job.clone());
                }
            }
            JobOp::Finish { outcome } if holds => {
                let cmd = match outcome {
                    CopyOutcome::Completed { manifest_root, full_size_bytes } => {
                        Command::CompleteSnapshot {
                            id,
                            manifest_root,
                            full_size_bytes,
                            at_ms: now_ms,
                        }
                    }
                    CopyOutcome::Failed { message } => {
                        Command::FailSnapshot { id, message, at_ms: now_ms }
                    }
                };
                return self.apply(cmd);
            }
            // Someone else holds the job: the snapshot (for Finish) or the
            // job as it is tells the caller it lost it.
            JobOp::Finish { .. } => return Ok(CommandOutput::Snapshot(self.snapshot(&id)?)),
            JobOp::Renew { .. }
            | JobOp::Checkpoint { .. }
            | JobOp::HostDown { .. }
            | JobOp::HostUp => {}
        }
        Ok(CommandOutput::CopyJob(job))
    }
}

/// `owner` takes `job` (`holds`: it held it already) with a lease of
/// `lease_ms` from `now_ms`. A change of holder raises `acquisitions`, the
/// job's epoch: every holder runs the copy under an epoch higher than any
/// earlier holder's, which is how volume hosts refuse a superseded copy.
fn take(job: &mut CopyJob, owner: String, holds: bool, now_ms: u64, lease_ms: u64) {
    if !holds {
        job.acquisitions = job.acquisitions.saturating_add(1);
        job.owner = Some(owner);
    }
    job.lease_expires_ms = now_ms.saturating_add(lease_ms);
}
