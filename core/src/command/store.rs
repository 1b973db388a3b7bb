//! The records themselves, in memory: chunk nodes, volumes, snapshots,
//! idempotency tokens and copy jobs, the keys changed since the last
//! persist, and the snapshot index derived from them. This module owns
//! loading and encoding (the whole state for Raft snapshots, one key for
//! persistence), queries, and the few primitives every command family
//! writes through.
//!
//! Invariants it keeps: every change goes with its key into `dirty`, and the
//! indexes (see `index`) always equal a scan of `snapshots` and `volumes`.
//! They are private here: only loading, `put_snapshot`, `put_volume` and
//! `remove_snapshot`/`remove_volume` change them.

use super::index::{SnapshotIndex, VolumeIndex};
use super::messages::{Counts, GcHolders, MetaError, NodeEntry, Query, QueryOutput};
use crate::ids::{SnapshotId, VolumeId};
use crate::records::{
    decode_record, encode_record, AccessKey, Account, ChunkNodeInfo, ClusterSecret, CopyJob,
    DecodeError, GcState, Hold, Holder, NodeState, NodeStateRecord, Record, RecordKey, Snapshot,
    SnapshotSharing, TokenRecord, Volume, VolumeModification,
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
    /// Derived from `snapshots`: per volume (pending, completed by start
    /// time, all), per owner and per tag, so the pending limit, the parent
    /// choice and paged scans cost O(what they return), not a scan of every
    /// snapshot.
    #[serde(skip)]
    pub(super) index: SnapshotIndex,
    /// Derived from `volumes`: per owner and per tag.
    #[serde(skip)]
    pub(super) volume_index: VolumeIndex,
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
                self.volume_index.add(&v);
                self.volumes.insert(v.id.clone(), v);
            }
            Record::Snapshot(s) => {
                self.index.add(&s);
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
            Query::SnapshotScan(scan) => QueryOutput::SnapshotPage(self.scan_snapshots(scan)),
            Query::VolumeScan(scan) => QueryOutput::VolumePage(self.scan_volumes(scan)),
            Query::TieringsOf(ids) => QueryOutput::Tierings(
                ids.iter().filter_map(|id| self.tiering.get(id)).cloned().collect(),
            ),
            Query::SharingsOf(ids) => QueryOutput::Sharings(
                ids.iter().filter_map(|id| self.sharing.get(id)).cloned().collect(),
            ),
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
        if let Some(old) = self.volumes.get(&v.id) {
            self.volume_index.remove(old);
        }
        self.volume_index.add(&v);
        self.volumes.insert(v.id.clone(), v);
    }

    pub(super) fn put_snapshot(&mut self, s: Snapshot) {
        self.dirty.insert(RecordKey::Snapshot(s.id.clone()));
        if let Some(old) = self.snapshots.get(&s.id) {
            self.index.remove(old);
        }
        self.index.add(&s);
        self.snapshots.insert(s.id.clone(), s);
    }

    /// Removes volume `id` and its index entries (the caller marks it dirty).
    pub(super) fn remove_volume(&mut self, id: &VolumeId) {
        if let Some(old) = self.volumes.remove(id) {
            self.volume_index.remove(&old);
        }
    }

    /// Removes snapshot `id` and its index entries (the caller marks it dirty).
    pub(super) fn remove_snapshot(&mut self, id: &SnapshotId) {
        if let Some(old) = self.snapshots.remove(id) {
            self.index.remove(&old);
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
