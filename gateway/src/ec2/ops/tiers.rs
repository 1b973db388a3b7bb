//! The archive tier: ModifySnapshotTier, RestoreSnapshotTier and
//! DescribeSnapshotTierStatus. The requests change the snapshot's tiering
//! record (core's `command/tiers.rs`); the archive worker (`archive/`) does
//! the work and records its steps.

use crate::ctx::Ctx;
use crate::ec2::error::Ec2Error;
use crate::ec2::filters;
use crate::ec2::params::{snapshot_id, Filter, Params};
use crate::ec2::records;
use crate::ec2::xml::{success_body, tag_set};
use crate::http::auth::Caller;
use cairn_core::command::{Command, CommandOutput, SnapshotScan, TierOp};
use cairn_core::records::Snapshot;
use cairn_core::tiering::SnapshotTiering;
use cairn_core::time::iso8601_ms;
use cairn_core::SnapshotId;
use std::sync::Arc;

/// Days a temporary restore may last, as EC2 allows.
const RESTORE_DAYS: std::ops::RangeInclusive<u32> = 1..=180;

pub fn parse_modify(p: &Params) -> Result<SnapshotId, Ec2Error> {
    let id = snapshot_id(p.required("SnapshotId")?)?;
    match p.get("StorageTier") {
        None | Some("archive") => Ok(id),
        Some(other) => Err(Ec2Error::InvalidParameterValue(format!(
            "Value ({other}) for parameter StorageTier is invalid: only 'archive' is."
        ))),
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct RestoreInput {
    pub id: SnapshotId,
    /// `None`: a permanent restore.
    pub days: Option<u32>,
}

pub fn parse_restore(p: &Params) -> Result<RestoreInput, Ec2Error> {
    let id = snapshot_id(p.required("SnapshotId")?)?;
    let days = p.u32("TemporaryRestoreDays")?;
    let permanent = p.bool("PermanentRestore")?.unwrap_or(false);
    match (days, permanent) {
        (Some(_), true) => Err(Ec2Error::InvalidParameterCombination(
            "TemporaryRestoreDays and PermanentRestore cannot be used together.".into(),
        )),
        (None, false) => {
            Err(Ec2Error::MissingParameter("TemporaryRestoreDays or PermanentRestore=true".into()))
        }
        (Some(d), false) if !RESTORE_DAYS.contains(&d) => {
            Err(Ec2Error::InvalidParameterValue(format!(
                "TemporaryRestoreDays {d} is out of range: {} to {}.",
                RESTORE_DAYS.start(),
                RESTORE_DAYS.end()
            )))
        }
        (days, _) => Ok(RestoreInput { id, days }),
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct DescribeTierInput {
    pub filters: Vec<Filter>,
    pub max_results: Option<usize>,
    pub next_token: Option<String>,
}

const TIER_FILTERS: &[&str] = &["snapshot-id", "volume-id", "last-tiering-operation"];

pub fn parse_describe(p: &Params) -> Result<DescribeTierInput, Ec2Error> {
    let filters = p.filters()?;
    filters::check_names(&filters, TIER_FILTERS)?;
    let max_results = p.max_results(5, 1000)?;
    let next_token = p.get("NextToken").filter(|t| !t.is_empty()).map(str::to_string);
    if let Some(t) = &next_token {
        filters::decode_token("tier", t)?;
    }
    Ok(DescribeTierInput { filters, max_results, next_token })
}

async fn tier(ctx: &Ctx, id: SnapshotId, op: TierOp) -> Result<SnapshotTiering, Ec2Error> {
    let cmd = Command::Tier { id, now_ms: ctx.now_ms(), op };
    match records::write(ctx, &cmd).await? {
        CommandOutput::Tiering(t) => Ok(t),
        other => Err(Ec2Error::InternalError(format!("unexpected answer {other:?}"))),
    }
}

/// The archive store must exist before anything is sent to it.
fn check_store(ctx: &Ctx) -> Result<(), Ec2Error> {
    if ctx.archive.is_none() {
        return Err(Ec2Error::UnsupportedOperation(
            "ModifySnapshotTier: this cluster has no archive store configured".into(),
        ));
    }
    Ok(())
}

pub async fn modify(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    rid: &str,
    id: SnapshotId,
) -> Result<String, Ec2Error> {
    records::own_snapshot(ctx, caller, &id).await?;
    check_store(ctx)?;
    let t = tier(ctx, id.clone(), TierOp::Archive { owner: caller.account_id.clone() }).await?;
    ctx.archive_wake();
    Ok(success_body("ModifySnapshotTier", rid, |w| {
        w.leaf("snapshotId", id.as_str()).leaf("tieringStartTime", iso8601_ms(t.last_start_ms));
    }))
}

pub async fn restore(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    rid: &str,
    input: RestoreInput,
) -> Result<String, Ec2Error> {
    records::own_snapshot(ctx, caller, &input.id).await?;
    check_store(ctx)?;
    let op = TierOp::Restore { owner: caller.account_id.clone(), days: input.days };
    let t = tier(ctx, input.id.clone(), op).await?;
    ctx.archive_wake();
    Ok(success_body("RestoreSnapshotTier", rid, |w| {
        w.leaf("snapshotId", input.id.as_str())
            .leaf("restoreStartTime", iso8601_ms(t.last_start_ms))
            .opt_leaf("restoreDuration", input.days.map(|d| d.to_string()))
            .leaf("isPermanentRestore", input.days.is_none().to_string());
    }))
}

/// What a filter of DescribeSnapshotTierStatus compares.
fn tier_values(item: &(Snapshot, SnapshotTiering), name: &str) -> Vec<String> {
    let (s, t) = item;
    match name {
        "snapshot-id" => vec![s.id.to_string()],
        "volume-id" => vec![s.volume_id.to_string()],
        "last-tiering-operation" => vec![t.status.as_str().to_string()],
        other => filters::snapshot_values(s, other),
    }
}

pub async fn describe(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    rid: &str,
    input: DescribeTierInput,
) -> Result<String, Ec2Error> {
    // Snapshots ever archived are few beside all snapshots: those first.
    let tierings = ctx.tierings().await?;
    let scan = SnapshotScan {
        ids: tierings.keys().cloned().collect(),
        owner: Some(caller.account_id.clone()),
        ..Default::default()
    };
    let owned = if scan.ids.is_empty() { Vec::new() } else { ctx.snapshots_where(scan).await? };
    let mut items: Vec<(Snapshot, SnapshotTiering)> = owned
        .into_iter()
        .filter_map(|s| tierings.get(&s.id).cloned().map(|t| (s, t)))
        .filter(|item| filters::matches(item, &input.filters, tier_values))
        .collect();
    items.sort_by(|a, b| a.0.id.cmp(&b.0.id));
    let (page, next) = filters::page(
        items,
        |(s, _)| s.id.to_string(),
        "tier",
        input.max_results,
        input.next_token.as_deref(),
    )?;
    Ok(success_body("DescribeSnapshotTierStatus", rid, |w| {
        w.set("snapshotTierStatusSet", &page, |w, (s, t)| {
            w.leaf("snapshotId", s.id.as_str())
                .leaf("volumeId", s.volume_id.as_str())
                .leaf("status", s.state.as_str())
                .leaf("ownerId", &s.owner);
            tag_set(w, &s.tags);
            w.leaf("storageTier", &s.storage_tier)
                .leaf("lastTieringStartTime", iso8601_ms(t.last_start_ms))
                .leaf("lastTieringProgress", t.progress.to_string())
                .leaf("lastTieringOperationStatus", t.status.as_str())
                .opt_leaf("lastTieringOperationStatusDetail", t.status_detail.as_deref())
                .opt_leaf("archivalCompleteTime", t.archival_complete_ms.map(iso8601_ms))
                .opt_leaf("restoreExpiryTime", t.restore_expiry_ms.map(iso8601_ms));
        });
        w.opt_leaf("nextToken", next);
    }))
}
