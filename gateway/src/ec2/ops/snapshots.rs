//! CreateSnapshot, DescribeSnapshots, DeleteSnapshot.

use crate::config::GatewayConfig;
use crate::ctx::Ctx;
use crate::ec2::error::Ec2Error;
use crate::ec2::filters::{self, SNAPSHOT_FILTERS};
use crate::ec2::params::{outpost_from_arn, snapshot_id, volume_id, Filter, Params};
use crate::ec2::records;
use crate::ec2::xml::{snapshot_members, success_body, RenderCtx};
use crate::http::auth::Caller;
use crate::jobs;
use cairn_core::command::{Command, CommandOutput};
use cairn_core::records::{Snapshot, SnapshotState, VolumeState, RECORD_VERSION};
use cairn_core::time::now_ms;
use cairn_core::{OutpostId, SnapshotId, VolumeId};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq)]
pub struct CreateSnapshotInput {
    pub volume_id: VolumeId,
    pub description: String,
    /// A local snapshot on this Outpost (the volume must be on it).
    pub outpost: Option<OutpostId>,
    pub tags: BTreeMap<String, String>,
}

pub fn parse_create(p: &Params, config: &GatewayConfig) -> Result<CreateSnapshotInput, Ec2Error> {
    let volume_id = volume_id(p.required("VolumeId")?)?;
    let description = p.get("Description").unwrap_or_default().to_string();
    if description.chars().count() > 255 {
        return Err(Ec2Error::InvalidParameterValue(
            "The description must be at most 255 characters long.".into(),
        ));
    }
    let outpost = p.get("OutpostArn").map(|a| outpost_from_arn(a, config)).transpose()?;
    match p.get("Location") {
        None | Some("regional") => {}
        Some(other) => {
            return Err(Ec2Error::InvalidParameterValue(format!(
                "Location '{other}' is not supported: Cairn has no Local Zones; use OutpostArn for a local snapshot on an Outpost."
            )))
        }
    }
    let tags = p.tag_specifications("snapshot")?;
    Ok(CreateSnapshotInput { volume_id, description, outpost, tags })
}

/// Writes the `pending` record and its copy job (leased to this gateway),
/// freezes the volume (so every write acknowledged before this answer is in
/// the snapshot), answers, and leaves the copy to the background job.
pub async fn create(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    rid: &str,
    input: CreateSnapshotInput,
) -> Result<String, Ec2Error> {
    let volume = records::own_volume(ctx, caller, &input.volume_id).await?;
    if input.outpost.is_some() && input.outpost != volume.outpost {
        return Err(Ec2Error::InvalidParameterValue(format!(
            "A local snapshot must be on the volume's Outpost; volume {} is {}.",
            volume.id,
            match &volume.outpost {
                Some(op) => format!("on Outpost {op}"),
                None => "not on an Outpost".to_string(),
            }
        )));
    }
    if volume.state != VolumeState::Available && volume.state != VolumeState::InUse {
        return Err(Ec2Error::IncorrectState(format!(
            "Volume '{}' is in state '{}'.",
            volume.id,
            volume.state.as_str()
        )));
    }
    let id = SnapshotId::generate();
    // The local job slot, taken before the job exists, so this gateway's job
    // runner leaves the job alone while this request freezes the volume.
    let claim = ctx
        .jobs
        .claim(id.as_str())
        .ok_or_else(|| Ec2Error::InternalError(format!("snapshot id {id} already in use")))?;
    let snapshot = Snapshot {
        version: RECORD_VERSION,
        id,
        volume_id: volume.id.clone(),
        owner: caller.account_id.clone(),
        state: SnapshotState::Pending,
        state_message: None,
        progress: 0,
        start_time_ms: now_ms(),
        completion_time_ms: None,
        description: input.description,
        volume_size_gib: volume.size_gib,
        encrypted: volume.encrypted,
        outpost: input.outpost,
        storage_tier: "standard".into(),
        manifest_root: None,
        parent: None,
        full_size_bytes: None,
        tags: input.tags,
    };
    let cmd = Command::CreateSnapshot {
        snapshot,
        client_token: None,
        job_owner: ctx.gateway_id().to_string(),
        lease_expires_ms: ctx.now_ms().saturating_add(ctx.config.job_lease_ms),
    };
    let CommandOutput::Snapshot(snapshot) = records::write(ctx, &cmd).await? else {
        return Err(Ec2Error::InternalError("CreateSnapshot returned no snapshot".into()));
    };
    let snapshot = jobs::copy::freeze_and_copy(ctx, &volume, snapshot, claim).await?;
    let cx = RenderCtx::new(&ctx.config, "");
    Ok(success_body("CreateSnapshot", rid, |w| snapshot_members(w, &snapshot, &cx)))
}

