//! ModifyVolume and DescribeVolumesModifications.
//!
//! A modification names only what changes; the rest keeps the volume's
//! current value (IOPS and throughput too while the type stays, and gp2's
//! IOPS follow its size). The target is checked as CreateVolume checks a
//! new volume, and a volume never shrinks. The record takes the target at
//! once (`modifying`); the volume host then grows the volume and the
//! modification completes (`jobs/modify.rs`).

use super::volumes::{check_shape, size_range};
use crate::ctx::Ctx;
use crate::ec2::error::Ec2Error;
use crate::ec2::filters;
use crate::ec2::params::{volume_id, Filter, Params};
use crate::ec2::records;
use crate::ec2::xml::{success_body, XmlWriter};
use crate::http::auth::Caller;
use crate::jobs;
use cairn_core::command::{Command, CommandOutput};
use cairn_core::records::{Volume, VolumeModification, VolumeSettings};
use cairn_core::time::{iso8601_ms, now_ms};
use cairn_core::VolumeId;
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq)]
pub struct ModifyVolumeInput {
    pub volume_id: VolumeId,
    pub size_gib: Option<u64>,
    pub volume_type: Option<String>,
    pub iops: Option<u32>,
    pub throughput: Option<u32>,
}

pub fn parse_modify(p: &Params) -> Result<ModifyVolumeInput, Ec2Error> {
    let volume_id = volume_id(p.required("VolumeId")?)?;
    let size_gib = p.u64("Size")?;
    let volume_type = p.get("VolumeType").map(str::to_string);
    if let Some(t) = volume_type.as_deref().filter(|t| size_range(t).is_none()) {
        return Err(Ec2Error::InvalidParameterValue(format!(
            "Value ({t}) for parameter volumeType is invalid. Valid types: standard, io1, io2, gp2, gp3, sc1, st1."
        )));
    }
    let iops = p.u32("Iops")?;
    let throughput = p.u32("Throughput")?;
    if p.bool("MultiAttachEnabled")?.unwrap_or(false) {
        return Err(Ec2Error::InvalidParameterValue(
            "Multi-Attach is not supported by this Cairn gateway.".into(),
        ));
    }
    if size_gib.is_none() && volume_type.is_none() && iops.is_none() && throughput.is_none() {
        return Err(Ec2Error::MissingParameter("Size, VolumeType, Iops or Throughput".into()));
    }
    Ok(ModifyVolumeInput { volume_id, size_gib, volume_type, iops, throughput })
}

/// The settings `input` asks of `v`, checked.
fn target(v: &Volume, input: &ModifyVolumeInput) -> Result<VolumeSettings, Ec2Error> {
    let volume_type = input.volume_type.clone().unwrap_or_else(|| v.volume_type.clone());
    let size_gib = input.size_gib.unwrap_or(v.size_gib);
    let same_type = volume_type == v.volume_type;
    // Kept while the type stays, except gp2's, which follow the size.
    let iops = input.iops.or(v.iops.filter(|_| same_type && volume_type != "gp2"));
    let throughput = input.throughput.or(v.throughput.filter(|_| same_type));
    let (iops, throughput) = check_shape(&volume_type, size_gib, iops, throughput)?;
    Ok(VolumeSettings { size_gib, volume_type, iops, throughput })
}

pub async fn modify(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    rid: &str,
    input: ModifyVolumeInput,
) -> Result<String, Ec2Error> {
    let volume = records::own_volume(ctx, caller, &input.volume_id).await?;
    let target = target(&volume, &input)?;
    if target.size_gib < volume.size_gib {
        return Err(Ec2Error::InvalidParameterValue(format!(
            "New size cannot be smaller than existing size: volume {} is {} GiB.",
            volume.id, volume.size_gib
        )));
    }
    let cmd = Command::ModifyVolume {
        id: volume.id.clone(),
        owner: caller.account_id.clone(),
        target: target.clone(),
        at_ms: now_ms(),
    };
    let CommandOutput::Modification(m) = records::write(ctx, &cmd).await? else {
        return Err(Ec2Error::InternalError("ModifyVolume returned no modification".into()));
    };
    let mut modified = volume;
    modified.size_gib = target.size_gib;
    if let Err(e) = jobs::modify::finish(ctx, &modified).await {
        // Left `modifying`: the volume sweep finishes it.
        tracing::warn!(volume = %modified.id, error = %e, "volume modification not finished yet");
    }
    Ok(success_body("ModifyVolume", rid, |w| {
        w.open("volumeModification");
        modification_members(w, &m);
        w.close("volumeModification");
    }))
}

fn modification_members(w: &mut XmlWriter, m: &VolumeModification) {
    let num = |n: Option<u32>| n.map(|n| n.to_string());
    w.leaf("volumeId", m.volume_id.as_str())
        .leaf("modificationState", m.state.as_str())
        .opt_leaf("statusMessage", m.status_message.as_deref())
        .leaf("targetSize", m.target.size_gib.to_string())
        .opt_leaf("targetIops", num(m.target.iops))
        .leaf("targetVolumeType", &m.target.volume_type)
        .opt_leaf("targetThroughput", num(m.target.throughput))
        .leaf("targetMultiAttachEnabled", "false")
        .leaf("originalSize", m.original.size_gib.to_string())
        .opt_leaf("originalIops", num(m.original.iops))
        .leaf("originalVolumeType", &m.original.volume_type)
        .opt_leaf("originalThroughput", num(m.original.throughput))
        .leaf("originalMultiAttachEnabled", "false")
        .leaf("progress", m.progress.to_string())
        .leaf("startTime", iso8601_ms(m.start_time_ms))
        .opt_leaf("endTime", m.end_time_ms.map(iso8601_ms));
}

