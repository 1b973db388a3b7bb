//! Records the unit tests share (test builds only): a volume, a snapshot of
//! it and its copy job, complete and valid, for each test to adjust.

use cairn_core::records::{
    CopyJob, CopyJobKind, Snapshot, SnapshotState, Volume, VolumeState, RECORD_VERSION,
};
use cairn_core::{SnapshotId, VolumeId};
use std::collections::BTreeMap;

/// An available 8-GiB gp3 volume of account 123456789012, untagged.
pub fn volume() -> Volume {
    Volume {
        version: RECORD_VERSION,
        id: VolumeId::parse("vol-0123456789abcdef0").unwrap(),
        owner: "123456789012".into(),
        size_gib: 8,
        az: "cairn-1a".into(),
        outpost: None,
        host_node: "n1".into(),
        volume_type: "gp3".into(),
        iops: Some(3000),
        throughput: Some(125),
        encrypted: false,
        state: VolumeState::Available,
        create_time_ms: 1_767_225_600_123,
        snapshot_id: None,
        tags: BTreeMap::new(),
    }
}

/// A pending snapshot of [`volume`], with a description that needs escaping.
pub fn snapshot() -> Snapshot {
    Snapshot {
        version: RECORD_VERSION,
        id: SnapshotId::parse("snap-0123456789abcdef0").unwrap(),
        volume_id: VolumeId::parse("vol-0123456789abcdef0").unwrap(),
        owner: "123456789012".into(),
        state: SnapshotState::Pending,
        state_message: None,
        progress: 0,
        start_time_ms: 1_767_225_600_000,
        completion_time_ms: None,
        description: "d <&>".into(),
        volume_size_gib: 8,
        encrypted: false,
        outpost: None,
        storage_tier: "standard".into(),
        manifest_root: None,
        parent: None,
        full_size_bytes: None,
        tags: BTreeMap::new(),
    }
}

/// The copy job of [`snapshot`], leased to `owner` until `lease_expires_ms`.
pub fn copy_job(owner: &str, lease_expires_ms: u64) -> CopyJob {
    let s = snapshot();
    CopyJob {
        version: RECORD_VERSION,
        snapshot_id: s.id,
        volume_id: s.volume_id,
        kind: CopyJobKind::Snapshot,
        owner: Some(owner.to_string()),
        lease_expires_ms,
        checkpoint_block: 0,
        acquisitions: 1,
        failed_attempts: 0,
        host_down_since_ms: None,
        last_error: None,
    }
}
