//! The vocabulary of the metadata state machine: the commands that change
//! records (with the copy-job steps they carry), what applying one answers,
//! why one is refused, and the queries that read records. These travel as
//! serde values inside Raft log entries and the metadata client API, so
//! their names and shapes are the replicated format: a change here is a
//! change every member and client must agree on.

use crate::block::ChunkId;
use crate::ids::{SnapshotId, VolumeId};
use crate::records::{
    AccessKey, Account, ChunkNodeInfo, ClusterSecret, CopyJob, Hold, Holder, NodeState, Snapshot,
    SnapshotSharing, Volume, VolumeModification, VolumeSettings, VolumeState,
};
use crate::tiering::{ArchiveCopy, SnapshotTiering};
use serde::{Deserialize, Serialize};

/// The volume id of snapshots written through the EBS direct APIs, which no
/// volume backs (AWS shows the same `vol-ffffffff` for them).
pub const DIRECT_VOLUME_ID: &str = "vol-ffffffff";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// A chunk node announces itself (again, after a restart: addresses may change).
    RegisterNode(ChunkNodeInfo),
    /// Creates a volume record. With a token already used for the same
    /// parameters, returns the volume created the first time.
    CreateVolume {
        volume: Volume,
        client_token: Option<String>,
    },
    SetVolumeState {
        id: VolumeId,
        state: VolumeState,
    },
    /// Removes a volume record. Refused while it is in use or has pending snapshots.
    DeleteVolume {
        id: VolumeId,
    },
    /// Creates a `pending` snapshot of an existing volume, within the pending
    /// limit, and its copy job, leased to gateway `job_owner` until
    /// `lease_expires_ms`. The snapshot's `parent` is set here to the volume's
    /// latest completed snapshot of the same destination (whatever the
    /// proposer sent).
    CreateSnapshot {
        snapshot: Snapshot,
        client_token: Option<String>,
        job_owner: String,
        lease_expires_ms: u64,
    },
    /// One step of a pending snapshot's copy job, by gateway `owner` at its
    /// clock's `now_ms` (see [`JobOp`]).
    CopyJob {
        id: SnapshotId,
        owner: String,
        now_ms: u64,
        op: JobOp,
    },
    /// Creates a `pending` snapshot that no volume backs: the EBS direct
    /// APIs' StartSnapshot. `snapshot.volume_id` is the synthetic
    /// [`DIRECT_VOLUME_ID`]; a parent, when given, must be a completed
    /// snapshot of the same owner. `fingerprint` covers every request
    /// parameter, so a retry with the same token returns the first snapshot
    /// and a reuse with other parameters is refused.
    StartSnapshot {
        snapshot: Snapshot,
        client_token: Option<String>,
        fingerprint: String,
    },
    /// Raises the progress of a pending snapshot (never lowers it).
    SnapshotProgress {
        id: SnapshotId,
        progress: u8,
    },
    /// Seals a pending snapshot: `completed`, 100%, with its manifest root.
    CompleteSnapshot {
        id: SnapshotId,
        manifest_root: ChunkId,
        full_size_bytes: u64,
        at_ms: u64,
    },
    /// Ends a pending snapshot in `error` with a reason.
    FailSnapshot {
        id: SnapshotId,
        message: String,
        at_ms: u64,
    },
    DeleteSnapshot {
        id: SnapshotId,
    },
    /// Adds or overwrites tags on every resource; all must exist or nothing changes.
    CreateTags {
        resources: Vec<String>,
        tags: Vec<(String, String)>,
    },
    /// Deletes tags: a key alone deletes whatever its value; key with value only
    /// when equal; no tags at all deletes every tag.
    DeleteTags {
        resources: Vec<String>,
        tags: Vec<(String, Option<String>)>,
    },
    /// Garbage collection's fence: raises the generation to `generation`
    /// (never lowers it). Every chunk node was told the generation's fence
    /// before this is proposed; holders created after it record it.
    GcFence {
        generation: u64,
    },
    /// Drops a hold that is no longer needed (a restored volume is fully
    /// hydrated). Releasing an absent hold is a retry, not an error.
    ReleaseHold {
        holder: Holder,
    },
    // Appended last, so the variants above keep their bincode tags.
    /// The operator drains a node: placement stops picking it and
    /// re-replication moves what it holds. Refused for an unknown or removed
    /// node, and when the node is the last one of its zone (an AZ of the
    /// region, or its Outpost) that placement could pick.
    DrainNode {
        node_id: String,
        at_ms: u64,
    },
    /// The operator removes a node whose disk is gone. Refused for an
    /// unknown node and when it is the last one of its destination (the
    /// region, or its Outpost) that placement could pick. Removing a removed
    /// node is a retry.
    RemoveNode {
        node_id: String,
        at_ms: u64,
    },
    /// A gateway found the node unreachable past `node_down_secs`: an `Up`
    /// node becomes `Down`; any other state is kept (a retry, or an
    /// operator's decision that outranks it).
    NodeDown {
        node_id: String,
        at_ms: u64,
    },
    /// A `Down` node answered again: it is `Up`; any other state is kept.
    NodeUp {
        node_id: String,
        at_ms: u64,
    },
    /// ModifyVolume: the volume (owned by `owner`, `available` or `in-use`,
    /// with no modification in progress) takes the `target` settings at
    /// once, and a `modifying` modification records the change. Refused if
    /// the size would shrink. The volume host grows the volume afterwards.
    ModifyVolume {
        id: VolumeId,
        owner: String,
        target: VolumeSettings,
        at_ms: u64,
    },
    /// The volume host holds the modified volume at its new size: the
    /// modification is `completed` (a finished one is left as it is).
    FinishModification {
        id: VolumeId,
        at_ms: u64,
    },
    /// The freeze of a pending snapshot found its volume larger than the
    /// snapshot recorded (grown by a ModifyVolume in between): the
    /// snapshot's volume size is raised to the frozen image's. Never lowered.
    RaiseSnapshotVolumeSize {
        id: SnapshotId,
        size_gib: u64,
    },
    /// Creates an account; refused when its id or name is taken.
    CreateAccount(Account),
    /// Adds an access key (its secret sealed) to an existing account.
    CreateAccessKey(AccessKey),
    /// Revokes an access key: it stays listed, and no gateway accepts it.
    /// Revoking a revoked key changes nothing.
    RevokeAccessKey {
        id: String,
        at_ms: u64,
    },
    /// Sets the cluster secret `secret.name` unless it is set; either way
    /// answers the stored one (the first proposer's value wins).
    EnsureSecret(ClusterSecret),
    /// Changes a snapshot's `createVolumePermission`, by its `owner` (anyone
    /// else: the snapshot does not exist). Appended after `EnsureSecret`.
    ShareSnapshot {
        id: SnapshotId,
        owner: String,
        change: SharingChange,
    },
    /// CopySnapshot within one placement domain: `copy` (id, owner,
    /// description, tags and times chosen by the proposer) becomes a
    /// completed snapshot sharing `source`'s manifest, so no data moves. The
    /// source must be completed, regional, and `copy.owner`'s or shared with
    /// it. Appended after `ShareSnapshot`.
    CopySnapshot {
        copy: Snapshot,
        source: SnapshotId,
    },
    /// CopySnapshot into another placement domain (`copy.outpost` differs
    /// from the source's): `copy` becomes a `pending` snapshot with a
    /// transfer job leased to `job_owner` and a hold on the source's
    /// manifest, so deleting the source mid-copy frees nothing the copy
    /// still reads. At most [`MAX_CONCURRENT_COPIES`] run per destination.
    TransferSnapshot {
        copy: Snapshot,
        source: SnapshotId,
        job_owner: String,
        lease_expires_ms: u64,
    },
    /// A change of snapshot `id`'s storage tier at `now_ms` (the proposer's
    /// clock): asked for by its owner, or a step of the work (see [`TierOp`]).
    Tier {
        id: SnapshotId,
        now_ms: u64,
        op: TierOp,
    },
}

