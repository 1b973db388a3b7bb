//! The metadata records as an EC2 caller reaches them: another account's
//! volume or snapshot does not exist for the caller, unless the snapshot is
//! shared with the caller, who may then use it (restore it, read it) but not
//! change it (`UnauthorizedOperation`); a command the metadata group refuses
//! is an EC2 error.

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

/// The caller's snapshot, to change: `InvalidSnapshot.NotFound` for one the
/// caller cannot see, `UnauthorizedOperation` for one shared with it.
pub async fn own_snapshot(
    ctx: &Ctx,
    caller: &Caller,
    id: &SnapshotId,
) -> Result<Snapshot, Ec2Error> {
    let s = usable_snapshot(ctx, caller, id).await?;
    if s.owner != caller.account_id {
        return Err(Ec2Error::UnauthorizedOperation(format!(
            "Snapshot {id} belongs to account {}; only its owner may change it.",
            s.owner
        )));
    }
    Ok(s)
}

/// A snapshot the caller owns or that is shared with it (with the caller's
/// account or with everyone), to use; any other does not exist for it.
pub async fn usable_snapshot(
    ctx: &Ctx,
    caller: &Caller,
    id: &SnapshotId,
) -> Result<Snapshot, Ec2Error> {
    let not_found = || Ec2Error::SnapshotNotFound(id.to_string());
    let s = ctx.snapshot(id).await?.ok_or_else(not_found)?;
    if s.owner == caller.account_id {
        return Ok(s);
    }
    match ctx.sharing(id).await? {
        Some(share) if share.grants(&caller.account_id) => Ok(s),
        _ => Err(not_found()),
    }
}
