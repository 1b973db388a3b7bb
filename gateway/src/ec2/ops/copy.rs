//! CopySnapshot: a new snapshot (its own id, owner, description and tags)
//! on the source's manifest. The source may be the caller's or shared with
//! it; the copy is the caller's. Its destination is `DestinationOutpostArn`'s
//! Outpost, or the region without one. Within the source's placement domain
//! no data moves and the copy is completed at once; into another (region to
//! Outpost, Outpost to region) it is `pending` and a transfer job
//! (`jobs/transfer.rs`) sends what the destination lacks.
//!
//! botocore adds a `PresignedUrl` to every CopySnapshot (a GET of the same
//! request, signed by the caller for the source region); when present it is
//! verified, and a bad one fails the copy as EC2 fails it: the snapshot is
//! created in `error` with a status message.
//!
//! Not here: Local Zones and KMS keys, which Cairn does not have.

use crate::config::GatewayConfig;
use crate::ctx::Ctx;
use crate::ec2::error::Ec2Error;
use crate::ec2::params::{outpost_from_arn, snapshot_id, Params};
use crate::ec2::records;
use crate::ec2::xml::{success_body, tag_set};
use crate::http::auth::{Caller, Presented};
use crate::jobs;
use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use cairn_core::command::{Command, CommandOutput};
use cairn_core::records::{Snapshot, SnapshotState, RECORD_VERSION};
use cairn_core::time::now_ms;
use cairn_core::{OutpostId, SnapshotId};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq)]
pub struct CopySnapshotInput {
    pub source: SnapshotId,
    pub description: String,
    pub tags: BTreeMap<String, String>,
    pub presigned_url: Option<String>,
    /// `DestinationOutpostArn`: well formed and in this region and account.
    pub destination_outpost: Option<OutpostId>,
}

pub fn parse_copy(p: &Params, config: &GatewayConfig) -> Result<CopySnapshotInput, Ec2Error> {
    let source = snapshot_id(p.required("SourceSnapshotId")?)?;
    for (param, region) in [
        ("SourceRegion", Some(p.required("SourceRegion")?)),
        ("DestinationRegion", p.get("DestinationRegion")),
    ] {
        if let Some(r) = region.filter(|r| *r != config.region) {
            return Err(Ec2Error::InvalidParameterValue(format!(
                "{param} '{r}' is not this cluster's region '{}'.",
                config.region
            )));
        }
    }
    let description = p.get("Description").unwrap_or_default().to_string();
    if description.chars().count() > 255 {
        return Err(Ec2Error::InvalidParameterValue(
            "The description must be at most 255 characters long.".into(),
        ));
    }
    let destination_outpost =
        p.get("DestinationOutpostArn").map(|arn| outpost_from_arn(arn, config)).transpose()?;
    if let Some(az) = p.get("DestinationAvailabilityZone") {
        return Err(Ec2Error::InvalidParameterValue(format!(
            "'{az}' is not a Local Zone: Cairn has none."
        )));
    }
    if p.bool("Encrypted")? == Some(true) || p.get("KmsKeyId").is_some() {
        return Err(Ec2Error::InvalidParameterValue(
            "Cairn has no KMS keys: a copy keeps its source's encryption.".into(),
        ));
    }
    if let Some(m) = p.u32("CompletionDurationMinutes")? {
        if !(1..=2880).contains(&m) {
            return Err(Ec2Error::InvalidParameterValue(format!(
                "CompletionDurationMinutes {m} is out of range: 1 to 2880."
            )));
        }
    }
    let tags = p.tag_specifications("snapshot")?;
    let presigned_url = p.get("PresignedUrl").filter(|u| !u.is_empty()).map(str::to_string);
    Ok(CopySnapshotInput { source, description, tags, presigned_url, destination_outpost })
}