#[derive(Clone, Debug, PartialEq)]
pub struct DescribeSnapshotsInput {
    pub snapshot_ids: Vec<SnapshotId>,
    pub owners: Vec<String>,
    pub restorable_by: Vec<String>,
    pub filters: Vec<Filter>,
    pub max_results: Option<usize>,
    pub next_token: Option<String>,
}

pub fn parse_describe(p: &Params) -> Result<DescribeSnapshotsInput, Ec2Error> {
    let snapshot_ids =
        p.list("SnapshotId").iter().map(|s| snapshot_id(s)).collect::<Result<Vec<_>, _>>()?;
    let owners = p.list("Owner");
    let restorable_by = p.list("RestorableBy");
    let filters = p.filters()?;
    filters::check_names(&filters, SNAPSHOT_FILTERS)?;
    let max_results = p.max_results(5, 1000)?;
    if max_results.is_some() && !snapshot_ids.is_empty() {
        return Err(Ec2Error::InvalidParameterCombination(
            "The parameter snapshotSet cannot be used with the parameter maxResults".into(),
        ));
    }
    let next_token = p.get("NextToken").filter(|t| !t.is_empty()).map(str::to_string);
    if let Some(t) = &next_token {
        filters::decode_token("snap", t)?;
    }
    Ok(DescribeSnapshotsInput {
        snapshot_ids,
        owners,
        restorable_by,
        filters,
        max_results,
        next_token,
    })
}

/// Which of the caller's snapshots `Owner.N` and `RestorableBy.N` keep. There
/// is no sharing yet: a caller sees only its own snapshots, which it can
/// restore; `all` (public) and other accounts match none of them.
pub fn visible(
    s: &Snapshot,
    caller_account: &str,
    owners: &[String],
    restorable_by: &[String],
) -> bool {
    let me = |v: &String| v == "self" || v == caller_account;
    s.owner == caller_account
        && (owners.is_empty() || owners.iter().any(|o| me(o) || o == &s.owner))
        && (restorable_by.is_empty() || restorable_by.iter().any(me))
}

pub async fn describe(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    rid: &str,
    input: DescribeSnapshotsInput,
) -> Result<String, Ec2Error> {
    let all = ctx.snapshots().await?;
    if let Some(missing) = input.snapshot_ids.iter().find(|id| !all.iter().any(|s| &s.id == *id)) {
        return Err(Ec2Error::SnapshotNotFound(missing.to_string()));
    }
    let mut snaps: Vec<Snapshot> = all
        .into_iter()
        .filter(|s| visible(s, &caller.account_id, &input.owners, &input.restorable_by))
        .filter(|s| input.snapshot_ids.is_empty() || input.snapshot_ids.contains(&s.id))
        .filter(|s| filters::matches(s, &input.filters, filters::snapshot_values))
        .collect();
    snaps.sort_by(|a, b| a.id.cmp(&b.id));
    let (page, next) = filters::page(
        snaps,
        |s| s.id.to_string(),
        "snap",
        input.max_results,
        input.next_token.as_deref(),
    )?;
    let cx = RenderCtx::new(&ctx.config, "");
    Ok(success_body("DescribeSnapshots", rid, |w| {
        w.set("snapshotSet", &page, |w, s| snapshot_members(w, s, &cx));
        w.opt_leaf("nextToken", next);
    }))
}

pub async fn delete(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    rid: &str,
    id: SnapshotId,
) -> Result<String, Ec2Error> {
    records::own_snapshot(ctx, caller, &id).await?;
    // A volume still hydrating from the snapshot needs its chunks.
    let restoring = ctx
        .volumes()
        .await?
        .into_iter()
        .find(|v| v.state == VolumeState::Creating && v.snapshot_id.as_ref() == Some(&id));
    if let Some(v) = restoring {
        return Err(Ec2Error::SnapshotInUse(format!(
            "The snapshot {id} is currently in use by {}, which is being created from it.",
            v.id
        )));
    }
    records::write(ctx, &Command::DeleteSnapshot { id }).await?;
    Ok(success_body("DeleteSnapshot", rid, |w| {
        w.leaf("return", "true");
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::snapshot;

    #[test]
    fn visibility() {
        let s = snapshot();
        let me = "123456789012";
        let v = |o: &[&str], r: &[&str]| {
            let o: Vec<String> = o.iter().map(|x| x.to_string()).collect();
            let r: Vec<String> = r.iter().map(|x| x.to_string()).collect();
            visible(&s, me, &o, &r)
        };
        assert!(v(&[], &[]));
        assert!(v(&["self"], &[]));
        assert!(v(&[me], &["self"]));
        assert!(v(&["amazon", "self"], &[]));
        assert!(!v(&["amazon"], &[]));
        assert!(!v(&["999999999999"], &[]));
        assert!(!v(&[], &["all"]));
        assert!(!v(&[], &["999999999999"]));
        assert!(!visible(&s, "999999999999", &[], &[]));
    }
}
