//! The records the metadata group owns. Each is persisted on its own, with a
//! format version, and changed only by applying a [`crate::command::Command`].

pub use crate::accounts::{AccessKey, Account, ClusterSecret, KeyState};
use crate::block::ChunkId;
use crate::ids::{OutpostId, SnapshotId, VolumeId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Format version of every record below. Bump it, and migrate, when a field changes.
pub const RECORD_VERSION: u16 = 1;

/// A chunk node as it registered itself: where it is and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkNodeInfo {
    /// Stable name chosen by configuration, e.g. `chunk-1a-1`.
    pub node_id: String,
    /// The availability zone the node is in, or the AZ an Outpost is anchored to.
    pub az: String,
    /// Set when the node is part of an Outpost.
    pub outpost: Option<OutpostId>,
    /// gRPC endpoint, `http://host:port`.
    pub grpc_addr: String,
    /// NBD endpoint, `host:port`.
    pub nbd_addr: String,
}

impl ChunkNodeInfo {
    /// The zone this node stores data for: the Outpost id, or the AZ.
    pub fn zone(&self) -> String {
        match &self.outpost {
            Some(op) => op.to_string(),
            None => self.az.clone(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeState {
    Creating,
    Available,
    InUse,
    Deleting,
    Error,
}

impl VolumeState {
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeState::Creating => "creating",
            VolumeState::Available => "available",
            VolumeState::InUse => "in-use",
            VolumeState::Deleting => "deleting",
            VolumeState::Error => "error",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub version: u16,
    pub id: VolumeId,
    pub owner: String,
    pub size_gib: u64,
    pub az: String,
    pub outpost: Option<OutpostId>,
    /// The chunk node that hosts the volume's bytes.
    pub host_node: String,
    pub volume_type: String,
    pub iops: Option<u32>,
    pub throughput: Option<u32>,
    pub encrypted: bool,
    pub state: VolumeState,
    pub create_time_ms: u64,
    /// The snapshot the volume was restored from.
    pub snapshot_id: Option<SnapshotId>,
    pub tags: BTreeMap<String, String>,
}

impl Volume {
    pub fn size_bytes(&self) -> u64 {
        self.size_gib << 30
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotState {
    Pending,
    Completed,
    Error,
}

impl SnapshotState {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotState::Pending => "pending",
            SnapshotState::Completed => "completed",
            SnapshotState::Error => "error",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u16,
    pub id: SnapshotId,
    pub volume_id: VolumeId,
    pub owner: String,
    pub state: SnapshotState,
    /// Why the snapshot is in `error`.
    pub state_message: Option<String>,
    /// 0..=100.
    pub progress: u8,
    pub start_time_ms: u64,
    pub completion_time_ms: Option<u64>,
    pub description: String,
    pub volume_size_gib: u64,
    pub encrypted: bool,
    /// Set for a local snapshot of an Outpost: its bytes stay on that Outpost.
    pub outpost: Option<OutpostId>,
    pub storage_tier: String,
    /// Root of the manifest, set when the copy completed.
    pub manifest_root: Option<ChunkId>,
    pub parent: Option<SnapshotId>,
    /// Bytes of non-zero blocks the snapshot holds.
    pub full_size_bytes: Option<u64>,
    pub tags: BTreeMap<String, String>,
}

/// Where a ModifyVolume stands (EC2's `modificationState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModificationState {
    /// Written; the volume host has not grown the volume yet.
    Modifying,
    /// The new size is usable; performance settles (AWS's optimizing phase).
    Optimizing,
    Completed,
    Failed,
}

impl ModificationState {
    pub fn as_str(self) -> &'static str {
        match self {
            ModificationState::Modifying => "modifying",
            ModificationState::Optimizing => "optimizing",
            ModificationState::Completed => "completed",
            ModificationState::Failed => "failed",
        }
    }

    /// A modification in this state keeps the next one waiting.
    pub fn in_progress(self) -> bool {
        matches!(self, ModificationState::Modifying | ModificationState::Optimizing)
    }
}

/// A volume's settings: size, type, IOPS and throughput.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSettings {
    pub size_gib: u64,
    pub volume_type: String,
    pub iops: Option<u32>,
    pub throughput: Option<u32>,
}

impl Volume {
    pub fn settings(&self) -> VolumeSettings {
        VolumeSettings {
            size_gib: self.size_gib,
            volume_type: self.volume_type.clone(),
            iops: self.iops,
            throughput: self.throughput,
        }
    }
}

/// The last ModifyVolume of a volume (one per volume: a new one replaces a
/// finished one). The volume record itself carries the target settings from
/// the moment the modification is accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeModification {
    pub version: u16,
    pub volume_id: VolumeId,
    pub owner: String,
    pub state: ModificationState,
    pub status_message: Option<String>,
    pub original: VolumeSettings,
    pub target: VolumeSettings,
    /// 0..=100.
    pub progress: u8,
    pub start_time_ms: u64,
    pub end_time_ms: Option<u64>,
}

/// What is stored under one key of the state machine.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RecordKey {
    Node(String),
    Volume(VolumeId),
    Snapshot(SnapshotId),
    /// An idempotency token, scoped by owner and operation.
    Token(String),
    /// The copy job of a pending snapshot.
    CopyJob(SnapshotId),
    /// What a pending snapshot or a hydrating volume holds for garbage collection.
    Hold(Holder),
    /// Garbage collection's generation counter.
    Gc,
    /// Where a chunk node stands (up, draining, removed, down). Appended
    /// last: the variants above keep their bincode tags.
    NodeState(String),
    /// A volume's last modification (appended after `NodeState`).
    VolumeModification(VolumeId),
    /// An account, by id (appended after `VolumeModification`).
    Account(String),
    /// An access key, by id.
    AccessKey(String),
    /// A cluster secret, by name.
    ClusterSecret(String),
    /// Who besides its owner may use a snapshot (absent: nobody).
    Sharing(SnapshotId),
    /// A snapshot's archive tier (appended after `Sharing`).
    Tiering(SnapshotId),
}

impl RecordKey {
    /// A byte key that sorts records of one kind together.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            RecordKey::Node(n) => format!("n/{n}"),
            RecordKey::Volume(v) => format!("v/{v}"),
            RecordKey::Snapshot(s) => format!("s/{s}"),
            RecordKey::Token(t) => format!("t/{t}"),
            RecordKey::CopyJob(s) => format!("j/{s}"),
            RecordKey::Hold(Holder::Snapshot(s)) => format!("h/{s}"),
            RecordKey::Hold(Holder::Volume(v)) => format!("h/{v}"),
            RecordKey::Gc => "g".to_string(),
            RecordKey::NodeState(n) => format!("ns/{n}"),
            RecordKey::VolumeModification(v) => format!("m/{v}"),
            RecordKey::Account(a) => format!("a/{a}"),
            RecordKey::AccessKey(k) => format!("k/{k}"),
            RecordKey::ClusterSecret(n) => format!("x/{n}"),
            RecordKey::Sharing(s) => format!("c/{s}"),
            RecordKey::Tiering(s) => format!("r/{s}"),
        }
        .into_bytes()
    }
}

