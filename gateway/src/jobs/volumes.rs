//! Volume jobs: the background creation of a `creating` volume (a restore
//! from a snapshot, or an empty volume a previous gateway left half made),
//! and the end of a deletion a previous gateway left `deleting`.

use super::host::{create_on_host, delete_on_host};
use crate::ctx::Ctx;
use crate::retry::{policy, write_retrying};
use cairn_core::command::{Command, MetaError};
use cairn_core::records::{Volume, VolumeState};
use cairn_proto::MetaClientError;
use cairn_worker::{Backoff, Progress, Stop, Worker, WorkerHandle};
use std::sync::Arc;
use std::time::Duration;

/// Attempts of a restore's host CreateVolume before the volume ends in `error`.
const RESTORE_ATTEMPTS: u32 = 5;

/// Starts the background creation of a `creating` volume (a restore, or an
/// empty volume a previous gateway left half made).
pub fn spawn_restore(ctx: &Arc<Ctx>, volume: Volume) {
    let Some(claim) = ctx.jobs.claim(volume.id.as_str()) else { return };
    let c = ctx.clone();
    ctx.jobs.spawn(async move {
        let _claim = claim;
        let state = match create_on_host(&c, &volume, RESTORE_ATTEMPTS).await {
            Ok(()) => VolumeState::Available,
            Err(e) => {
                tracing::warn!(volume = %volume.id, error = %e, "volume creation failed");
                VolumeState::Error
            }
        };
        let cmd = Command::SetVolumeState { id: volume.id.clone(), state };
        match write_retrying(&c, &cmd).await {
            Ok(Ok(_)) => tracing::info!(volume = %volume.id, state = state.as_str(), "volume created"),
            Ok(Err(e)) => tracing::warn!(volume = %volume.id, error = %e, "volume state refused"),
            Err(e) => tracing::error!(volume = %volume.id, error = %e, "could not record the volume state"),
        }
    });
}

/// Finishes the deletion of a volume left `deleting`.
fn spawn_finish_delete(ctx: &Arc<Ctx>, volume: Volume) {
    let Some(claim) = ctx.jobs.claim(volume.id.as_str()) else { return };
    let c = ctx.clone();
    ctx.jobs.spawn(async move {
        let _claim = claim;
        if let Err(e) = delete_on_host(&c, &volume).await {
            tracing::warn!(volume = %volume.id, error = %e, "volume stays deleting");
            return;
        }
        match write_retrying(&c, &Command::DeleteVolume { id: volume.id.clone() }).await {
            Ok(Ok(_)) | Ok(Err(MetaError::VolumeNotFound(_))) => {}
            Ok(Err(e)) => {
                tracing::warn!(volume = %volume.id, error = %e, "volume record not deleted")
            }
            Err(e) => tracing::error!(volume = %volume.id, error = %e, "volume record not deleted"),
        }
    });
}

/// Starts the worker that finishes, in the background, the volumes earlier
/// gateways left `creating` or `deleting`.
pub fn spawn_resume(ctx: &Arc<Ctx>) -> WorkerHandle {
    ctx.workers.spawn(VolumeResume { ctx: ctx.clone() })
}

/// The resume-on-start pass: reads the volumes and starts a job for each
/// one left `creating` or `deleting`. It waits for the metadata group as
/// long as it takes (each failed read is a failing step, retried with the
/// gateway's back-off) or until shutdown, and is done after one pass.
pub struct VolumeResume {
    ctx: Arc<Ctx>,
}

/// The volumes could not be read yet.
#[derive(Debug, thiserror::Error)]
#[error("cannot read volumes to resume jobs yet: {0}")]
pub struct NotYet(#[from] MetaClientError);

impl Worker for VolumeResume {
    type Error = NotYet;

    fn name(&self) -> String {
        "volume job resume".into()
    }

    async fn work(&mut self, stop: &mut Stop) -> Result<Progress, NotYet> {
        let c = &self.ctx;
        let volumes = tokio::select! {
            v = c.volumes() => v?,
            _ = stop.wait() => return Ok(Progress::Done),
        };
        let mut resumed = 0usize;
        for v in volumes {
            match v.state {
                VolumeState::Creating => spawn_restore(c, v),
                VolumeState::Deleting => spawn_finish_delete(c, v),
                _ => continue,
            }
            resumed += 1;
        }
        tracing::info!(resumed, "resumed unfinished volume jobs");
        Ok(Progress::Done)
    }

    /// Never idle: each step is done or failing.
    fn idle_wait(&self) -> Duration {
        Duration::ZERO
    }

    fn backoff(&self) -> Backoff {
        policy()
    }
}
