//! The lease of a copy job: each step is a compare-and-set in the metadata
//! group that succeeds only while this gateway holds the job, and work runs
//! under a renewer that stops it as soon as the lease is lost or lapses.

use crate::ctx::Ctx;
use cairn_core::command::{Command, CommandOutput, JobOp};
use cairn_core::records::CopyJob;
use cairn_core::SnapshotId;
use cairn_proto::MetaClientError;
use std::future::Future;
use std::time::{Duration, Instant};

/// Why a copy stopped short of completing.
#[derive(Debug)]
pub enum Stop {
    /// This gateway no longer holds the job (another one does, or the
    /// snapshot ended or was deleted): stop without touching it.
    Lost(String),
    /// The snapshot cannot complete: it ends in `error` with this StateMessage.
    Failed(String),
}

/// Why one job step was not taken.
pub enum StepError {
    Lost(String),
    /// The metadata group did not answer; the step may be retried.
    Unavailable(MetaClientError),
}

/// Takes one step of job `id` as this gateway. `Ok` only while this gateway
/// holds the job after the step.
pub async fn step(ctx: &Ctx, id: &SnapshotId, op: JobOp) -> Result<CopyJob, StepError> {
    let me = ctx.gateway_id();
    let cmd = Command::CopyJob { id: id.clone(), owner: me.to_string(), now_ms: ctx.now_ms(), op };
    match ctx.meta.write(&cmd).await {
        Ok(Ok(CommandOutput::CopyJob(j))) if j.owner.as_deref() == Some(me) => Ok(j),
        Ok(Ok(CommandOutput::CopyJob(j))) => Err(StepError::Lost(format!(
            "gateway {} holds the job now",
            j.owner.as_deref().unwrap_or("(none)")
        ))),
        Ok(Ok(other)) => {
            Err(StepError::Lost(format!("unexpected answer to a job step: {other:?}")))
        }
        Ok(Err(e)) => Err(StepError::Lost(e.to_string())),
        Err(e) => Err(StepError::Unavailable(e)),
    }
}

/// Runs `work` while renewing the job's lease every third of its length; the
/// caller holds the lease when it calls. Stops `work` and answers
/// [`Stop::Lost`] as soon as the lease is lost, or lapsed without renewal.
pub async fn holding_lease<T>(
    ctx: &Ctx,
    id: &SnapshotId,
    work: impl Future<Output = T>,
) -> Result<T, Stop> {
    let lease_ms = ctx.config.job_lease_ms;
    let lease = Duration::from_millis(lease_ms);
    let renewer = async {
        let mut valid_until = Instant::now() + lease;
        loop {
            tokio::time::sleep(lease / 3).await;
            let sent = Instant::now();
            match step(ctx, id, JobOp::Renew { lease_ms }).await {
                Ok(_) => valid_until = sent + lease,
                Err(StepError::Lost(why)) => return why,
                Err(StepError::Unavailable(e)) if Instant::now() >= valid_until => {
                    return format!(
                        "the lease lapsed while the metadata group was unreachable: {e}"
                    )
                }
                Err(StepError::Unavailable(e)) => {
                    tracing::warn!(snapshot = %id, error = %e, "lease not renewed yet")
                }
            }
        }
    };
    tokio::select! {
        r = work => Ok(r),
        why = renewer => Err(Stop::Lost(why)),
    }
}