/// What a copy job moves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CopyJobKind {
    /// CreateSnapshot: a frozen volume image into its destination's chunk stores.
    Snapshot,
    /// CopySnapshot between placement domains (the region and an Outpost, or
    /// two Outposts): the chunks of `source`'s manifest `root`, stored on
    /// the nodes of `from` (`None`: the region), that the copy's destination
    /// lacks. Chunk ids and manifests are content-addressed, so the copy's
    /// manifest root is `root` itself once its destination holds it all.
    /// Appended after `Snapshot` (bincode tags).
    Transfer { source: SnapshotId, root: ChunkId, from: Option<OutpostId> },
}

/// The work behind one `pending` snapshot, leased by one gateway at a time.
///
/// Created in the same command as the snapshot and removed when the snapshot
/// completes, fails or is deleted, so a job exists exactly while its snapshot
/// is pending. A gateway may run the job only while it owns an unexpired
/// lease; a lease that lapses (the gateway died or hangs) lets any gateway
/// acquire the job and resume it. Lease times are the proposing gateway's
/// wall clock, but no gateway compares them with its own: a taker waits
/// until it watched the holder's expiry stay unchanged for a full lease on
/// its monotonic clock, so clocks need not agree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyJob {
    pub version: u16,
    pub snapshot_id: SnapshotId,
    pub volume_id: VolumeId,
    pub kind: CopyJobKind,
    /// The gateway holding (or last holding) the lease.
    pub owner: Option<String>,
    /// When the lease lapses, in ms since the epoch, by the clock of the
    /// gateway that last took or renewed it. Gateways compare it with their
    /// own clocks only for the old `Acquire`; a takeover now waits until it
    /// saw this value unchanged for a full lease (`JobOp::AcquireObserved`).
    pub lease_expires_ms: u64,
    /// Blocks of the volume whose chunks the host reported durable at RF.
    pub checkpoint_block: u64,
    /// How many times a gateway acquired the job (1: only its creator). It
    /// rises on every change of holder and on nothing else, so it is the
    /// job's epoch: the holder sends it with each `Copy` call and the volume
    /// host refuses calls of an older epoch than one it has seen.
    pub acquisitions: u32,
    /// Failed copy attempts so far.
    pub failed_attempts: u32,
    /// Since when the volume host has been unreachable, while it is: the
    /// time-out that ends the job in `error` counts from here, across
    /// gateways.
    pub host_down_since_ms: Option<u64>,
    /// The last failure, for the StateMessage if the job ends in `error`.
    pub last_error: Option<String>,
}

