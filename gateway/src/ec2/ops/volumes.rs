//! CreateVolume, DescribeVolumes, DeleteVolume.

use crate::config::GatewayConfig;
use crate::ctx::Ctx;
use crate::ec2::error::Ec2Error;
use crate::ec2::filters::{self, VOLUME_FILTERS};
use crate::ec2::params::{outpost_from_arn, snapshot_id, volume_id, Filter, Params};
use crate::ec2::records;
use crate::ec2::xml::{described_volume, success_body, volume_members, RenderCtx};
use crate::http::auth::Caller;
use crate::jobs;
use crate::jobs::volumes::VolumeJobError;
use crate::nodes::{choose_host, HostError};
use cairn_core::command::{Command, CommandOutput, SnapshotScan, VolumeScan};
use cairn_core::records::{SnapshotState, Volume, VolumeState, RECORD_VERSION};
use cairn_core::time::now_ms;
use cairn_core::{OutpostId, SnapshotId, VolumeId};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq)]
pub struct CreateVolumeInput {
    /// The AZ name (an `AvailabilityZoneId` is resolved to its name).
    pub az: String,
    pub size_gib: Option<u64>,
    pub snapshot_id: Option<SnapshotId>,
    pub volume_type: String,
    pub iops: Option<u32>,
    pub throughput: Option<u32>,
    pub outpost: Option<OutpostId>,
    pub tags: BTreeMap<String, String>,
    pub client_token: Option<String>,
}

/// Size range in GiB per volume type, as EC2 has it.
pub fn size_range(volume_type: &str) -> Option<(u64, u64)> {
    Some(match volume_type {
        "gp2" => (1, 16_384),
        "gp3" => (1, 65_536),
        "io1" => (4, 16_384),
        "io2" => (4, 65_536),
        "st1" | "sc1" => (125, 16_384),
        "standard" => (1, 1024),
        _ => return None,
    })
}

/// Checks size, IOPS and throughput against the volume type's rules and
/// returns the (iops, throughput) the volume reports.
pub fn check_shape(
    volume_type: &str,
    size: u64,
    iops: Option<u32>,
    throughput: Option<u32>,
) -> Result<(Option<u32>, Option<u32>), Ec2Error> {
    let invalid = |m: String| Err(Ec2Error::InvalidParameterValue(m));
    let (min, max) = size_range(volume_type).ok_or_else(|| {
        Ec2Error::InvalidParameterValue(format!(
            "Value ({volume_type}) for parameter volumeType is invalid. Valid types: standard, io1, io2, gp2, gp3, sc1, st1."
        ))
    })?;
    if !(min..=max).contains(&size) {
        return invalid(format!(
            "Volume of {size}GiB is out of range for {volume_type}: size must be {min}-{max}GiB."
        ));
    }
    if throughput.is_some() && volume_type != "gp3" {
        return Err(Ec2Error::InvalidParameterCombination(format!(
            "The parameter throughput is not supported for {volume_type} volumes."
        )));
    }
    let iops = match (volume_type, iops) {
        ("gp2" | "st1" | "sc1" | "standard", Some(_)) => {
            return Err(Ec2Error::InvalidParameterCombination(format!(
                "The parameter iops is not supported for {volume_type} volumes."
            )))
        }
        // gp2's baseline: 3 IOPS per GiB, 100..=16,000.
        ("gp2", None) => Some((size.saturating_mul(3)).clamp(100, 16_000) as u32),
        ("io1" | "io2", None) => {
            return Err(Ec2Error::MissingParameter(format!(
                "iops (required for {volume_type} volumes)"
            )))
        }
        ("io1" | "io2" | "gp3", Some(i)) => {
            let (lo, hi, per_gib) = match volume_type {
                "io1" => (100, 64_000, 50),
                "io2" => (100, 256_000, 1000),
                _ => (3000, 80_000, 500),
            };
            if !(lo..=hi).contains(&i) {
                return invalid(format!("Iops {i} is out of range for {volume_type}: {lo}-{hi}."));
            }
            // gp3's 3,000 baseline is free at any size; beyond it, and for io1/io2, a ratio holds.
            let floor = if volume_type == "gp3" { 3000 } else { 0 };
            if i > floor && u64::from(i) > size.saturating_mul(per_gib) {
                return invalid(format!(
                    "Iops {i} is too high for a {size}GiB {volume_type} volume: at most {per_gib} per GiB."
                ));
            }
            Some(i)
        }
        ("gp3", None) => Some(3000),
        _ => None,
    };
    let throughput = match (volume_type, throughput) {
        ("gp3", Some(t)) if !(125..=2000).contains(&t) => {
            return invalid(format!("Throughput {t} is out of range for gp3: 125-2000 MiB/s."))
        }
        ("gp3", t) => Some(t.unwrap_or(125)),
        _ => None,
    };
    Ok((iops, throughput))
}