#[derive(Clone, Debug, PartialEq)]
pub struct DescribeModificationsInput {
    pub volume_ids: Vec<VolumeId>,
    pub filters: Vec<Filter>,
    pub max_results: Option<usize>,
    pub next_token: Option<String>,
}

pub const MODIFICATION_FILTERS: &[&str] = &[
    "modification-state",
    "original-iops",
    "original-size",
    "original-volume-type",
    "originalMultiAttachEnabled",
    "start-time",
    "target-iops",
    "target-size",
    "target-volume-type",
    "targetMultiAttachEnabled",
    "volume-id",
];

fn modification_values(m: &VolumeModification, name: &str) -> Vec<String> {
    let num = |n: Option<u32>| n.map(|n| n.to_string()).into_iter().collect();
    match name {
        "modification-state" => vec![m.state.as_str().to_string()],
        "original-iops" => num(m.original.iops),
        "original-size" => vec![m.original.size_gib.to_string()],
        "original-volume-type" => vec![m.original.volume_type.clone()],
        "target-iops" => num(m.target.iops),
        "target-size" => vec![m.target.size_gib.to_string()],
        "target-volume-type" => vec![m.target.volume_type.clone()],
        "originalMultiAttachEnabled" | "targetMultiAttachEnabled" => vec!["false".into()],
        "start-time" => vec![iso8601_ms(m.start_time_ms)],
        "volume-id" => vec![m.volume_id.to_string()],
        _ => Vec::new(),
    }
}

pub fn parse_describe(p: &Params) -> Result<DescribeModificationsInput, Ec2Error> {
    let volume_ids =
        p.list("VolumeId").iter().map(|s| volume_id(s)).collect::<Result<Vec<_>, _>>()?;
    let filters = p.filters()?;
    filters::check_names(&filters, MODIFICATION_FILTERS)?;
    if let Some(f) = filters.iter().find(|f| f.name.starts_with("tag")) {
        return Err(Ec2Error::InvalidParameterValue(format!("The filter '{}' is invalid", f.name)));
    }
    let max_results = p.max_results(5, 500)?;
    let next_token = p.get("NextToken").filter(|t| !t.is_empty()).map(str::to_string);
    if let Some(t) = &next_token {
        filters::decode_token("mod", t)?;
    }
    Ok(DescribeModificationsInput { volume_ids, filters, max_results, next_token })
}

/// The caller's modifications; a named volume that is not the caller's is
/// `InvalidVolume.NotFound`, one never modified is simply not listed.
pub async fn describe(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    rid: &str,
    input: DescribeModificationsInput,
) -> Result<String, Ec2Error> {
    for id in &input.volume_ids {
        records::own_volume(ctx, caller, id).await?;
    }
    let mut mods: Vec<VolumeModification> =
        ctx.modifications().await?.into_iter().filter(|m| m.owner == caller.account_id).collect();
    if !input.volume_ids.is_empty() {
        mods.retain(|m| input.volume_ids.contains(&m.volume_id));
    }
    mods.retain(|m| filters::matches(m, &input.filters, modification_values));
    mods.sort_by(|a, b| a.volume_id.cmp(&b.volume_id));
    let (page, next) = filters::page(
        mods,
        |m| m.volume_id.to_string(),
        "mod",
        input.max_results,
        input.next_token.as_deref(),
    )?;
    Ok(success_body("DescribeVolumesModifications", rid, |w| {
        w.set("volumeModificationSet", &page, modification_members);
        w.opt_leaf("nextToken", next);
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::volume;
    use crate::http::error::AwsError;

    fn input(size: Option<u64>, ty: Option<&str>, iops: Option<u32>) -> ModifyVolumeInput {
        ModifyVolumeInput {
            volume_id: volume().id,
            size_gib: size,
            volume_type: ty.map(str::to_string),
            iops,
            throughput: None,
        }
    }

    #[test]
    fn unnamed_settings_keep_their_values() {
        let mut v = volume();
        v.volume_type = "gp3".into();
        v.size_gib = 10;
        v.iops = Some(4000);
        v.throughput = Some(250);
        let t = target(&v, &input(Some(20), None, None)).unwrap();
        assert_eq!(
            (t.size_gib, t.volume_type.as_str(), t.iops, t.throughput),
            (20, "gp3", Some(4000), Some(250))
        );
        // To gp2: its IOPS follow the size, and it has no throughput.
        let t = target(&v, &input(Some(100), Some("gp2"), None)).unwrap();
        assert_eq!((t.iops, t.throughput), (Some(300), None));
        // io1 needs IOPS of its own.
        assert_eq!(
            target(&v, &input(None, Some("io1"), None)).unwrap_err().code(),
            "MissingParameter"
        );
        let t = target(&v, &input(None, Some("io1"), Some(500))).unwrap();
        assert_eq!((t.iops, t.throughput), (Some(500), None));
        // Ranges are the target type's.
        assert!(target(&v, &input(Some(100), Some("st1"), None)).is_err());
        assert!(target(&v, &input(Some(70_000), None, None)).is_err());
    }
}
