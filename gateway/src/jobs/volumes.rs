//! Volume jobs: the work that takes a volume out of `creating` or
//! `deleting`. It always runs as a job of this gateway (a task in
//! `Ctx::jobs` holding the volume's claim), never inside a request: a
//! request that starts the work waits for the job's answer, and if the
//! request times out or its client goes away the job still ends the volume.
//!
//! - [`create_empty`]: a new empty volume, for CreateVolume: the host
//!   creates it and it turns `available`; on failure the record goes, so
//!   nothing half-made stays.
//! - [`delete`]: a volume DeleteVolume turned `deleting`: the host drops its
//!   bytes and the record goes; on failure it turns back to its old state.
//! - [`spawn_restore`]: a `creating` volume finished in the background (a
//!   restore from a snapshot, or one a request left): `available`, or
//!   `error` once the host refused it.
//! - [`spawn_finish_delete`]: a `deleting` volume a request left, deleted
//!   once no snapshot of it is pending (one that started just before the
//!   deletion must finish first).
//!
//! What a dead gateway or a failed job left is found by the volume sweep
//! (`jobs/volume_sweep.rs`), which starts the last two.

use super::host::{create_on_host, delete_on_host};
use crate::ctx::Ctx;
use crate::nodes::HostError;
use crate::retry::write_retrying;
use crate::tasks::Claim;
use cairn_core::command::{Command, CommandOutput, MetaError, SnapshotScan};
use cairn_core::records::{SnapshotState, Volume, VolumeState};
use cairn_core::VolumeId;
use cairn_proto::MetaClientError;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::oneshot;

/// Attempts of a restore's host CreateVolume before the volume ends in `error`.
const RESTORE_ATTEMPTS: u32 = 5;

/// Why a volume job did not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum VolumeJobError {
    #[error(transparent)]
    Host(#[from] HostError),
    /// The metadata group refused a step.
    #[error(transparent)]
    Refused(#[from] MetaError),
    #[error(transparent)]
    Metadata(#[from] MetaClientError),
}

/// The answer of a job a request waits for; `Err` if the job was stopped
/// (the gateway shuts down).
pub type Answer<T> = oneshot::Receiver<Result<T, VolumeJobError>>;

/// Runs `work` as this gateway's job for volume `id`, which outlives the
/// caller; answers its outcome on the returned channel. `None` when a job
/// for the volume already runs here (it will end the volume).
fn detached<T, Fut>(ctx: &Arc<Ctx>, id: &VolumeId, work: Fut) -> Option<Answer<T>>
where
    T: Send + 'static,
    Fut: Future<Output = Result<T, VolumeJobError>> + Send + 'static,
{
    let claim = ctx.jobs.claim(id.as_str())?;
    let (tx, rx) = oneshot::channel();
    ctx.jobs.spawn(async move {
        let _claim: Claim = claim;
        // The caller may be gone; the work is done either way.
        let _ = tx.send(work.await);
    });
    Some(rx)
}

/// Creates the empty volume `volume` (just recorded `creating`) on its host
/// and makes it `available`, as a job; on a host failure it removes the
/// record. See [`detached`] for the answer.
pub fn create_empty(ctx: &Arc<Ctx>, volume: Volume) -> Option<Answer<Volume>> {
    let c = ctx.clone();
    detached(ctx, &volume.id.clone(), async move {
        if let Err(e) = create_on_host(&c, &volume, 3).await {
            tracing::warn!(volume = %volume.id, error = %e, "volume host refused CreateVolume");
            let gone = write_retrying(&c, &Command::DeleteVolume { id: volume.id.clone() }).await;
            if !matches!(gone, Ok(Ok(_))) {
                // It stays `creating`: the volume sweep tries the host again.
                tracing::error!(volume = %volume.id, answer = ?gone, "could not remove the volume record");
            }
            return Err(e.into());
        }
        let cmd = Command::SetVolumeState { id: volume.id.clone(), state: VolumeState::Available };
        match write_retrying(&c, &cmd).await?? {
            CommandOutput::Volume(v) => Ok(v),
            other => {
                Err(MetaClientError::Decode(format!("SetVolumeState answered {other:?}")).into())
            }
        }
    })
}

/// Drops the bytes of `volume` (just recorded `deleting`) on its host and
/// removes its record, as a job; on a host failure the volume turns back to
/// `previous`. See [`detached`] for the answer.
pub fn delete(ctx: &Arc<Ctx>, volume: Volume, previous: VolumeState) -> Option<Answer<()>> {
    let c = ctx.clone();
    detached(ctx, &volume.id.clone(), async move {
        let id = volume.id.clone();
        if let Err(e) = delete_on_host(&c, &volume).await {
            let cmd = Command::SetVolumeState { id: id.clone(), state: previous };
            if let Err(back) = write_retrying(&c, &cmd).await {
                // It stays `deleting`: the volume sweep deletes it later.
                tracing::error!(volume = %id, error = %back, "could not restore the volume state");
            }
            return Err(e.into());
        }
        match write_retrying(&c, &Command::DeleteVolume { id }).await? {
            Ok(_) | Err(MetaError::VolumeNotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    })
}

/// Starts the background creation of a `creating` volume (a restore, or an
/// empty volume a request left half made).
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
            // Deleted meanwhile (a failed request removed it): nothing may
            // stay on the host for a volume no record names.
            Ok(Err(MetaError::VolumeNotFound(_))) => {
                if let Err(e) = delete_on_host(&c, &volume).await {
                    tracing::warn!(volume = %volume.id, error = %e, "could not drop an orphaned volume");
                }
            }
            Ok(Err(e)) => tracing::warn!(volume = %volume.id, error = %e, "volume state refused"),
            Err(e) => tracing::error!(volume = %volume.id, error = %e, "could not record the volume state"),
        }
    });
}

/// Finishes the deletion of a volume left `deleting`, unless a snapshot of
/// it is pending: that one started before the deletion and needs the bytes
/// (a later sweep deletes the volume once it ended).
pub fn spawn_finish_delete(ctx: &Arc<Ctx>, volume: Volume) {
    let Some(claim) = ctx.jobs.claim(volume.id.as_str()) else { return };
    let c = ctx.clone();
    ctx.jobs.spawn(async move {
        let _claim = claim;
        let scan = SnapshotScan { volumes: vec![volume.id.clone()], ..Default::default() };
        match c.snapshots_where(scan).await {
            Ok(s) if s.iter().any(|s| s.state == SnapshotState::Pending) => {
                tracing::info!(volume = %volume.id, "deleting volume has a pending snapshot; later");
                return;
            }
            Ok(_) => {}
            Err(e) => return tracing::warn!(volume = %volume.id, error = %e, "volume stays deleting"),
        }
        if let Err(e) = delete_on_host(&c, &volume).await {
            tracing::warn!(volume = %volume.id, error = %e, "volume stays deleting");
            return;
        }
        match write_retrying(&c, &Command::DeleteVolume { id: volume.id.clone() }).await {
            Ok(Ok(_)) | Ok(Err(MetaError::VolumeNotFound(_))) => {
                tracing::info!(volume = %volume.id, "volume deleted")
            }
            Ok(Err(e)) => {
                tracing::warn!(volume = %volume.id, error = %e, "volume record not deleted")
            }
            Err(e) => tracing::error!(volume = %volume.id, error = %e, "volume record not deleted"),
        }
    });
}
