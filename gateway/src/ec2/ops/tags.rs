//! CreateTags, DeleteTags, DescribeTags, over volumes and snapshots.

use crate::ctx::Ctx;
use crate::ec2::error::Ec2Error;
use crate::ec2::filters::{self, TAG_FILTERS};
use crate::ec2::params::{check_tag_key, check_tags, Filter, Params, MAX_TAGS};
use crate::ec2::records;
use crate::ec2::xml::success_body;
use crate::http::auth::Caller;
use cairn_core::command::{Command, SnapshotScan, VolumeScan};
use cairn_core::records::{Snapshot, Volume};
use cairn_core::{SnapshotId, VolumeId};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq)]
pub struct CreateTagsInput {
    pub resources: Vec<String>,
    pub tags: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DeleteTagsInput {
    pub resources: Vec<String>,
    /// A key alone deletes the tag whatever its value; with a value, only if equal.
    pub tags: Vec<(String, Option<String>)>,
}

/// `ResourceId.N`: required, and each a well-formed volume or snapshot id.
fn resources(p: &Params) -> Result<Vec<String>, Ec2Error> {
    let ids = p.list("ResourceId");
    if ids.is_empty() {
        return Err(Ec2Error::MissingParameter("resourceIdSet".into()));
    }
    if ids.len() > 1000 {
        return Err(Ec2Error::InvalidParameterValue("At most 1000 resources per call.".into()));
    }
    if let Some(bad) =
        ids.iter().find(|r| VolumeId::parse(r).is_none() && SnapshotId::parse(r).is_none())
    {
        return Err(Ec2Error::InvalidId(bad.clone()));
    }
    Ok(ids)
}

pub fn parse_create(p: &Params) -> Result<CreateTagsInput, Ec2Error> {
    let resources = resources(p)?;
    let tags: Vec<(String, String)> =
        p.tags("Tag")?.into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect();
    if tags.is_empty() {
        return Err(Ec2Error::MissingParameter("tagSet".into()));
    }
    check_tags(&tags)?;
    Ok(CreateTagsInput { resources, tags })
}

pub fn parse_delete(p: &Params) -> Result<DeleteTagsInput, Ec2Error> {
    let resources = resources(p)?;
    let tags = p.tags("Tag")?;
    for (k, _) in &tags {
        check_tag_key(k)?;
    }
    Ok(DeleteTagsInput { resources, tags })
}

/// Checks every resource is the caller's, returning the current tags of each.
async fn own_resources(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    ids: &[String],
) -> Result<Vec<BTreeMap<String, String>>, Ec2Error> {
    let mut out = Vec::with_capacity(ids.len());
    for r in ids {
        if let Some(v) = VolumeId::parse(r) {
            out.push(records::own_volume(ctx, caller, &v).await?.tags);
        } else if let Some(s) = SnapshotId::parse(r) {
            out.push(records::own_snapshot(ctx, caller, &s).await?.tags);
        } else {
            return Err(Ec2Error::InvalidId(r.clone()));
        }
    }
    Ok(out)
}

pub async fn create(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    rid: &str,
    input: CreateTagsInput,
) -> Result<String, Ec2Error> {
    let current = own_resources(ctx, caller, &input.resources).await?;
    for (id, tags) in input.resources.iter().zip(&current) {
        let mut merged = tags.clone();
        merged.extend(input.tags.iter().cloned());
        if merged.len() > MAX_TAGS {
            return Err(Ec2Error::TagLimitExceeded(format!(
                "The maximum number of tags ({MAX_TAGS}) for resource {id} has been exceeded"
            )));
        }
    }
    records::write(ctx, &Command::CreateTags { resources: input.resources, tags: input.tags })
        .await?;
    Ok(success_body("CreateTags", rid, |w| {
        w.leaf("return", "true");
    }))
}

pub async fn delete(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    rid: &str,
    input: DeleteTagsInput,
) -> Result<String, Ec2Error> {
    own_resources(ctx, caller, &input.resources).await?;
    records::write(ctx, &Command::DeleteTags { resources: input.resources, tags: input.tags })
        .await?;
    Ok(success_body("DeleteTags", rid, |w| {
        w.leaf("return", "true");
    }))
}

#[derive(Clone, Debug, PartialEq)]
pub struct DescribeTagsInput {
    pub filters: Vec<Filter>,
    pub max_results: Option<usize>,
    pub next_token: Option<String>,
}

pub fn parse_describe(p: &Params) -> Result<DescribeTagsInput, Ec2Error> {
    let filters = p.filters()?;
    filters::check_names(&filters, TAG_FILTERS)?;
    let max_results = p.max_results(5, 1000)?;
    let next_token = p.get("NextToken").filter(|t| !t.is_empty()).map(str::to_string);
    if let Some(t) = &next_token {
        filters::decode_token("tag", t)?;
    }
    Ok(DescribeTagsInput { filters, max_results, next_token })
}

/// The paging key of a tag item: sorts like (resource id, key), since
/// `\u{1}` sorts before every character of an id.
fn tag_key(t: &filters::TagItem) -> String {
    format!("{}\u{1}{}", t.resource_id, t.key)
}

pub async fn describe(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    rid: &str,
    input: DescribeTagsInput,
) -> Result<String, Ec2Error> {
    let owner = Some(caller.account_id.clone());
    let volumes: Vec<Volume> =
        ctx.volumes_where(VolumeScan { owner: owner.clone(), ..Default::default() }).await?;
    let snapshots: Vec<Snapshot> =
        ctx.snapshots_where(SnapshotScan { owner, ..Default::default() }).await?;
    let items: Vec<filters::TagItem> = filters::tag_items(&volumes, &snapshots)
        .into_iter()
        .filter(|t| filters::matches(t, &input.filters, filters::tag_item_values))
        .collect();
    let (page, next) =
        filters::page(items, tag_key, "tag", input.max_results, input.next_token.as_deref())?;
    Ok(success_body("DescribeTags", rid, |w| {
        w.set("tagSet", &page, |w, t| {
            w.leaf("resourceId", &t.resource_id)
                .leaf("resourceType", t.resource_type)
                .leaf("key", &t.key)
                .leaf("value", &t.value);
        });
        w.opt_leaf("nextToken", next);
    }))
}
