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
use cairn_core::command::{Command, CommandOutput, SnapshotScan};
use cairn_core::records::{Snapshot, SnapshotSharing, SnapshotState, VolumeState, RECORD_VERSION};
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

/// Whether the caller sees snapshot `s` (shared as `sharing` says) in
/// DescribeSnapshots with these `Owner.N` and `RestorableBy.N`.
///
/// Without either: its own snapshots, those shared with it and public ones.
/// `Owner.N` keeps those of the named owners (`self`: the caller; `amazon`
/// and `aws-marketplace` own nothing here). `RestorableBy.N` keeps those the
/// named users may restore: `self` the caller's own and those shared with it
/// by account, `all` public ones, an account id the caller's own snapshots
/// that account may restore.
pub fn visible(
    s: &Snapshot,
    sharing: Option<&SnapshotSharing>,
    caller_account: &str,
    owners: &[String],
    restorable_by: &[String],
) -> bool {
    let mine = s.owner == caller_account;
    let public = sharing.is_some_and(|sh| sh.public);
    let named = |account: &str| sharing.is_some_and(|sh| sh.user_ids.contains(account));
    if !(mine || public || named(caller_account)) {
        return false;
    }
    let owner_ok =
        owners.is_empty() || owners.iter().any(|o| if o == "self" { mine } else { o == &s.owner });
    let restorable_ok = restorable_by.is_empty()
        || restorable_by.iter().any(|r| match r.as_str() {
            "self" => mine || named(caller_account),
            "all" => public,
            // The caller's own id is `self`; another account's counts only
            // for the caller's own snapshots.
            account if account == caller_account => mine || named(account),
            account => mine && (public || named(account)),
        });
    owner_ok && restorable_ok
}

/// Keeps of `batch` what the caller asked to see: visible under `Owner.N` and
/// `RestorableBy.N`, other accounts' tags cleared, the filters matched.
async fn select(
    ctx: &Ctx,
    me: &str,
    input: &DescribeSnapshotsInput,
    batch: Vec<Snapshot>,
) -> Result<Vec<Snapshot>, Ec2Error> {
    if batch.is_empty() {
        return Ok(batch);
    }
    let sharings = ctx.sharings_of(batch.iter().map(|s| s.id.clone()).collect()).await?;
    let mut kept: Vec<Snapshot> = batch
        .into_iter()
        .filter(|s| visible(s, sharings.get(&s.id), me, &input.owners, &input.restorable_by))
        .collect();
    for s in kept.iter_mut().filter(|s| s.owner != me) {
        // Tags belong to the account that set them: a grantee sees none of the owner's.
        s.tags.clear();
    }
    kept.retain(|s| filters::matches(s, &input.filters, filters::snapshot_values));
    Ok(kept)
}

/// The scan that walks the narrowest index the request allows: the filters
/// with exact values (a tag, volume ids) and `Owner.N` naming only the
/// caller narrow it; `select` still checks everything on each record.
fn scan_for(me: &str, input: &DescribeSnapshotsInput) -> SnapshotScan {
    let only_me = !input.owners.is_empty() && input.owners.iter().all(|o| o == "self" || o == me);
    let volumes = filters::exact_values(&input.filters, "volume-id")
        .map(|v| v.iter().filter_map(|id| VolumeId::parse(id)).collect())
        .unwrap_or_default();
    SnapshotScan {
        visible_to: Some(me.to_string()),
        owner: only_me.then(|| me.to_string()),
        volumes,
        tag: filters::exact_tag(&input.filters),
        ..Default::default()
    }
}