/// Why `url` does not authorize this copy, if it does not: it must be a
/// valid signature of the caller's account for CopySnapshot of `source`.
async fn presigned_problem(
    ctx: &Ctx,
    caller: &Caller,
    url: &str,
    source: &SnapshotId,
) -> Option<String> {
    let Ok(uri) = url.parse::<Uri>() else {
        return Some("The presigned URL is not a URL.".into());
    };
    let Some(host) = uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()) else {
        return Some("The presigned URL names no host.".into());
    };
    let mut headers = HeaderMap::new();
    headers.insert("host", host);
    let presented =
        Presented { method: &Method::GET, uri: &uri, headers: &headers, body: Some(b"") };
    let signer = match ctx.auth.authenticate(&presented, "ec2").await {
        Ok(c) => c,
        Err(e) => return Some(format!("The presigned URL is not valid: {e}")),
    };
    if signer.account_id != caller.account_id {
        return Some("The presigned URL was signed by another account.".into());
    }
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(uri.query().unwrap_or("")).unwrap_or_default();
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if get("Action") != Some("CopySnapshot") || get("SourceSnapshotId") != Some(source.as_str()) {
        return Some(format!("The presigned URL does not copy snapshot {source}."));
    }
    None
}

pub async fn copy(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    rid: &str,
    input: CopySnapshotInput,
) -> Result<String, Ec2Error> {
    if let Some(op) = &input.destination_outpost {
        let known = ctx.node_list().await?.iter().any(|n| n.outpost.as_ref() == Some(op));
        if !known {
            return Err(Ec2Error::InvalidParameterValue(format!(
                "The Outpost {op} is unknown: no chunk node of this cluster is on it."
            )));
        }
    }
    let source = records::usable_snapshot(ctx, caller, &input.source).await?;
    let problem = match &input.presigned_url {
        Some(url) => presigned_problem(ctx, caller, url, &input.source).await,
        None => None,
    };
    let moves = source.outpost != input.destination_outpost;
    let now = now_ms();
    let copy = Snapshot {
        version: RECORD_VERSION,
        id: SnapshotId::generate(),
        // Core fills what a copy takes from its source (volume id, size,
        // encryption, tier) from the source record itself.
        volume_id: source.volume_id.clone(),
        owner: caller.account_id.clone(),
        state: match (&problem, moves) {
            (Some(_), _) => SnapshotState::Error,
            (None, true) => SnapshotState::Pending,
            (None, false) => SnapshotState::Completed,
        },
        state_message: problem,
        progress: 0,
        start_time_ms: now,
        completion_time_ms: (!moves).then_some(now),
        description: input.description,
        volume_size_gib: source.volume_size_gib,
        encrypted: source.encrypted,
        outpost: input.destination_outpost,
        storage_tier: source.storage_tier.clone(),
        manifest_root: None,
        parent: None,
        full_size_bytes: None,
        tags: input.tags,
    };
    let copy = if moves && copy.state == SnapshotState::Pending {
        transfer(ctx, copy, input.source).await?
    } else {
        let cmd = Command::CopySnapshot { copy, source: input.source };
        let CommandOutput::Snapshot(copy) = records::write(ctx, &cmd).await? else {
            return Err(Ec2Error::InternalError("CopySnapshot returned no snapshot".into()));
        };
        copy
    };
    if let Some(why) = &copy.state_message {
        tracing::info!(snapshot = %copy.id, error = %why, "copy failed: bad presigned URL");
    }
    Ok(success_body("CopySnapshot", rid, |w| {
        w.leaf("snapshotId", copy.id.as_str());
        tag_set(w, &copy.tags);
    }))
}

/// A copy into another placement domain: the pending snapshot and its
/// transfer job, leased to this gateway, which starts it at once.
async fn transfer(
    ctx: &Arc<Ctx>,
    copy: Snapshot,
    source: SnapshotId,
) -> Result<Snapshot, Ec2Error> {
    let Some(claim) = ctx.jobs.claim(copy.id.as_str()) else {
        return Err(Ec2Error::InternalError(format!("snapshot id {} is in use here", copy.id)));
    };
    let cmd = Command::TransferSnapshot {
        copy,
        source,
        job_owner: ctx.gateway_id().to_string(),
        lease_expires_ms: ctx.now_ms().saturating_add(ctx.config.job_lease_ms),
    };
    let CommandOutput::Snapshot(copy) = records::write(ctx, &cmd).await? else {
        return Err(Ec2Error::InternalError("CopySnapshot returned no snapshot".into()));
    };
    jobs::copy::spawn_copy(ctx, copy.id.clone(), Some(claim), None);
    Ok(copy)
}
