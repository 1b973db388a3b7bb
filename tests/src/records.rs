//! Records the benchmarks write straight into the metadata group, filled in
//! as a gateway fills them in; each caller changes what it measures with
//! struct update syntax.

use cairn_core::records::{Snapshot, SnapshotState, Volume, VolumeState, RECORD_VERSION};
use cairn_core::time::now_ms;
use cairn_core::{SnapshotId, VolumeId};
use std::collections::BTreeMap;

/// A new, available 1 GiB gp3 volume of `owner` in cairn-1a on chunk-1a.
pub fn volume(owner: &str) -> Volume {
    Volume {
        version: RECORD_VERSION,
        id: VolumeId::generate(),
        owner: owner.into(),
        size_gib: 1,
        az: "cairn-1a".into(),
        outpost: None,
        host_node: "chunk-1a".into(),
        volume_type: "gp3".into(),
        iops: None,
        throughput: None,
        encrypted: false,
        state: VolumeState::Available,
        create_time_ms: now_ms(),
        snapshot_id: None,
        tags: BTreeMap::new(),
    }
}

/// A new pending snapshot of `volume_id` (1 GiB), started now.
pub fn pending_snapshot(volume_id: VolumeId, owner: &str) -> Snapshot {
    Snapshot {
        version: RECORD_VERSION,
        id: SnapshotId::generate(),
        volume_id,
        owner: owner.into(),
        state: SnapshotState::Pending,
        state_message: None,
        progress: 0,
        start_time_ms: now_ms(),
        completion_time_ms: None,
        description: String::new(),
        volume_size_gib: 1,
        encrypted: false,
        outpost: None,
        storage_tier: "standard".into(),
        manifest_root: None,
        parent: None,
        full_size_bytes: None,
        tags: BTreeMap::new(),
    }
}
