//! The metadata records as an EC2 caller reaches them: another account's
//! volume or snapshot does not exist for the caller, and a command the
//! metadata group refuses is an EC2 error.

use super::error::Ec2Error;
use crate::ctx::Ctx;
use crate::http::auth::Caller;
use cairn_core::command::{Command, CommandOutput};
use cairn_core::records::{Snapshot, Volume};
use cairn_core::{SnapshotId, VolumeId};

/// A command whose refusal is an EC2 error.
pub async fn write(ctx: &Ctx, cmd: &Command) -> Result<CommandOutput, Ec2Error> {
    Ok(ctx.meta.write(cmd).await??)
}

/// The caller's volume, or `InvalidVolume.NotFound` (another account's
/// volume does not exist for this caller).
pub async fn own_volume(ctx: &Ctx, caller: &Caller, id: &VolumeId) -> Result<Volume, Ec2Error> {
    match ctx.volume(id).await? {
        Some(v) if v.owner == caller.account_id => Ok(v),
        _ => Err(Ec2Error::VolumeNotFound(id.to_string())),
    }
}

pub async fn own_snapshot(
    ctx: &Ctx,
    caller: &Caller,
    id: &SnapshotId,
) -> Result<Snapshot, Ec2Error> {
    match ctx.snapshot(id).await? {
        Some(s) if s.owner == caller.account_id => Ok(s),
        _ => Err(Ec2Error::SnapshotNotFound(id.to_string())),
    }
}