pub fn parse_create(p: &Params, config: &GatewayConfig) -> Result<CreateVolumeInput, Ec2Error> {
    let az = match (p.get("AvailabilityZone"), p.get("AvailabilityZoneId")) {
        (Some(_), Some(_)) => {
            return Err(Ec2Error::InvalidParameterCombination(
                "Only one of AvailabilityZone and AvailabilityZoneId may be given.".into(),
            ))
        }
        (None, None) => return Err(Ec2Error::MissingParameter("AvailabilityZone".into())),
        (Some(az), None) => {
            if !config.availability_zones.iter().any(|z| z == az) {
                return Err(Ec2Error::InvalidParameterValue(format!(
                    "Invalid availability zone: [{az}]"
                )));
            }
            az.to_string()
        }
        (None, Some(id)) => config.az_by_id(id).ok_or_else(|| {
            Ec2Error::InvalidParameterValue(format!("Invalid availability zone ID: [{id}]"))
        })?,
    };
    let size_gib = p.u64("Size")?;
    let snapshot_id = p.get("SnapshotId").map(snapshot_id).transpose()?;
    if size_gib.is_none() && snapshot_id.is_none() {
        return Err(Ec2Error::MissingParameter("size/snapshot".into()));
    }
    let volume_type = p.get("VolumeType").unwrap_or("gp2").to_string();
    let iops = p.u32("Iops")?;
    let throughput = p.u32("Throughput")?;
    match size_gib {
        Some(size) => {
            check_shape(&volume_type, size, iops, throughput)?;
        }
        // The size comes from the snapshot; the type must exist already.
        None if size_range(&volume_type).is_none() => {
            check_shape(&volume_type, 1, iops, throughput)?;
        }
        None => {}
    }
    let encrypted = p.bool("Encrypted")?.unwrap_or(false);
    if p.get("KmsKeyId").is_some() && !encrypted {
        return Err(Ec2Error::InvalidParameterDependency(
            "The parameter KmsKeyId requires the parameter Encrypted to be set.".into(),
        ));
    }
    if encrypted {
        return Err(Ec2Error::InvalidParameterValue(
            "Encrypted volumes are not supported by this Cairn gateway yet.".into(),
        ));
    }
    if p.bool("MultiAttachEnabled")?.unwrap_or(false) {
        return Err(Ec2Error::InvalidParameterValue(
            "Multi-Attach is not supported by this Cairn gateway.".into(),
        ));
    }
    let outpost = p.get("OutpostArn").map(|a| outpost_from_arn(a, config)).transpose()?;
    let tags = p.tag_specifications("volume")?;
    let client_token = p.get("ClientToken").map(str::to_string);
    if client_token.as_ref().is_some_and(|t| t.len() > 64) {
        return Err(Ec2Error::InvalidParameterValue(
            "ClientToken is longer than 64 characters.".into(),
        ));
    }
    Ok(CreateVolumeInput {
        az,
        size_gib,
        snapshot_id,
        volume_type,
        iops,
        throughput,
        outpost,
        tags,
        client_token,
    })
}