/// What a [`Command::Tier`] asks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TierOp {
    /// ModifySnapshotTier (`archive`) by account `owner`.
    Archive {
        owner: String,
    },
    /// RestoreSnapshotTier by account `owner`: for `days`, or permanently
    /// (`None`); changes the period of a completed temporary restore.
    Restore {
        owner: String,
        days: Option<u32>,
    },
    /// Gateway `gateway` takes (or renews) the work for `lease_ms`.
    Claim {
        gateway: String,
        lease_ms: u64,
    },
    Progress {
        gateway: String,
        progress: u8,
    },
    /// The archive copy is written and verified: the snapshot is archived.
    Archived {
        gateway: String,
        archive: ArchiveCopy,
    },
    /// The chunks are back in the chunk stores: the restore completed.
    Restored {
        gateway: String,
    },
    Failed {
        gateway: String,
        message: String,
    },
    /// A temporary restore whose time is up ends (the archive copy stays).
    Expire,
    /// The archive copy of a deleted or permanently restored snapshot is gone.
    Purged {
        gateway: String,
    },
}

/// Copies between placement domains in flight to one destination at once,
/// as EC2 allows per destination region; one more is `ResourceLimitExceeded`.
pub const MAX_CONCURRENT_COPIES: usize = 20;

/// A change to a snapshot's `createVolumePermission`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SharingChange {
    /// Grants these accounts, and everyone with `public`.
    Add { user_ids: Vec<String>, public: bool },
    /// Takes back these accounts' grants, and the public one with `public`.
    Remove { user_ids: Vec<String>, public: bool },
    /// Back to the owner alone.
    Reset,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CommandOutput {
    Done,
    Volume(Volume),
    Snapshot(Snapshot),
    CopyJob(CopyJob),
    Modification(VolumeModification),
    Account(Account),
    AccessKey(AccessKey),
    Secret(ClusterSecret),
    /// Appended after `Secret`.
    Tiering(SnapshotTiering),
}

