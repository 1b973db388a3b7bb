//! ModifyVolume's work after the record changed: the volume host grows the
//! volume to the record's size (the same size again is a no-op there), then
//! the modification is `completed`. A request runs it once at once; when
//! that fails (host unreachable), the modification stays `modifying` and
//! the volume sweep runs it again (`spawn_finish`).

use super::host::grow_on_host;
use super::volumes::VolumeJobError;
use crate::ctx::Ctx;
use crate::retry::write_retrying;
use cairn_core::command::Command;
use cairn_core::records::Volume;
use cairn_core::time::now_ms;
use cairn_core::VolumeId;
use std::sync::Arc;

/// Attempts of the host's GrowVolume within one run.
const GROW_ATTEMPTS: u32 = 3;

/// Grows `volume` on its host to its record's size and completes its
/// modification.
pub async fn finish(ctx: &Ctx, volume: &Volume) -> Result<(), VolumeJobError> {
    grow_on_host(ctx, volume, GROW_ATTEMPTS).await?;
    let cmd = Command::FinishModification { id: volume.id.clone(), at_ms: now_ms() };
    write_retrying(ctx, &cmd).await??;
    tracing::info!(volume = %volume.id, size_gib = volume.size_gib, "volume modification completed");
    Ok(())
}

/// Finishes the modification of volume `id` as a job of this gateway (the
/// volume sweep's retry). Nothing to do if the volume is gone.
pub fn spawn_finish(ctx: &Arc<Ctx>, id: VolumeId) {
    let Some(claim) = ctx.jobs.claim(id.as_str()) else { return };
    let c = ctx.clone();
    ctx.jobs.spawn(async move {
        let _claim = claim;
        let volume = match c.volume(&id).await {
            Ok(Some(v)) => v,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(volume = %id, error = %e, "cannot read the volume to modify");
                return;
            }
        };
        if let Err(e) = finish(&c, &volume).await {
            tracing::warn!(volume = %id, error = %e, "volume modification not finished; retrying later");
        }
    });
}
