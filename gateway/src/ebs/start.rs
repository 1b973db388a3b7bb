//! StartSnapshot: validates the request, writes a pending snapshot record
//! (with ClientToken idempotency) and opens its staging logs.

use super::chunks::Region;
use super::error::{EbsError, Invalid};
use super::state::{epoch_secs, own_snapshot, Ebs};
use crate::http::auth::Caller;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cairn_core::command::{Command, CommandOutput, DIRECT_VOLUME_ID};
use cairn_core::records::{Snapshot, SnapshotState, RECORD_VERSION};
use cairn_core::time::now_ms;
use cairn_core::{SnapshotId, VolumeId, BLOCK_SIZE};
use cairn_proto::pb::{StagingEntry, StagingKind};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Largest volume of the model, in GiB.
pub const MAX_VOLUME_GIB: i64 = 65_536;
/// Timeout bounds and default of the model, in minutes.
pub const MIN_TIMEOUT: i64 = 10;
pub const MAX_TIMEOUT: i64 = 4320;
pub const DEFAULT_TIMEOUT: i64 = 60;
const MAX_TAGS: usize = 50;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TagIn {
    key: Option<String>,
    value: Option<String>,
}

/// The request body. Unknown members are ignored, as newer SDKs may send them.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StartInput {
    volume_size: Option<i64>,
    parent_snapshot_id: Option<String>,
    tags: Option<Vec<TagIn>>,
    description: Option<String>,
    client_token: Option<String>,
    encrypted: Option<bool>,
    kms_key_arn: Option<String>,
    timeout: Option<i64>,
}

/// A validated StartSnapshot.
#[derive(Debug, PartialEq, Eq)]
pub struct StartParams {
    pub volume_size_gib: u64,
    pub parent: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub description: String,
    pub client_token: Option<String>,
    pub timeout_minutes: u64,
}

impl StartParams {
    /// Every parameter that defines the snapshot, for ClientToken idempotency.
    pub fn fingerprint(&self) -> String {
        serde_json::json!({
            "size": self.volume_size_gib,
            "parent": self.parent,
            "tags": self.tags,
            "description": self.description,
            "timeout": self.timeout_minutes,
        })
        .to_string()
    }
}

fn invalid(reason: Invalid, msg: impl Into<String>) -> EbsError {
    EbsError::invalid(reason, msg)
}

/// Parses and validates the body (everything that needs no lookup).
pub fn parse(body: &[u8]) -> Result<StartParams, EbsError> {
    let input: StartInput = serde_json::from_slice(if body.is_empty() { b"{}" } else { body })
        .map_err(|e| {
            invalid(Invalid::ParameterValue, format!("The request body is not valid: {e}"))
        })?;
    let size =
        input.volume_size.ok_or_else(|| invalid(Invalid::VolumeSize, "VolumeSize is required."))?;
    if !(1..=MAX_VOLUME_GIB).contains(&size) {
        return Err(invalid(
            Invalid::VolumeSize,
            format!("VolumeSize must be between 1 and {MAX_VOLUME_GIB} GiB, not {size}."),
        ));
    }
    // Encryption is not built: refusing is honest, pretending is not.
    if input.encrypted == Some(true) || input.kms_key_arn.is_some() {
        if input.parent_snapshot_id.is_some() {
            return Err(invalid(
                Invalid::ParameterValue,
                "Encrypted and ParentSnapshotId cannot be given together.",
            ));
        }
        return Err(invalid(
            Invalid::ParameterValue,
            "Encrypted snapshots are not supported by this Cairn gateway yet.",
        ));
    }
    let timeout = input.timeout.unwrap_or(DEFAULT_TIMEOUT);
    if !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&timeout) {
        return Err(invalid(
            Invalid::ParameterValue,
            format!(
                "Timeout must be between {MIN_TIMEOUT} and {MAX_TIMEOUT} minutes, not {timeout}."
            ),
        ));
    }
    let description = input.description.unwrap_or_default();
    if description.chars().count() > 255 {
        return Err(invalid(Invalid::ParameterValue, "Description is longer than 255 characters."));
    }
    if let Some(t) = &input.client_token {
        if t.is_empty() || t.len() > 255 || t.chars().any(char::is_whitespace) {
            return Err(invalid(Invalid::ParameterValue, "ClientToken is not valid."));
        }
    }
    let mut tags = BTreeMap::new();
    let list = input.tags.unwrap_or_default();
    if list.len() > MAX_TAGS {
        return Err(invalid(Invalid::Tag, format!("At most {MAX_TAGS} tags are allowed.")));
    }
    for t in list {
        let key = t.key.unwrap_or_default();
        let value = t.value.unwrap_or_default();
        if key.is_empty() || key.chars().count() > 127 || value.chars().count() > 255 {
            return Err(invalid(Invalid::Tag, format!("The tag '{key}' is not valid.")));
        }
        if key.starts_with("aws:") {
            return Err(invalid(Invalid::Tag, "Tag keys starting with 'aws:' are reserved."));
        }
        tags.insert(key, value);
    }
    Ok(StartParams {
        volume_size_gib: size as u64,
        parent: input.parent_snapshot_id,
        tags,
        description,
        client_token: input.client_token,
        timeout_minutes: timeout as u64,
    })
}