pub async fn create(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    rid: &str,
    input: CreateVolumeInput,
) -> Result<String, Ec2Error> {
    let mut size = input.size_gib;
    if let Some(sid) = &input.snapshot_id {
        let snap = records::usable_snapshot(ctx, caller, sid).await?;
        if snap.state != SnapshotState::Completed {
            return Err(Ec2Error::IncorrectState(format!(
                "Snapshot '{sid}' is in state '{}', not 'completed'.",
                snap.state.as_str()
            )));
        }
        if snap.storage_tier == "archive" {
            let readable =
                ctx.tierings_of(vec![sid.clone()]).await?.get(sid).is_none_or(|t| t.readable());
            if !readable {
                return Err(Ec2Error::IncorrectState(format!(
                    "Snapshot '{sid}' is archived; restore it (RestoreSnapshotTier) first."
                )));
            }
        }
        match size {
            Some(s) if s < snap.volume_size_gib => {
                return Err(Ec2Error::InvalidParameterValue(format!(
                    "Volume of {s}GiB is too small; the snapshot {sid} needs at least {}GiB.",
                    snap.volume_size_gib
                )))
            }
            Some(_) => {}
            None => size = Some(snap.volume_size_gib),
        }
        if snap.outpost.is_some() && snap.outpost != input.outpost {
            return Err(Ec2Error::InvalidParameterValue(format!(
                "Snapshot {sid} is a local snapshot of an Outpost; it can only be restored on that Outpost."
            )));
        }
    }
    let size = size.ok_or_else(|| Ec2Error::MissingParameter("size/snapshot".into()))?;
    let (iops, throughput) = check_shape(&input.volume_type, size, input.iops, input.throughput)?;

    let nodes = ctx.node_list().await?;
    if let Some(op) = &input.outpost {
        let anchored: Vec<&String> =
            nodes.iter().filter(|n| n.outpost.as_ref() == Some(op)).map(|n| &n.az).collect();
        if anchored.is_empty() {
            return Err(Ec2Error::InvalidParameterValue(format!(
                "The Outpost {op} is not registered with this region."
            )));
        }
        if !anchored.contains(&&input.az) {
            return Err(Ec2Error::InvalidParameterValue(format!(
                "The Outpost {op} is not anchored to availability zone {}.",
                input.az
            )));
        }
    }
    let id = VolumeId::generate();
    // A new volume is hosted only by a node that is up.
    let up = ctx.placement_nodes().await?;
    let host = choose_host(&up, &input.az, input.outpost.as_ref(), &id).ok_or_else(|| {
        Ec2Error::InsufficientVolumeCapacity(format!(
            "There is no chunk node in {} to host the volume.",
            input.outpost.as_ref().map(|o| o.to_string()).unwrap_or_else(|| input.az.clone())
        ))
    })?;
    let volume = Volume {
        version: RECORD_VERSION,
        id: id.clone(),
        owner: caller.account_id.clone(),
        size_gib: size,
        az: input.az.clone(),
        outpost: input.outpost.clone(),
        host_node: host.node_id.clone(),
        volume_type: input.volume_type.clone(),
        iops,
        throughput,
        encrypted: false,
        state: VolumeState::Creating,
        create_time_ms: now_ms(),
        snapshot_id: input.snapshot_id.clone(),
        tags: input.tags.clone(),
    };
    let cmd = Command::CreateVolume { volume, client_token: input.client_token.clone() };
    let CommandOutput::Volume(created) = records::write(ctx, &cmd).await? else {
        return Err(Ec2Error::InternalError("CreateVolume returned no volume".into()));
    };
    let answer = if created.id != id {
        // The client token was used before: answer the volume created then.
        created
    } else if created.snapshot_id.is_some() {
        // Restores hydrate in the background; the volume answers `creating` now.
        jobs::volumes::spawn_restore(ctx, created.clone());
        created
    } else {
        create_empty(ctx, created).await?
    };
    let cx = RenderCtx::new(&ctx.config, &answer.az);
    Ok(success_body("CreateVolume", rid, |w| volume_members(w, &answer, &cx)))
}

