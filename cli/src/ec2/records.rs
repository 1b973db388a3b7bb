//! Volumes and snapshots as the CLI shows them, read from the EC2 answers'
//! items, and the checks made on ids and sizes before any call.

use super::xml::Element;
use anyhow::bail;
use cairn_core::{SnapshotId, VolumeId};
use serde::Serialize;

/// The largest volume EC2 creates (io2 Block Express), GiB.
pub const MAX_SIZE_GIB: u64 = 65_536;

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct VolumeRow {
    pub volume_id: String,
    pub name: Option<String>,
    pub availability_zone: String,
    pub size_gib: u64,
    pub state: String,
    pub volume_type: String,
    pub snapshot_id: Option<String>,
    pub create_time: String,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct SnapshotRow {
    pub snapshot_id: String,
    pub volume_id: String,
    pub state: String,
    pub progress: u8,
    pub volume_size_gib: u64,
    pub start_time: String,
    pub description: String,
    pub state_message: Option<String>,
}

fn text(e: &Element, name: &str) -> String {
    e.text(name).unwrap_or_default().to_string()
}

fn optional(e: &Element, name: &str) -> Option<String> {
    e.text(name).filter(|t| !t.is_empty()).map(str::to_string)
}

impl VolumeRow {
    /// From a `volumeSet` item or a CreateVolume answer (same fields).
    pub fn from_xml(e: &Element) -> Self {
        VolumeRow {
            volume_id: text(e, "volumeId"),
            name: e.tag("Name").map(str::to_string),
            availability_zone: text(e, "availabilityZone"),
            size_gib: e.text("size").and_then(|s| s.parse().ok()).unwrap_or(0),
            state: e.text("status").or(e.text("state")).unwrap_or_default().to_string(),
            volume_type: text(e, "volumeType"),
            snapshot_id: optional(e, "snapshotId"),
            create_time: text(e, "createTime"),
        }
    }
}

impl SnapshotRow {
    /// From a `snapshotSet` item or a CreateSnapshot answer.
    pub fn from_xml(e: &Element) -> Self {
        let progress = e.text("progress").unwrap_or_default().trim_end_matches('%');
        SnapshotRow {
            snapshot_id: text(e, "snapshotId"),
            volume_id: text(e, "volumeId"),
            state: text(e, "status"),
            progress: progress.parse().unwrap_or(0),
            volume_size_gib: e.text("volumeSize").and_then(|s| s.parse().ok()).unwrap_or(0),
            start_time: text(e, "startTime"),
            description: text(e, "description"),
            state_message: optional(e, "statusMessage"),
        }
    }
}

/// `s` if it is a well-formed volume id (`vol-` and 8 or 17 hex digits).
pub fn volume_id(s: &str) -> anyhow::Result<String> {
    match VolumeId::parse(s) {
        Some(id) => Ok(id.to_string()),
        None => bail!("{s:?} is not a volume id (vol- followed by 8 or 17 hex digits)"),
    }
}

/// `s` if it is a well-formed snapshot id.
pub fn snapshot_id(s: &str) -> anyhow::Result<String> {
    match SnapshotId::parse(s) {
        Some(id) => Ok(id.to_string()),
        None => bail!("{s:?} is not a snapshot id (snap- followed by 8 or 17 hex digits)"),
    }
}

/// `gib` if EC2 could create a volume that large.
pub fn size_gib(gib: u64) -> anyhow::Result<u64> {
    if gib == 0 || gib > MAX_SIZE_GIB {
        bail!("a volume is 1 to {MAX_SIZE_GIB} GiB, not {gib}");
    }
    Ok(gib)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ec2::xml::parse;

    #[test]
    fn rows_from_items() {
        let v = parse(
            "<item><volumeId>vol-1</volumeId><size>8</size><availabilityZone>us-east-1a</availabilityZone>\
             <status>available</status><volumeType>gp3</volumeType><snapshotId/><createTime>t</createTime>\
             <tagSet><item><key>Name</key><value>db</value></item></tagSet></item>",
        )
        .expect("xml");
        let row = VolumeRow::from_xml(&v);
        assert_eq!((row.size_gib, row.state.as_str(), row.snapshot_id), (8, "available", None));
        assert_eq!(row.name.as_deref(), Some("db"));
        let s = parse(
            "<item><snapshotId>snap-1</snapshotId><volumeId>vol-1</volumeId><status>pending</status>\
             <progress>35%</progress><volumeSize>8</volumeSize></item>",
        )
        .expect("xml");
        let row = SnapshotRow::from_xml(&s);
        assert_eq!((row.progress, row.state.as_str(), row.volume_size_gib), (35, "pending", 8));
    }

    #[test]
    fn checks_ids_and_sizes() {
        assert!(volume_id("vol-0123456789abcdef0").is_ok());
        assert!(volume_id("vol-01234567").is_ok());
        assert!(volume_id("vol-xyz").is_err());
        assert!(volume_id("snap-01234567").is_err());
        assert!(snapshot_id("snap-01234567").is_ok());
        assert!(snapshot_id("snap-0123").is_err());
        assert!(size_gib(0).is_err());
        assert!(size_gib(1).is_ok());
        assert!(size_gib(MAX_SIZE_GIB + 1).is_err());
    }
}