impl CopyJob {
    /// True when `gateway` may run the job at `now_ms`: it holds the lease,
    /// or nobody does, or the holder's lease has lapsed.
    pub fn can_acquire(&self, gateway: &str, now_ms: u64) -> bool {
        match &self.owner {
            Some(o) if o == gateway => true,
            Some(_) => self.lease_expires_ms <= now_ms,
            None => true,
        }
    }
}

/// An idempotency token remembers which resource it created and a fingerprint
/// of the parameters, so a retry with other parameters can be refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub version: u16,
    /// `owner/token`: the key the record is stored under.
    pub key: String,
    pub resource_id: String,
    pub fingerprint: String,
}

/// Who holds chunks beyond the completed snapshots' manifests.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Holder {
    /// A pending snapshot (a copy, or an EBS direct snapshot being written).
    Snapshot(SnapshotId),
    /// A volume restored from a snapshot, until it is fully hydrated.
    Volume(VolumeId),
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::Snapshot(s) => write!(f, "{s}"),
            Holder::Volume(v) => write!(f, "{v}"),
        }
    }
}

/// What one holder keeps from garbage collection (see `crate::gc`).
///
/// Created with the pending snapshot or the restored volume, in the same
/// command, and removed when the snapshot completes, fails or is deleted, or
/// when the volume is hydrated or deleted. `generation` is garbage
/// collection's generation when the holder began: every chunk it touches
/// (writes, or finds present and relies on) is touched after that
/// generation's fence on every node, so a sweep never deletes what it
/// touched. `roots` are manifests it needs whole although it did not touch
/// them: the parent's of an incremental snapshot, the source's of a
/// hydrating volume, kept even when those snapshots are deleted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub version: u16,
    pub holder: Holder,
    pub generation: u64,
    pub roots: Vec<ChunkId>,
}

/// Garbage collection's generation: raised by each pass's fence.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcState {
    pub version: u16,
    pub generation: u64,
}