pub async fn start(ebs: &Ebs, caller: &Caller, body: &[u8]) -> Result<Response, EbsError> {
    let p = parse(body)?;
    let parent = match &p.parent {
        Some(id) => {
            let s = own_snapshot(ebs, caller, id).await?;
            if s.state != SnapshotState::Completed || s.manifest_root.is_none() {
                return Err(invalid(
                    Invalid::SnapshotId,
                    format!("The parent snapshot '{id}' is {}, not completed.", s.state.as_str()),
                ));
            }
            if s.volume_size_gib > p.volume_size_gib {
                return Err(invalid(
                    Invalid::VolumeSize,
                    format!(
                        "VolumeSize {} GiB is smaller than the parent snapshot's {} GiB.",
                        p.volume_size_gib, s.volume_size_gib
                    ),
                ));
            }
            Some(s.id)
        }
        None => None,
    };
    let region = Region::load(&ebs.ctx).await?;
    let now = now_ms();
    let record = Snapshot {
        version: RECORD_VERSION,
        id: SnapshotId::generate(),
        volume_id: VolumeId::parse(DIRECT_VOLUME_ID)
            .ok_or_else(|| EbsError::Internal("the direct volume id does not parse".into()))?,
        owner: caller.account_id.clone(),
        state: SnapshotState::Pending,
        state_message: None,
        progress: 0,
        start_time_ms: now,
        completion_time_ms: None,
        description: p.description.clone(),
        volume_size_gib: p.volume_size_gib,
        encrypted: false,
        outpost: None,
        storage_tier: "standard".into(),
        manifest_root: None,
        parent,
        full_size_bytes: None,
        tags: p.tags.clone(),
    };
    let cmd = Command::StartSnapshot {
        snapshot: record,
        client_token: p.client_token.clone(),
        fingerprint: p.fingerprint(),
    };
    let snap = match ebs.ctx.meta.write(&cmd).await?? {
        CommandOutput::Snapshot(s) => s,
        other => {
            return Err(EbsError::Internal(format!(
                "unexpected answer to StartSnapshot: {other:?}"
            )))
        }
    };
    if snap.state == SnapshotState::Pending {
        // The log's OPEN entry carries the Timeout and starts the inactivity
        // clock. A retry appends it again, which only counts as activity.
        let open = StagingEntry {
            kind: StagingKind::Open as i32,
            at_ms: now,
            value: p.timeout_minutes,
            ..Default::default()
        };
        ebs.staging.append(&region, snap.id.as_str(), vec![open]).await?;
    }
    tracing::info!(snapshot = %snap.id, size_gib = snap.volume_size_gib, parent = ?snap.parent, "ebs snapshot started");
    Ok((StatusCode::CREATED, axum::Json(describe(&snap))).into_response())
}

/// The StartSnapshot answer for `s`.
pub fn describe(s: &Snapshot) -> serde_json::Value {
    let mut v = serde_json::json!({
        "SnapshotId": s.id.to_string(),
        "OwnerId": s.owner,
        "Status": s.state.as_str(),
        "StartTime": epoch_secs(s.start_time_ms),
        "VolumeSize": s.volume_size_gib,
        "BlockSize": BLOCK_SIZE,
        "SseType": "none",
    });
    if !s.description.is_empty() {
        v["Description"] = s.description.clone().into();
    }
    if let Some(p) = &s.parent {
        v["ParentSnapshotId"] = p.to_string().into();
    }
    if !s.tags.is_empty() {
        v["Tags"] = s
            .tags
            .iter()
            .map(|(k, v)| serde_json::json!({ "Key": k, "Value": v }))
            .collect::<Vec<_>>()
            .into();
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(body: &str) -> Option<&'static str> {
        parse(body.as_bytes()).unwrap_err().reason()
    }

    #[test]
    fn parses_and_validates() {
        let p = parse(br#"{"VolumeSize":2,"Tags":[{"Key":"a","Value":"b"}],"Description":"d","ClientToken":"t","Timeout":15,"Unknown":1}"#).unwrap();
        assert_eq!(p.volume_size_gib, 2);
        assert_eq!(p.timeout_minutes, 15);
        assert_eq!(p.tags.get("a").map(String::as_str), Some("b"));
        assert_eq!(parse(br#"{"VolumeSize":1}"#).unwrap().timeout_minutes, 60);
        assert_eq!(reason("{}"), Some("INVALID_VOLUME_SIZE"));
        assert_eq!(reason(r#"{"VolumeSize":0}"#), Some("INVALID_VOLUME_SIZE"));
        assert_eq!(reason(r#"{"VolumeSize":65537}"#), Some("INVALID_VOLUME_SIZE"));
        assert_eq!(reason(r#"{"VolumeSize":1,"Timeout":9}"#), Some("INVALID_PARAMETER_VALUE"));
        assert_eq!(reason(r#"{"VolumeSize":1,"Timeout":4321}"#), Some("INVALID_PARAMETER_VALUE"));
        assert_eq!(reason(r#"{"VolumeSize":1,"Encrypted":true}"#), Some("INVALID_PARAMETER_VALUE"));
        assert_eq!(
            reason(r#"{"VolumeSize":1,"Tags":[{"Key":"aws:x","Value":"1"}]}"#),
            Some("INVALID_TAG")
        );
        assert_eq!(reason("not json"), Some("INVALID_PARAMETER_VALUE"));
    }

    #[test]
    fn fingerprint_covers_parameters() {
        let a = parse(br#"{"VolumeSize":1,"ClientToken":"t"}"#).unwrap();
        let b = parse(br#"{"VolumeSize":2,"ClientToken":"t"}"#).unwrap();
        let c = parse(br#"{"VolumeSize":1,"ClientToken":"t","Description":"x"}"#).unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
        assert_eq!(
            a.fingerprint(),
            parse(br#"{"ClientToken":"t","VolumeSize":1}"#).unwrap().fingerprint()
        );
    }
}
