//! Commands change records; queries read them. Both travel inside Raft log
//! entries and the metadata client API as serde values, and are applied by
//! [`Records::apply`], a pure function of the current records and the command
//! (the proposer chooses ids and timestamps, so every member applies alike).

use crate::block::ChunkId;
use crate::ids::{SnapshotId, VolumeId};
use crate::records::{
    decode_record, encode_record, ChunkNodeInfo, CopyJob, DecodeError, Record, RecordKey, Snapshot,
    SnapshotState, TokenRecord, Volume, VolumeState, RECORD_VERSION,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

mod copy_jobs;
pub use copy_jobs::{CopyOutcome, JobOp};
#[cfg(test)]
mod copy_job_tests;

/// Pending snapshots allowed per volume, as EC2 has it for gp2/gp3/io1/io2.
pub const MAX_PENDING_SNAPSHOTS: usize = 5;

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
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CommandOutput {
    Done,
    Volume(Volume),
    Snapshot(Snapshot),
    CopyJob(CopyJob),
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
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum QueryOutput {
    Volume(Option<Volume>),
    Volumes(Vec<Volume>),
    Snapshot(Option<Snapshot>),
    Snapshots(Vec<Snapshot>),
    Nodes(Vec<ChunkNodeInfo>),
    CopyJobs(Vec<CopyJob>),
}

/// All records, in memory, plus the keys changed since the last [`Records::take_dirty`].
///
/// The metadata node persists exactly the dirty keys (with `last_applied`, in one
/// batch) after each apply, and loads every record back on start.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Records {
    nodes: BTreeMap<String, ChunkNodeInfo>,
    volumes: BTreeMap<VolumeId, Volume>,
    snapshots: BTreeMap<SnapshotId, Snapshot>,
    tokens: BTreeMap<String, TokenRecord>,
    #[serde(default)]
    copy_jobs: BTreeMap<SnapshotId, CopyJob>,
    #[serde(skip)]
    dirty: BTreeSet<RecordKey>,
    /// Derived from `snapshots`, kept in step by `index_add`/`index_remove`:
    /// pending snapshots and completed ones (by start time) per volume, so the
    /// pending limit and the parent choice cost O(snapshots of one volume in
    /// that state), not a scan of every snapshot.
    #[serde(skip)]
    index: SnapshotIndex,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct SnapshotIndex {
    pending: BTreeMap<VolumeId, BTreeSet<SnapshotId>>,
    completed: BTreeMap<VolumeId, BTreeSet<(u64, SnapshotId)>>,
}

impl Records {
    /// Rebuilds the records from persisted `(key, value)` pairs.
    pub fn load<'a>(pairs: impl IntoIterator<Item = &'a [u8]>) -> Result<Self, DecodeError> {
        let mut r = Records::default();
        for value in pairs {
            r.insert(decode_record(value)?);
        }
        Ok(r)
    }

    fn insert(&mut self, rec: Record) {
        match rec {
            Record::Node(n) => {
                self.nodes.insert(n.node_id.clone(), n);
            }
            Record::Volume(v) => {
                self.volumes.insert(v.id.clone(), v);
            }
            Record::Snapshot(s) => {
                self.index_add(&s);
                self.snapshots.insert(s.id.clone(), s);
            }
            Record::Token(t) => {
                self.tokens.insert(t.key.clone(), t);
            }
            Record::CopyJob(j) => {
                self.copy_jobs.insert(j.snapshot_id.clone(), j);
            }
        }
    }

    /// Every record, encoded, with its key: the whole state, for Raft snapshots.
    pub fn encode_all(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let keys: Vec<RecordKey> = self
            .nodes
            .keys()
            .map(|k| RecordKey::Node(k.clone()))
            .chain(self.volumes.keys().map(|k| RecordKey::Volume(k.clone())))
            .chain(self.snapshots.keys().map(|k| RecordKey::Snapshot(k.clone())))
            .chain(self.tokens.keys().map(|k| RecordKey::Token(k.clone())))
            .chain(self.copy_jobs.keys().map(|k| RecordKey::CopyJob(k.clone())))
            .collect();
        keys.into_iter().filter_map(|k| self.encode_key(&k).map(|v| (k.encode(), v))).collect()
    }

    /// The encoded value under `key`, or `None` when it was deleted.
    pub fn encode_key(&self, key: &RecordKey) -> Option<Vec<u8>> {
        let rec = match key {
            RecordKey::Node(k) => Record::Node(self.nodes.get(k)?.clone()),
            RecordKey::Volume(k) => Record::Volume(self.volumes.get(k)?.clone()),
            RecordKey::Snapshot(k) => Record::Snapshot(self.snapshots.get(k)?.clone()),
            RecordKey::Token(k) => Record::Token(self.tokens.get(k)?.clone()),
            RecordKey::CopyJob(k) => Record::CopyJob(self.copy_jobs.get(k)?.clone()),
        };
        Some(encode_record(&rec))
    }

    /// Keys changed since the last call, to persist.
    pub fn take_dirty(&mut self) -> BTreeSet<RecordKey> {
        std::mem::take(&mut self.dirty)
    }

    pub fn query(&self, q: &Query) -> QueryOutput {
        match q {
            Query::Volume(id) => QueryOutput::Volume(self.volumes.get(id).cloned()),
            Query::Volumes => QueryOutput::Volumes(self.volumes.values().cloned().collect()),
            Query::Snapshot(id) => QueryOutput::Snapshot(self.snapshots.get(id).cloned()),
            Query::Snapshots => QueryOutput::Snapshots(self.snapshots.values().cloned().collect()),
            Query::Nodes => QueryOutput::Nodes(self.nodes.values().cloned().collect()),
            Query::CopyJobs => QueryOutput::CopyJobs(self.copy_jobs.values().cloned().collect()),
        }
    }

    pub fn apply(&mut self, cmd: Command) -> CommandResult {
        match cmd {
            Command::RegisterNode(n) => {
                self.dirty.insert(RecordKey::Node(n.node_id.clone()));
                self.nodes.insert(n.node_id.clone(), n);
                Ok(CommandOutput::Done)
            }
            Command::CreateVolume { volume, client_token } => {
                let fingerprint = format!(
                    "vol:{}:{}:{}:{:?}:{:?}",
                    volume.size_gib,
                    volume.az,
                    volume.volume_type,
                    volume.snapshot_id,
                    volume.outpost
                );
                if let Some(id) = self.token_hit(&volume.owner, &client_token, &fingerprint)? {
                    let existing = VolumeId::parse(&id).and_then(|v| self.volumes.get(&v).cloned());
                    if let Some(v) = existing {
                        return Ok(CommandOutput::Volume(v));
                    }
                }
                if let Some(snap) = &volume.snapshot_id {
                    match self.snapshots.get(snap) {
                        Some(s) if s.state == SnapshotState::Completed => {}
                        Some(_) => {
                            return Err(MetaError::IncorrectState(format!(
                                "Snapshot '{snap}' is not completed."
                            )))
                        }
                        None => return Err(MetaError::SnapshotNotFound(snap.to_string())),
                    }
                }
                self.remember_token(
                    &volume.owner,
                    client_token,
                    fingerprint,
                    volume.id.to_string(),
                );
                self.put_volume(volume.clone());
                Ok(CommandOutput::Volume(volume))
            }
            Command::SetVolumeState { id, state } => {
                let mut v = self.volume(&id)?;
                v.state = state;
                self.put_volume(v.clone());
                Ok(CommandOutput::Volume(v))
            }
            Command::DeleteVolume { id } => {
                let v = self.volume(&id)?;
                if v.state == VolumeState::InUse {
                    return Err(MetaError::VolumeInUse(format!(
                        "Volume {id} is currently attached."
                    )));
                }
                if self.pending_snapshots(&id) > 0 {
                    return Err(MetaError::IncorrectState(format!(
                        "Volume {id} has pending snapshots; delete it once they finish."
                    )));
                }
                self.volumes.remove(&id);
                self.dirty.insert(RecordKey::Volume(id));
                Ok(CommandOutput::Done)
            }
            Command::CreateSnapshot { mut snapshot, client_token, job_owner, lease_expires_ms } => {
                let fingerprint = format!(
                    "snap:{}:{}:{:?}",
                    snapshot.volume_id, snapshot.description, snapshot.outpost
                );
                if let Some(id) = self.token_hit(&snapshot.owner, &client_token, &fingerprint)? {
                    let existing =
                        SnapshotId::parse(&id).and_then(|s| self.snapshots.get(&s).cloned());
                    if let Some(s) = existing {
                        return Ok(CommandOutput::Snapshot(s));
                    }
                }
                let vol = self.volume(&snapshot.volume_id)?;
                if vol.state != VolumeState::Available && vol.state != VolumeState::InUse {
                    return Err(MetaError::IncorrectState(format!(
                        "Volume '{}' is in state '{}'.",
                        vol.id,
                        vol.state.as_str()
                    )));
                }
                if self.pending_snapshots(&vol.id) >= MAX_PENDING_SNAPSHOTS {
                    return Err(MetaError::ConcurrentSnapshotLimit(vol.id.to_string()));
                }
                self.remember_token(
                    &snapshot.owner,
                    client_token,
                    fingerprint,
                    snapshot.id.to_string(),
                );
                snapshot.parent = self.latest_completed(&snapshot);
                self.create_copy_job(&snapshot, job_owner, lease_expires_ms);
                self.put_snapshot(snapshot.clone());
                Ok(CommandOutput::Snapshot(snapshot))
            }
            Command::CopyJob { id, owner, now_ms, op } => self.apply_job_op(id, owner, now_ms, op),
            Command::StartSnapshot { snapshot, client_token, fingerprint } => {
                // Scoped, so a token also used by another operation never collides.
                let client_token = client_token.map(|t| format!("StartSnapshot:{t}"));
                if let Some(id) = self.token_hit(&snapshot.owner, &client_token, &fingerprint)? {
                    let existing =
                        SnapshotId::parse(&id).and_then(|s| self.snapshots.get(&s).cloned());
                    if let Some(s) = existing {
                        return Ok(CommandOutput::Snapshot(s));
                    }
                }
                if let Some(parent) = &snapshot.parent {
                    match self.snapshots.get(parent) {
                        Some(p) if p.owner != snapshot.owner => {
                            return Err(MetaError::SnapshotNotFound(parent.to_string()))
                        }
                        Some(p) if p.state == SnapshotState::Completed => {}
                        Some(p) => {
                            return Err(MetaError::IncorrectState(format!(
                                "Snapshot '{parent}' is {}, not completed.",
                                p.state.as_str()
                            )))
                        }
                        None => return Err(MetaError::SnapshotNotFound(parent.to_string())),
                    }
                }
                self.remember_token(
                    &snapshot.owner,
                    client_token,
                    fingerprint,
                    snapshot.id.to_string(),
                );
                self.put_snapshot(snapshot.clone());
                Ok(CommandOutput::Snapshot(snapshot))
            }
            Command::SnapshotProgress { id, progress } => {
                let mut s = self.snapshot(&id)?;
                if s.state == SnapshotState::Pending && progress > s.progress {
                    s.progress = progress.min(99);
                    self.put_snapshot(s.clone());
                }
                Ok(CommandOutput::Snapshot(s))
            }
            Command::CompleteSnapshot { id, manifest_root, full_size_bytes, at_ms } => {
                let mut s = self.snapshot(&id)?;
                match s.state {
                    SnapshotState::Pending => {
                        s.state = SnapshotState::Completed;
                        s.progress = 100;
                        s.manifest_root = Some(manifest_root);
                        s.full_size_bytes = Some(full_size_bytes);
                        s.completion_time_ms = Some(at_ms);
                        self.put_snapshot(s.clone());
                        self.remove_copy_job(&id);
                        Ok(CommandOutput::Snapshot(s))
                    }
                    // Completing twice with the same root is a retry, not an error.
                    SnapshotState::Completed if s.manifest_root == Some(manifest_root) => {
                        Ok(CommandOutput::Snapshot(s))
                    }
                    _ => Err(MetaError::IncorrectState(format!(
                        "Snapshot {id} is in state {}.",
                        s.state.as_str()
                    ))),
                }
            }
            Command::FailSnapshot { id, message, at_ms } => {
                let mut s = self.snapshot(&id)?;
                if s.state == SnapshotState::Pending {
                    s.state = SnapshotState::Error;
                    s.state_message = Some(message);
                    s.completion_time_ms = Some(at_ms);
                    self.put_snapshot(s.clone());
                    self.remove_copy_job(&id);
                }
                Ok(CommandOutput::Snapshot(s))
            }
            Command::DeleteSnapshot { id } => {
                self.snapshot(&id)?;
                if let Some(old) = self.snapshots.remove(&id) {
                    self.index_remove(&old);
                }
                self.remove_copy_job(&id);
                self.dirty.insert(RecordKey::Snapshot(id));
                Ok(CommandOutput::Done)
            }
            Command::CreateTags { resources, tags } => {
                self.check_resources(&resources)?;
                for r in &resources {
                    self.edit_tags(r, |t| {
                        for (k, v) in &tags {
                            t.insert(k.clone(), v.clone());
                        }
                    });
                }
                Ok(CommandOutput::Done)
            }
            Command::DeleteTags { resources, tags } => {
                self.check_resources(&resources)?;
                for r in &resources {
                    self.edit_tags(r, |t| {
                        if tags.is_empty() {
                            t.retain(|k, _| k.starts_with("aws:"));
                        }
                        for (k, v) in &tags {
                            match v {
                                Some(v) if t.get(k) != Some(v) => {}
                                _ => {
                                    t.remove(k);
                                }
                            }
                        }
                    });
                }
                Ok(CommandOutput::Done)
            }
        }
    }

    fn volume(&self, id: &VolumeId) -> Result<Volume, MetaError> {
        self.volumes.get(id).cloned().ok_or_else(|| MetaError::VolumeNotFound(id.to_string()))
    }

    fn snapshot(&self, id: &SnapshotId) -> Result<Snapshot, MetaError> {
        self.snapshots.get(id).cloned().ok_or_else(|| MetaError::SnapshotNotFound(id.to_string()))
    }

    fn put_volume(&mut self, v: Volume) {
        self.dirty.insert(RecordKey::Volume(v.id.clone()));
        self.volumes.insert(v.id.clone(), v);
    }

    fn put_snapshot(&mut self, s: Snapshot) {
        self.dirty.insert(RecordKey::Snapshot(s.id.clone()));
        if let Some(old) = self.snapshots.get(&s.id).cloned() {
            self.index_remove(&old);
        }
        self.index_add(&s);
        self.snapshots.insert(s.id.clone(), s);
    }

    fn index_add(&mut self, s: &Snapshot) {
        match s.state {
            SnapshotState::Pending => {
                self.index.pending.entry(s.volume_id.clone()).or_default().insert(s.id.clone());
            }
            SnapshotState::Completed => {
                self.index
                    .completed
                    .entry(s.volume_id.clone())
                    .or_default()
                    .insert((s.start_time_ms, s.id.clone()));
            }
            SnapshotState::Error => {}
        }
    }

    fn index_remove(&mut self, s: &Snapshot) {
        if let Some(set) = self.index.pending.get_mut(&s.volume_id) {
            set.remove(&s.id);
            if set.is_empty() {
                self.index.pending.remove(&s.volume_id);
            }
        }
        if let Some(set) = self.index.completed.get_mut(&s.volume_id) {
            set.remove(&(s.start_time_ms, s.id.clone()));
            if set.is_empty() {
                self.index.completed.remove(&s.volume_id);
            }
        }
    }

    fn pending_snapshots(&self, vol: &VolumeId) -> usize {
        self.index.pending.get(vol).map_or(0, BTreeSet::len)
    }

    /// Completed snapshots of `vol`, newest first (by start time, then id).
    pub(super) fn completed_newest_first(&self, vol: &VolumeId) -> impl Iterator<Item = &Snapshot> {
        self.index
            .completed
            .get(vol)
            .into_iter()
            .flat_map(|set| set.iter().rev())
            .filter_map(|(_, id)| self.snapshots.get(id))
    }

    fn token_key(owner: &str, token: &str) -> String {
        format!("{owner}/{token}")
    }

    /// The resource a token created before, if any; an error when it was used
    /// with other parameters.
    fn token_hit(
        &self,
        owner: &str,
        token: &Option<String>,
        fingerprint: &str,
    ) -> Result<Option<String>, MetaError> {
        let Some(token) = token else { return Ok(None) };
        match self.tokens.get(&Self::token_key(owner, token)) {
            Some(t) if t.fingerprint == fingerprint => Ok(Some(t.resource_id.clone())),
            Some(_) => Err(MetaError::IdempotentParameterMismatch(token.clone())),
            None => Ok(None),
        }
    }

    fn remember_token(
        &mut self,
        owner: &str,
        token: Option<String>,
        fingerprint: String,
        id: String,
    ) {
        if let Some(token) = token {
            let key = Self::token_key(owner, &token);
            self.dirty.insert(RecordKey::Token(key.clone()));
            self.tokens.insert(
                key.clone(),
                TokenRecord {
                    version: RECORD_VERSION,
                    key: key.clone(),
                    resource_id: id,
                    fingerprint,
                },
            );
        }
    }

    fn check_resources(&self, resources: &[String]) -> Result<(), MetaError> {
        for r in resources {
            if let Some(v) = VolumeId::parse(r) {
                self.volume(&v)?;
            } else if let Some(s) = SnapshotId::parse(r) {
                self.snapshot(&s)?;
            } else {
                return Err(MetaError::InvalidId(r.clone()));
            }
        }
        Ok(())
    }

    fn edit_tags(&mut self, resource: &str, f: impl FnOnce(&mut BTreeMap<String, String>)) {
        if let Some(id) = VolumeId::parse(resource) {
            if let Some(mut v) = self.volumes.get(&id).cloned() {
                f(&mut v.tags);
                self.put_volume(v);
            }
        } else if let Some(id) = SnapshotId::parse(resource) {
            if let Some(mut s) = self.snapshots.get(&id).cloned() {
                f(&mut s.tags);
                self.put_snapshot(s);
            }
        }
    }
}
