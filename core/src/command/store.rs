//! The records themselves, in memory: chunk nodes, volumes, snapshots,
//! idempotency tokens and copy jobs, the keys changed since the last
//! persist, and the snapshot index derived from them. This module owns
//! loading and encoding (the whole state for Raft snapshots, one key for
//! persistence), queries, and the few primitives every command family
//! writes through.
//!
//! Invariants it keeps: every change goes with its key into `dirty`, and the
//! index always equals a scan of `snapshots`. The index is private here:
//! only loading, `put_snapshot` and `index_remove` (which whoever removes a
//! snapshot calls with it) change it.

use super::messages::{Counts, GcHolders, MetaError, NodeEntry, Query, QueryOutput};
use crate::ids::{SnapshotId, VolumeId};
use crate::records::{
    decode_record, encode_record, AccessKey, Account, ChunkNodeInfo, ClusterSecret, CopyJob,
    DecodeError, GcState, Hold, Holder, NodeState, NodeStateRecord, Record, RecordKey, Snapshot,
    SnapshotSharing, SnapshotState, TokenRecord, Volume, VolumeModification,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// All records, in memory, plus the keys changed since the last [`Records::take_dirty`].
///
/// The metadata node persists exactly the dirty keys (with `last_applied`, in one
/// batch) after each apply, and loads every record back on start.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Records {
    pub(super) nodes: BTreeMap<String, ChunkNodeInfo>,
    pub(super) volumes: BTreeMap<VolumeId, Volume>,
    pub(super) snapshots: BTreeMap<SnapshotId, Snapshot>,
    pub(super) tokens: BTreeMap<String, TokenRecord>,
    #[serde(default)]
    pub(super) copy_jobs: BTreeMap<SnapshotId, CopyJob>,
    #[serde(default)]
    pub(super) holds: BTreeMap<Holder, Hold>,
    #[serde(default)]
    pub(super) gc: GcState,
    /// Nodes that are not simply up (absent: up).
    #[serde(default)]
    pub(super) node_states: BTreeMap<String, NodeStateRecord>,
    /// Each volume's last modification.
    #[serde(default)]
    pub(super) modifications: BTreeMap<VolumeId, VolumeModification>,
    #[serde(default)]
    pub(super) accounts: BTreeMap<String, Account>,
    #[serde(default)]
    pub(super) access_keys: BTreeMap<String, AccessKey>,
    #[serde(default)]
    pub(super) secrets: BTreeMap<String, ClusterSecret>,
    /// Snapshots shared with anyone (absent: the owner alone).
    #[serde(default)]
    pub(super) sharing: BTreeMap<SnapshotId, SnapshotSharing>,
    /// Snapshots ever archived: their tier and the work under way.
    #[serde(default)]
    pub(super) tiering: BTreeMap<SnapshotId, crate::tiering::SnapshotTiering>,
    #[serde(skip)]
    pub(super) dirty: BTreeSet<RecordKey>,
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
            Record::Hold(h) => {
                self.holds.insert(h.holder.clone(), h);
            }
            Record::Gc(g) => self.gc = g,
            Record::NodeState(n) => {
                self.node_states.insert(n.node_id.clone(), n);
            }
            Record::VolumeModification(m) => {
                self.modifications.insert(m.volume_id.clone(), m);
            }
            Record::Account(a) => {
                self.accounts.insert(a.id.clone(), a);
            }
            Record::AccessKey(k) => {
                self.access_keys.insert(k.id.clone(), k);
            }
            Record::ClusterSecret(s) => {
                self.secrets.insert(s.name.clone(), s);
            }
            Record::Sharing(s) => {
                self.sharing.insert(s.snapshot_id.clone(), s);
            }
            Record::Tiering(t) => {
                self.tiering.insert(t.snapshot_id.clone(), t);
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
            .chain(self.holds.keys().map(|k| RecordKey::Hold(k.clone())))
            .chain(std::iter::once(RecordKey::Gc))
            .chain(self.node_states.keys().map(|k| RecordKey::NodeState(k.clone())))
            .chain(self.modifications.keys().map(|k| RecordKey::VolumeModification(k.clone())))
            .chain(self.accounts.keys().map(|k| RecordKey::Account(k.clone())))
            .chain(self.access_keys.keys().map(|k| RecordKey::AccessKey(k.clone())))
            .chain(self.secrets.keys().map(|k| RecordKey::ClusterSecret(k.clone())))
            .chain(self.sharing.keys().map(|k| RecordKey::Sharing(k.clone())))
            .chain(self.tiering.keys().map(|k| RecordKey::Tiering(k.clone())))
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
            RecordKey::Hold(k) => Record::Hold(self.holds.get(k)?.clone()),
            RecordKey::Gc => Record::Gc(self.gc.clone()),
            RecordKey::NodeState(k) => Record::NodeState(self.node_states.get(k)?.clone()),
            RecordKey::VolumeModification(k) => {
                Record::VolumeModification(self.modifications.get(k)?.clone())
            }
            RecordKey::Account(k) => Record::Account(self.accounts.get(k)?.clone()),
            RecordKey::AccessKey(k) => Record::AccessKey(self.access_keys.get(k)?.clone()),
            RecordKey::ClusterSecret(k) => Record::ClusterSecret(self.secrets.get(k)?.clone()),
            RecordKey::Sharing(k) => Record::Sharing(self.sharing.get(k)?.clone()),
            RecordKey::Tiering(k) => Record::Tiering(self.tiering.get(k)?.clone()),
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
            Query::Counts => {
                let mut c = Counts::default();
                for v in self.volumes.values() {
                    *c.volumes.entry(v.state.as_str().to_string()).or_default() += 1;
                }
                for s in self.snapshots.values() {
                    *c.snapshots.entry(s.state.as_str().to_string()).or_default() += 1;
                }
                QueryOutput::Counts(c)
            }
            Query::VolumeModifications => {
                QueryOutput::VolumeModifications(self.modifications.values().cloned().collect())
            }
            Query::Snapshot(id) => QueryOutput::Snapshot(self.snapshots.get(id).cloned()),
            Query::Snapshots => QueryOutput::Snapshots(self.snapshots.values().cloned().collect()),
            Query::Nodes => QueryOutput::Nodes(self.nodes.values().cloned().collect()),
            Query::CopyJobs => QueryOutput::CopyJobs(self.copy_jobs.values().cloned().collect()),
            Query::GcHolders => QueryOutput::GcHolders(GcHolders {
                generation: self.gc.generation,
                holds: self.holds.values().cloned().collect(),
            }),
            Query::Hold(h) => QueryOutput::Hold(self.holds.get(h).cloned()),
            Query::Accounts => QueryOutput::Accounts(self.accounts.values().cloned().collect()),
            Query::AccessKey(id) => QueryOutput::AccessKey(self.access_keys.get(id).cloned()),
            Query::AccessKeys => {
                QueryOutput::AccessKeys(self.access_keys.values().cloned().collect())
            }
            Query::Sharing(id) => QueryOutput::Sharing(self.sharing.get(id).cloned()),
            Query::Sharings => QueryOutput::Sharings(self.sharing.values().cloned().collect()),
            Query::Tierings => QueryOutput::Tierings(self.tiering.values().cloned().collect()),
            Query::NodeStates => QueryOutput::NodeStates(
                self.nodes
                    .values()
                    .map(|info| {
                        let (state, since_ms) = self.node_state(&info.node_id);
                        NodeEntry { info: info.clone(), state, since_ms }
                    })
                    .collect(),
            ),
        }
    }

    /// Where `node_id` stands, and since when (up since 0 without a record).
    pub(super) fn node_state(&self, node_id: &str) -> (NodeState, u64) {
        self.node_states.get(node_id).map_or((NodeState::Up, 0), |r| (r.state, r.since_ms))
    }

    pub(super) fn volume(&self, id: &VolumeId) -> Result<Volume, MetaError> {
        self.volumes.get(id).cloned().ok_or_else(|| MetaError::VolumeNotFound(id.to_string()))
    }

    pub(super) fn snapshot(&self, id: &SnapshotId) -> Result<Snapshot, MetaError> {
        self.snapshots.get(id).cloned().ok_or_else(|| MetaError::SnapshotNotFound(id.to_string()))
    }

    pub(super) fn put_volume(&mut self, v: Volume) {
        self.dirty.insert(RecordKey::Volume(v.id.clone()));
        self.volumes.insert(v.id.clone(), v);
    }

    pub(super) fn put_snapshot(&mut self, s: Snapshot) {
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

    pub(super) fn index_remove(&mut self, s: &Snapshot) {
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

    pub(super) fn pending_snapshots(&self, vol: &VolumeId) -> usize {
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
}