/// Why a command was refused. Each maps to one AWS error code in the gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MetaError {
    #[error("The volume '{0}' does not exist.")]
    VolumeNotFound(String),
    #[error("The snapshot '{0}' does not exist.")]
    SnapshotNotFound(String),
    #[error("The ID '{0}' is not valid")]
    InvalidId(String),
    #[error("The maximum number of concurrent snapshots for volume {0} has been reached.")]
    ConcurrentSnapshotLimit(String),
    #[error("{0}")]
    IncorrectState(String),
    #[error("{0}")]
    VolumeInUse(String),
    #[error("The client token {0} was already used with different parameters.")]
    IdempotentParameterMismatch(String),
    /// Appended last (bincode tags).
    #[error("The chunk node '{0}' is not registered.")]
    NodeNotFound(String),
    /// A modification of the volume is still in progress.
    #[error("{0}")]
    IncorrectModificationState(String),
    /// A request that would change nothing, or shrink the volume.
    #[error("{0}")]
    InvalidModification(String),
    #[error("The account '{0}' does not exist.")]
    AccountNotFound(String),
    /// An account of that name or id exists already.
    #[error("{0}")]
    AccountExists(String),
    #[error("The access key '{0}' does not exist.")]
    AccessKeyNotFound(String),
    /// A change AWS does not allow (making an encrypted snapshot public).
    #[error("{0}")]
    OperationNotPermitted(String),
    /// Too many of something in flight (copies to one destination).
    #[error("{0}")]
    ResourceLimitExceeded(String),
}

pub type CommandResult = Result<CommandOutput, MetaError>;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Query {
    Volume(VolumeId),
    Volumes,
    Snapshot(SnapshotId),
    Snapshots,
    Nodes,
    /// Every copy job (one per pending snapshot).
    CopyJobs,
    /// Garbage collection's generation and every hold.
    GcHolders,
    /// One holder's hold.
    Hold(Holder),
    /// Every registered node with its state (appended last).
    NodeStates,
    /// Every volume's last modification.
    VolumeModifications,
    /// How many volumes and snapshots are in each state (for metrics: a
    /// count, not a copy of every record).
    Counts,
    Accounts,
    /// One access key (its secret sealed), active or revoked.
    AccessKey(String),
    AccessKeys,
    /// One snapshot's sharing (appended after `AccessKeys`).
    Sharing(SnapshotId),
    /// Every snapshot that is shared with anyone.
    Sharings,
    /// Every snapshot's tiering record (appended after `Sharings`).
    Tierings,
    /// One page of snapshots, in id order (appended after `Tierings`).
    SnapshotScan(SnapshotScan),
    /// One page of volumes, in id order.
    VolumeScan(VolumeScan),
    /// The tiering records of these snapshots (those that have one).
    TieringsOf(Vec<SnapshotId>),
    /// The sharing of these snapshots (those shared with anyone).
    SharingsOf(Vec<SnapshotId>),
}

/// Most records one scan page returns, and most it looks at.
pub const MAX_SCAN_PAGE: u32 = 10_000;

/// Which snapshots a paged scan returns: those meeting every condition given,
/// in id order, after `after`, at most `limit` (0 or more than
/// [`MAX_SCAN_PAGE`]: that many).
/// The most selective condition picks the index the scan walks (ids, then a
/// tag, then volumes, then the caller's visibility, else the whole table),
/// the others are checked on each record. A page may come back short (it
/// looks at no more than [`MAX_SCAN_PAGE`] records) with `next` set: scan on
/// from there.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotScan {
    /// Only these snapshots (empty: any).
    pub ids: Vec<SnapshotId>,
    /// Only snapshots of these volumes (empty: any).
    pub volumes: Vec<VolumeId>,
    /// Only snapshots that carry tag `key` with one of these values.
    pub tag: Option<(String, Vec<String>)>,
    /// Only snapshots this account owns, or that are public or shared with it.
    pub visible_to: Option<String>,
    /// Only snapshots this account owns.
    pub owner: Option<String>,
    pub after: Option<SnapshotId>,
    pub limit: u32,
}

