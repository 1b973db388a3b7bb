//! What every copy job attempt shares, whatever it moves (a frozen volume,
//! `copy.rs`; a snapshot between placement domains, `transfer.rs`): the
//! state carried from one attempt to the next, how an attempt fails, and
//! the job steps it takes on the way (checkpoints with progress, the host
//! answering again, the snapshot still pending).

use super::lease::{step, StepError, Stop};
use crate::ctx::Ctx;
use crate::nodes::HostError;
use cairn_core::command::JobOp;
use cairn_core::records::{Snapshot, SnapshotState};
use cairn_core::{ChunkId, SnapshotId};
use cairn_proto::{pb, MetaClientError};

/// Progress is committed when it rose by at least this many points.
pub const PROGRESS_STEP: u8 = 5;

/// True when a copy at `percent` should commit progress, `committed` being
/// the last committed value. 100% is never committed as progress: only
/// completion makes a snapshot 100%.
pub fn should_commit(committed: u8, percent: u32) -> bool {
    percent < 100 && percent >= u32::from(committed) + u32::from(PROGRESS_STEP)
}

/// A copy's outcome: the manifest root and the size it covers.
pub(super) struct CopyDone {
    pub(super) manifest_root: ChunkId,
    pub(super) full_size_bytes: u64,
}

/// What one copy attempt learnt, carried across attempts.
pub(super) struct Attempt {
    /// The last progress committed.
    pub(super) committed: u8,
    /// The job records the host as failing.
    pub(super) host_down: bool,
    /// The copy moved forward during this attempt: the host reported a
    /// checkpoint past the one it started from, or finished. A host that
    /// answers but cannot move (a destination node is gone) does not count,
    /// or each retry would restart the failure clock and the snapshot
    /// would stay pending for ever.
    pub(super) heard: bool,
    /// The checkpoint the host reported first in this attempt.
    pub(super) first_checkpoint: Option<u64>,
    /// Where a transfer resumes: manifest entries whose chunks the
    /// destination holds (the job's checkpoint, then this run's).
    pub(super) resume_at: u64,
}

/// A failed attempt: the host's failure, or a reason to stop altogether.
pub(super) enum AttemptError {
    Host(HostError),
    Stop(Stop),
}

impl From<HostError> for AttemptError {
    fn from(e: HostError) -> Self {
        AttemptError::Host(e)
    }
}

impl From<MetaClientError> for AttemptError {
    fn from(e: MetaClientError) -> Self {
        AttemptError::Host(HostError::Metadata(e))
    }
}

/// The snapshot of a running job; any other state means the job is over.
pub(super) async fn pending_snapshot(ctx: &Ctx, id: &SnapshotId) -> Result<Snapshot, AttemptError> {
    match ctx.snapshot(id).await? {
        Some(s) if s.state == SnapshotState::Pending => Ok(s),
        Some(s) => {
            Err(AttemptError::Stop(Stop::Lost(format!("the snapshot is {}", s.state.as_str()))))
        }
        None => Err(AttemptError::Stop(Stop::Lost("the snapshot was deleted".into()))),
    }
}

/// The host answers again: the job stops counting it as failing.
pub(super) async fn record_host_up(
    ctx: &Ctx,
    id: &SnapshotId,
    a: &mut Attempt,
) -> Result<(), AttemptError> {
    match step(ctx, id, JobOp::HostUp).await {
        Ok(_) => a.host_down = false,
        Err(StepError::Lost(why)) => return Err(AttemptError::Stop(Stop::Lost(why))),
        Err(StepError::Unavailable(e)) => {
            tracing::warn!(snapshot = %id, error = %e, "host-up not recorded")
        }
    }
    Ok(())
}

/// Commits the host's checkpoint and the progress (below 100: only
/// completion makes a snapshot 100%), which also renews the lease.
pub(super) async fn commit_checkpoint(
    ctx: &Ctx,
    id: &SnapshotId,
    msg: &pb::CopyProgress,
    a: &mut Attempt,
) -> Result<(), AttemptError> {
    let progress = msg.percent.min(99) as u8;
    let op = JobOp::Checkpoint {
        checkpoint_block: msg.checkpoint_block,
        progress,
        lease_ms: ctx.config.job_lease_ms,
    };
    match step(ctx, id, op).await {
        Ok(j) => {
            a.committed = progress;
            a.host_down = j.host_down_since_ms.is_some();
        }
        Err(StepError::Lost(why)) => return Err(AttemptError::Stop(Stop::Lost(why))),
        // Progress is advisory; the copy goes on without it.
        Err(StepError::Unavailable(e)) => {
            tracing::warn!(snapshot = %id, error = %e, "checkpoint not committed")
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_commits_every_five_points() {
        let mut committed = 0u8;
        let mut commits = Vec::new();
        for p in [0u32, 1, 4, 5, 6, 9, 10, 30, 31, 99, 100] {
            if should_commit(committed, p) {
                committed = p as u8;
                commits.push(p);
            }
        }
        assert_eq!(commits, [5, 10, 30, 99]);
        assert!(!should_commit(97, 100));
        assert!(!should_commit(0, 4));
    }
}