pub async fn describe(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    rid: &str,
    input: DescribeSnapshotsInput,
) -> Result<String, Ec2Error> {
    let me = caller.account_id.as_str();
    let key = |s: &Snapshot| s.id.to_string();
    let (page, next) = if input.snapshot_ids.is_empty() {
        let scan = scan_for(me, &input);
        if scan.volumes.is_empty() && filters::exact_values(&input.filters, "volume-id").is_some() {
            // Exact volume ids none of which is well formed: nothing matches.
            (Vec::new(), None)
        } else {
            filters::collect_pages(
                "snap",
                key,
                input.max_results,
                input.next_token.as_deref(),
                SnapshotId::parse,
                |after, limit| {
                    let scan = SnapshotScan { after, limit, ..scan.clone() };
                    let input = &input;
                    async move {
                        let page = ctx.snapshot_page(scan).await?;
                        Ok((select(ctx, me, input, page.items).await?, page.next))
                    }
                },
            )
            .await?
        }
    } else {
        // What the caller may see at all: a named snapshot outside it does not exist.
        let scan = SnapshotScan {
            ids: input.snapshot_ids.clone(),
            visible_to: Some(me.to_string()),
            ..Default::default()
        };
        let named = ctx.snapshots_where(scan).await?;
        if let Some(missing) =
            input.snapshot_ids.iter().find(|id| !named.iter().any(|s| &s.id == *id))
        {
            return Err(Ec2Error::SnapshotNotFound(missing.to_string()));
        }
        let kept = select(ctx, me, &input, named).await?;
        filters::page(kept, key, "snap", input.max_results, input.next_token.as_deref())?
    };
    let tierings = ctx.tierings_of(page.iter().map(|s| s.id.clone()).collect()).await?;
    let cx = RenderCtx::new(&ctx.config, "");
    Ok(success_body("DescribeSnapshots", rid, |w| {
        w.set("snapshotSet", &page, |w, s| {
            snapshot_members(w, s, &cx);
            let expiry = tierings.get(&s.id).and_then(|t| t.restore_expiry_ms);
            w.opt_leaf("restoreExpiryTime", expiry.map(cairn_core::time::iso8601_ms));
        });
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
        let (friend, stranger) = ("111122223333", "999999999999");
        let strs = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
        let v = |sh: Option<&SnapshotSharing>, who: &str, o: &[&str], r: &[&str]| {
            visible(&s, sh, who, &strs(o), &strs(r))
        };
        // Not shared: the owner alone, under the owner's names.
        assert!(v(None, me, &[], &[]));
        assert!(v(None, me, &["self"], &[]));
        assert!(v(None, me, &[me], &["self"]));
        assert!(v(None, me, &["amazon", "self"], &[]));
        assert!(!v(None, me, &["amazon"], &[]));
        assert!(!v(None, me, &[stranger], &[]));
        assert!(!v(None, me, &[], &["all"]));
        assert!(!v(None, me, &[], &[friend]));
        assert!(!v(None, stranger, &[], &[]));

        let mut sh = SnapshotSharing::new(s.id.clone());
        sh.user_ids.insert(friend.to_string());
        let sh = Some(&sh);
        assert!(v(sh, me, &[], &[friend]));
        assert!(!v(sh, me, &[], &[stranger]));
        assert!(v(sh, friend, &[], &[]));
        assert!(v(sh, friend, &[me], &["self"]));
        // The grantee naming its own account id is the same as `self`.
        assert!(v(sh, friend, &[], &[friend]));
        assert!(!v(sh, friend, &["self"], &[]));
        assert!(!v(sh, friend, &[], &["all"]));
        assert!(!v(sh, stranger, &[], &[]));

        let mut public = SnapshotSharing::new(s.id.clone());
        public.public = true;
        let public = Some(&public);
        assert!(v(public, stranger, &[], &[]));
        assert!(v(public, stranger, &[], &["all"]));
        // Public is not "explicitly shared with me".
        assert!(!v(public, stranger, &[], &["self"]));
        assert!(v(public, me, &[], &[stranger]));
        // An account id in RestorableBy counts only for the caller's own snapshots.
        assert!(!v(public, stranger, &[], &[stranger]));
    }
}