/// Where a chunk node stands. A node without a [`NodeStateRecord`] is `Up`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    /// Placement picks it; it serves reads.
    Up,
    /// Leaving on the operator's word: placement no longer picks it, reads
    /// may still use it while re-replication copies its chunks elsewhere.
    Draining,
    /// Gone for good (its disk is lost): neither written nor read, and a
    /// registration under its id is refused.
    Removed,
    /// Unreachable for longer than the gateways' `node_down_secs`: neither
    /// written nor read until it answers again (then it is `Up`).
    Down,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Up => "up",
            NodeState::Draining => "draining",
            NodeState::Removed => "removed",
            NodeState::Down => "down",
        }
    }

    /// Placement may pick the node for new replicas (copies, EBS direct
    /// writes, new volumes, re-replication).
    pub fn takes_data(self) -> bool {
        self == NodeState::Up
    }

    /// Reads may try the node (restores, manifests, re-replication sources).
    pub fn serves_reads(self) -> bool {
        matches!(self, NodeState::Up | NodeState::Draining)
    }
}

/// A chunk node's state, kept apart from its [`ChunkNodeInfo`] (which the
/// node rewrites whole each time it registers): registering never changes
/// it, so a draining node that restarts is still draining.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStateRecord {
    pub version: u16,
    pub node_id: String,
    pub state: NodeState,
    /// Since when, in ms since the epoch, by the proposer's clock (shown,
    /// never compared).
    pub since_ms: u64,
}

/// A snapshot's `createVolumePermission`: the accounts besides its owner that
/// may create volumes from it and read it through the EBS direct APIs, and
/// whether everyone may. Kept beside the snapshot record, not in it, so
/// snapshot records written before sharing existed still decode; removed
/// with the snapshot (deleting a snapshot revokes every share).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSharing {
    pub version: u16,
    pub snapshot_id: SnapshotId,
    /// 12-digit account ids.
    pub user_ids: BTreeSet<String>,
    /// Shared with the group `all`.
    pub public: bool,
}

impl SnapshotSharing {
    pub fn new(snapshot_id: SnapshotId) -> Self {
        SnapshotSharing {
            version: RECORD_VERSION,
            snapshot_id,
            user_ids: BTreeSet::new(),
            public: false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.user_ids.is_empty() && !self.public
    }

    /// True when `account` may use the snapshot through this share.
    pub fn grants(&self, account: &str) -> bool {
        self.public || self.user_ids.contains(account)
    }
}

/// One persisted record, as stored in the state machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    Node(ChunkNodeInfo),
    Volume(Volume),
    Snapshot(Snapshot),
    Token(TokenRecord),
    CopyJob(CopyJob),
    Hold(Hold),
    Gc(GcState),
    /// Appended last (see [`RecordKey::NodeState`]).
    NodeState(NodeStateRecord),
    /// Appended after `NodeState`.
    VolumeModification(VolumeModification),
    /// Appended after `VolumeModification`.
    Account(Account),
    AccessKey(AccessKey),
    ClusterSecret(ClusterSecret),
    /// Appended after `ClusterSecret`.
    Sharing(SnapshotSharing),
    /// Appended after `Sharing`.
    Tiering(crate::tiering::SnapshotTiering),
}

/// Error decoding a persisted record: never papered over with a default.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("record is corrupt: {0}")]
    Corrupt(String),
    #[error("record has format version {found}, this build reads {expected}")]
    Version { found: u16, expected: u16 },
}

/// On-disk envelope: a version marker, then the bincode body.
pub fn encode_record(r: &Record) -> Vec<u8> {
    let mut out = RECORD_VERSION.to_be_bytes().to_vec();
    // Serialising plain data into a Vec cannot fail.
    out.extend(bincode::serialize(r).unwrap_or_default());
    out
}

pub fn decode_record(bytes: &[u8]) -> Result<Record, DecodeError> {
    if bytes.len() < 2 {
        return Err(DecodeError::Corrupt("shorter than its version marker".into()));
    }
    let found = u16::from_be_bytes([bytes[0], bytes[1]]);
    if found != RECORD_VERSION {
        return Err(DecodeError::Version { found, expected: RECORD_VERSION });
    }
    bincode::deserialize(&bytes[2..]).map_err(|e| DecodeError::Corrupt(e.to_string()))
}