/// An empty volume: the host creates it now, then the record turns
/// `available`; on failure the record is removed, so nothing half-made
/// stays. The work is a job (`jobs::volumes::create_empty`): if this
/// request ends first, the job still finishes the volume.
async fn create_empty(ctx: &Arc<Ctx>, volume: Volume) -> Result<Volume, Ec2Error> {
    match jobs::volumes::create_empty(ctx, volume.clone()) {
        Some(answer) => answer.await.map_err(stopped)?.map_err(job_error),
        // A job here creates it already: it answers `creating` for now.
        None => Ok(volume),
    }
}

/// A volume job's failure as the EC2 caller sees it.
fn job_error(e: VolumeJobError) -> Ec2Error {
    match e {
        VolumeJobError::Host(e) => host_error(e),
        VolumeJobError::Refused(e) => e.into(),
        VolumeJobError::Metadata(e) => e.into(),
    }
}

/// A volume job stopped before answering: the gateway is shutting down.
fn stopped(_: tokio::sync::oneshot::error::RecvError) -> Ec2Error {
    Ec2Error::Unavailable("the gateway is shutting down; the volume job resumes later".into())
}

/// A chunk node's failure as the EC2 caller sees it.
pub fn host_error(e: HostError) -> Ec2Error {
    if e.is_transient() {
        Ec2Error::Unavailable(e.to_string())
    } else if e.code() == Some(tonic::Code::ResourceExhausted) {
        Ec2Error::InsufficientVolumeCapacity(e.to_string())
    } else {
        Ec2Error::InternalError(e.to_string())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct DescribeVolumesInput {
    pub volume_ids: Vec<VolumeId>,
    pub filters: Vec<Filter>,
    pub max_results: Option<usize>,
    pub next_token: Option<String>,
}

pub fn parse_describe(p: &Params) -> Result<DescribeVolumesInput, Ec2Error> {
    let volume_ids =
        p.list("VolumeId").iter().map(|s| volume_id(s)).collect::<Result<Vec<_>, _>>()?;
    let filters = p.filters()?;
    filters::check_names(&filters, VOLUME_FILTERS)?;
    let max_results = p.max_results(5, 500)?;
    if max_results.is_some() && !volume_ids.is_empty() {
        return Err(Ec2Error::InvalidParameterCombination(
            "The parameter volumeSet cannot be used with the parameter maxResults".into(),
        ));
    }
    let next_token = p.get("NextToken").filter(|t| !t.is_empty()).map(str::to_string);
    if let Some(t) = &next_token {
        filters::decode_token("vol", t)?;
    }
    // Cairn has no managed resources, so including them changes nothing.
    p.bool("IncludeManagedResources")?;
    Ok(DescribeVolumesInput { volume_ids, filters, max_results, next_token })
}

pub async fn describe(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    rid: &str,
    input: DescribeVolumesInput,
) -> Result<String, Ec2Error> {
    let az_id = |az: &str| ctx.config.az_id(az);
    let keep = |v: &Volume| {
        filters::matches(v, &input.filters, |v, n| filters::volume_values(v, n, &az_id))
    };
    let key = |v: &Volume| v.id.to_string();
    // The caller's own volumes, through the narrowest index the request
    // allows; named volumes must exist whatever the filters say, so their
    // scan is by id alone.
    let scan = VolumeScan {
        owner: Some(caller.account_id.clone()),
        ids: input.volume_ids.clone(),
        tag: input.volume_ids.is_empty().then(|| filters::exact_tag(&input.filters)).flatten(),
        ..Default::default()
    };
    let (page, next) = if input.volume_ids.is_empty() {
        filters::collect_pages(
            "vol",
            key,
            input.max_results,
            input.next_token.as_deref(),
            VolumeId::parse,
            |after, limit| {
                let scan = VolumeScan { after, limit, ..scan.clone() };
                let keep = &keep;
                async move {
                    let page = ctx.volume_page(scan).await?;
                    Ok((page.items.into_iter().filter(|v| keep(v)).collect(), page.next))
                }
            },
        )
        .await?
    } else {
        let mut named = ctx.volumes_where(scan).await?;
        if let Some(missing) =
            input.volume_ids.iter().find(|id| !named.iter().any(|v| &v.id == *id))
        {
            return Err(Ec2Error::VolumeNotFound(missing.to_string()));
        }
        named.retain(|v| keep(v));
        filters::page(named, key, "vol", input.max_results, input.next_token.as_deref())?
    };
    Ok(success_body("DescribeVolumes", rid, |w| {
        w.set("volumeSet", &page, |w, v| {
            described_volume(w, v, &RenderCtx::new(&ctx.config, &v.az))
        });
        w.opt_leaf("nextToken", next);
    }))
}

pub async fn delete(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    rid: &str,
    id: VolumeId,
) -> Result<String, Ec2Error> {
    let volume = records::own_volume(ctx, caller, &id).await?;
    if volume.state == VolumeState::InUse {
        return Err(Ec2Error::VolumeInUse(format!("Volume {id} is currently attached.")));
    }
    let pending = || async {
        let scan = SnapshotScan { volumes: vec![id.clone()], ..Default::default() };
        let snaps = ctx.snapshots_where(scan).await?;
        Ok::<bool, Ec2Error>(snaps.iter().any(|s| s.state == SnapshotState::Pending))
    };
    if pending().await? {
        return Err(Ec2Error::IncorrectState(format!(
            "Volume {id} has pending snapshots; delete it once they finish."
        )));
    }
    // `deleting` first: from then on no snapshot can start, so the host may
    // drop the bytes. A snapshot that started just before is caught below.
    let previous = volume.state;
    records::write(ctx, &Command::SetVolumeState { id: id.clone(), state: VolumeState::Deleting })
        .await?;
    let restore = |ctx: Arc<Ctx>, id: VolumeId| async move {
        if let Err(e) =
            records::write(&ctx, &Command::SetVolumeState { id: id.clone(), state: previous }).await
        {
            tracing::error!(volume = %id, error = %e, "could not restore the volume state");
        }
    };
    if pending().await? {
        restore(ctx.clone(), id.clone()).await;
        return Err(Ec2Error::IncorrectState(format!(
            "Volume {id} has pending snapshots; delete it once they finish."
        )));
    }
    // From here a job deletes it (or, on a host failure, turns it back to
    // `previous`), whether or not this request waits to the end.
    if let Some(answer) = jobs::volumes::delete(ctx, volume, previous) {
        answer.await.map_err(stopped)?.map_err(job_error)?;
    }
    Ok(success_body("DeleteVolume", rid, |w| {
        w.leaf("return", "true");
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(check_shape("gp2", 8, None, None).unwrap(), (Some(100), None));
        assert_eq!(check_shape("gp2", 1000, None, None).unwrap(), (Some(3000), None));
        assert_eq!(check_shape("gp2", 16_000, None, None).unwrap(), (Some(16_000), None));
        assert_eq!(check_shape("gp3", 8, None, None).unwrap(), (Some(3000), Some(125)));
        assert_eq!(
            check_shape("gp3", 100, Some(6000), Some(500)).unwrap(),
            (Some(6000), Some(500))
        );
        assert_eq!(check_shape("io2", 10, Some(10_000), None).unwrap(), (Some(10_000), None));
        assert_eq!(check_shape("st1", 125, None, None).unwrap(), (None, None));
        let errs = [
            ("gp3", 8, Some(6000), None),  // > 500/GiB
            ("io1", 10, Some(1000), None), // > 50/GiB
            ("io1", 10, Some(50), None),   // < 100
            ("standard", 1025, None, None),
            ("sc1", 124, None, None),
            ("gp3", 8, None, Some(2001)),
        ];
        for (t, s, i, th) in errs {
            assert!(check_shape(t, s, i, th).is_err(), "{t} {s} {i:?} {th:?}");
        }
    }
}