/// Which volumes a paged scan returns; as [`SnapshotScan`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VolumeScan {
    pub ids: Vec<VolumeId>,
    pub tag: Option<(String, Vec<String>)>,
    /// Only volumes this account owns.
    pub owner: Option<String>,
    pub after: Option<VolumeId>,
    pub limit: u32,
}

/// One page of a scan: the records, and where the next page starts when the
/// scan stopped before the end (`None`: nothing more).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Page<T, K> {
    pub items: Vec<T>,
    pub next: Option<K>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum QueryOutput {
    Volume(Option<Volume>),
    Volumes(Vec<Volume>),
    Snapshot(Option<Snapshot>),
    Snapshots(Vec<Snapshot>),
    Nodes(Vec<ChunkNodeInfo>),
    CopyJobs(Vec<CopyJob>),
    GcHolders(GcHolders),
    Hold(Option<Hold>),
    NodeStates(Vec<NodeEntry>),
    VolumeModifications(Vec<VolumeModification>),
    Counts(Counts),
    Accounts(Vec<Account>),
    AccessKey(Option<AccessKey>),
    AccessKeys(Vec<AccessKey>),
    Sharing(Option<SnapshotSharing>),
    Sharings(Vec<SnapshotSharing>),
    Tierings(Vec<SnapshotTiering>),
    SnapshotPage(Page<Snapshot, SnapshotId>),
    VolumePage(Page<Volume, VolumeId>),
}

/// Volumes and snapshots by state name (`available`, `pending`, ...).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub volumes: std::collections::BTreeMap<String, u64>,
    pub snapshots: std::collections::BTreeMap<String, u64>,
}

/// A registered node and where it stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeEntry {
    pub info: ChunkNodeInfo,
    pub state: NodeState,
    /// When it entered `state`; 0 for a node that was never anything but up.
    pub since_ms: u64,
}

/// What garbage collection reads besides the completed snapshots.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GcHolders {
    pub generation: u64,
    pub holds: Vec<Hold>,
}

impl GcHolders {
    /// The oldest generation a holder began in (at most the current one):
    /// chunks touched since its fence are kept by every sweep.
    pub fn oldest_generation(&self) -> u64 {
        self.holds.iter().map(|h| h.generation).fold(self.generation, u64::min)
    }
}

/// How a copy ended, as the job's lease holder reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CopyOutcome {
    /// Every chunk and manifest page is durable at RF: the snapshot completes.
    Completed { manifest_root: ChunkId, full_size_bytes: u64 },
    /// The snapshot ends in `error` with this StateMessage.
    Failed { message: String },
}

/// One step of a copy job, applied by [`Command::CopyJob`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum JobOp {
    /// Takes the job if nobody holds it, the caller holds it already, or the
    /// holder's lease lapsed by the caller's clock; the lease then runs
    /// `lease_ms` from `now_ms`. Kept for the log entries that carry it;
    /// gateways send [`JobOp::AcquireObserved`], which trusts no clock.
    Acquire { lease_ms: u64 },
    /// Extends the caller's lease to `now_ms + lease_ms`.
    Renew { lease_ms: u64 },
    /// Records the host's checkpoint (never lowered), raises the snapshot's
    /// progress (at most 99: only completion makes 100), marks the host
    /// reachable, and renews the lease.
    Checkpoint { checkpoint_block: u64, progress: u8, lease_ms: u64 },
    /// A copy attempt failed because the host could not be reached: the
    /// host-down clock starts at `now_ms` unless it runs already.
    HostDown { error: String },
    /// The host answered again: the host-down clock stops.
    HostUp,
    /// Ends the snapshot (completed or error) and removes the job.
    Finish { outcome: CopyOutcome },
    /// Takes the job without comparing clocks: if nobody holds it or the
    /// caller does, as [`JobOp::Acquire`]; from another holder only if its
    /// `lease_expires_ms` still equals `seen_expiry_ms`, the value the caller
    /// watched stay unchanged for a full lease on its own monotonic clock (a
    /// holder that renews changes it, so a live holder is never taken over
    /// whatever the gateways' clocks say). `None` takes only an unheld job or
    /// the caller's own. The lease then runs `lease_ms` from `now_ms`, and a
    /// change of holder raises `acquisitions`, the job's epoch.
    ///
    /// Appended last: the variants above keep their bincode tags, so older
    /// log entries still decode (and `Acquire` still applies as it did).
    AcquireObserved { lease_ms: u64, seen_expiry_ms: Option<u64> },
}
