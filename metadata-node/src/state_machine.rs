//! The state machine: every record in memory (for queries) and in RocksDB (the
//! durable copy), the table of recent request ids (see [`crate::requests`]),
//! plus the Raft snapshot of both.
//!
//! Durability: after each batch of applied entries, the changed records, the
//! changed request-table entries, `last_applied` and `last_membership` go to
//! RocksDB in one write batch, so the stored records always match the stored
//! `last_applied`. That batch is not synced: the entries it applies are
//! already durable in the Raft log (synced before they counted for the
//! commit), and RocksDB's one write-ahead log is written in order, so any
//! later synced RocksDB write (a snapshot, a purge pointer, a vote) makes it
//! durable too. A crash can only take the state machine back to an earlier
//! `last_applied`, whose following entries are still in the log (the log is
//! purged only up to a snapshot, and only after the purge pointer's synced
//! write, which came after them), and
//! openraft applies them again at start-up; the request table makes a
//! re-applied request answer as it did. This saves one of the three
//! sequential fsyncs a lone write used to wait for (leader append, follower
//! append, apply). A snapshot is
//! built from a RocksDB point-in-time view of exactly those keys, so building
//! never holds a lock that apply needs. Installing a snapshot replaces the
//! records column, the pointers and the current snapshot in one synced batch,
//! then swaps the in-memory records.

use crate::requests::{Change, RecentRequests};
use crate::store::{self, blocking, Database, StoreError, CF_REQUESTS, CF_SM, CF_SM_META};
use crate::typ::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
    TypeConfig,
};
use cairn_core::command::{CommandResult, Records};
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use rocksdb::{IteratorMode, WriteBatch, DB};
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

const KEY_LAST_APPLIED: &[u8] = b"last_applied";
const KEY_LAST_MEMBERSHIP: &[u8] = b"last_membership";
const KEY_SNAPSHOT: &[u8] = b"snapshot";

/// The records as the state machine last applied them; the client service
/// reads them under the lock for queries.
pub type SharedRecords = Arc<RwLock<Records>>;

/// The current snapshot as persisted: its meta and its (versioned) data.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// The body of a snapshot: every record as `(key, encoded record)` and every
/// remembered request as `(key, encoded request)`, both as persisted.
#[derive(Default, Serialize, Deserialize)]
struct SnapshotBody {
    records: Vec<(Vec<u8>, Vec<u8>)>,
    requests: Vec<(Vec<u8>, Vec<u8>)>,
}

pub struct StateMachine {
    db: Arc<Database>,
    records: SharedRecords,
    requests: RecentRequests,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    /// Serialises writes of the current snapshot (builder and install), so an
    /// older build never replaces a newer snapshot.
    snapshot_lock: Arc<Mutex<()>>,
}

impl StateMachine {
    /// Loads the records and pointers persisted in `db` (empty when fresh).
    pub fn open(db: Arc<Database>) -> Result<Self, StoreError> {
        let last_applied: Option<LogId> =
            store::get::<Option<LogId>>(&db, CF_SM_META, KEY_LAST_APPLIED)?.flatten();
        let last_membership: StoredMembership =
            store::get(&db, CF_SM_META, KEY_LAST_MEMBERSHIP)?.unwrap_or_default();
        let mut values = Vec::new();
        for item in db.iterator_cf(store::cf(&db, CF_SM)?, IteratorMode::Start) {
            let (_, value) = item?;
            values.push(value);
        }
        let records = Records::load(values.iter().map(|v| &v[..]))?;
        let mut pairs = Vec::new();
        for item in db.iterator_cf(store::cf(&db, CF_REQUESTS)?, IteratorMode::Start) {
            pairs.push(item?);
        }
        let requests = RecentRequests::load(pairs)?;
        tracing::info!(
            last_applied = ?last_applied,
            records = values.len(),
            requests = requests.len(),
            "state machine loaded"
        );
        Ok(StateMachine {
            db,
            records: Arc::new(RwLock::new(records)),
            requests,
            last_applied,
            last_membership,
            snapshot_lock: Arc::new(Mutex::new(())),
        })
    }

    /// The records, shared with the client service.
    pub fn records(&self) -> SharedRecords {
        self.records.clone()
    }
}

/// What a batch changed, to persist: records and request-table entries, as
/// `(key, encoded value)`; `None` = deleted.
#[derive(Default)]
struct Changed {
    records: Vec<Change>,
    requests: Vec<Change>,
}

/// Applies a batch in memory; returns one result per entry and the changes
/// to persist. A request whose id was applied before gets its first result
/// again and changes nothing.
fn apply_in_memory(
    records: &RwLock<Records>,
    requests: &mut RecentRequests,
    entries: impl IntoIterator<Item = Entry>,
    last_applied: &mut Option<LogId>,
    last_membership: &mut StoredMembership,
) -> Result<(Vec<Vec<CommandResult>>, Changed), StoreError> {
    let mut recs = records.write().unwrap_or_else(PoisonError::into_inner);
    let mut replies = Vec::new();
    let mut changed = Changed::default();
    for entry in entries {
        *last_applied = Some(entry.log_id);
        match entry.payload {
            EntryPayload::Normal(batch) => {
                let mut results = Vec::with_capacity(batch.0.len());
                for (pos, req) in (0u32..).zip(batch.0) {
                    if let Some(first) = requests.get(&req.request_id) {
                        tracing::debug!(request = ?req.request_id, "retried request answered from the table");
                        results.push(first.clone());
                        continue;
                    }
                    let result = recs.apply(req.command);
                    requests.insert(
                        (entry.log_id.index, pos),
                        req.request_id,
                        result.clone(),
                        &mut changed.requests,
                    )?;
                    results.push(result);
                }
                replies.push(results);
            }
            EntryPayload::Membership(m) => {
                *last_membership = StoredMembership::new(Some(entry.log_id), m);
                replies.push(Vec::new());
            }
            EntryPayload::Blank => replies.push(Vec::new()),
        }
    }
    changed.records =
        recs.take_dirty().into_iter().map(|k| (k.encode(), recs.encode_key(&k))).collect();
    Ok((replies, changed))
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<CommandResult>>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let (replies, changed) = apply_in_memory(
            &self.records,
            &mut self.requests,
            entries,
            &mut self.last_applied,
            &mut self.last_membership,
        )
        .map_err(|e| StorageIOError::write_state_machine(&e))?;
        if replies.is_empty() {
            return Ok(replies);
        }
        let encode = || -> Result<(Vec<u8>, Vec<u8>), StoreError> {
            Ok((store::encode(&self.last_applied)?, store::encode(&self.last_membership)?))
        };
        let (applied, membership) =
            encode().map_err(|e| StorageIOError::write_state_machine(&e))?;
        // Not synced, so quick: written here rather than on a blocking
        // thread, which would cost a thread hand-off per applied batch.
        let db = &self.db;
        let write = || -> Result<(), StoreError> {
            let sm = store::cf(db, CF_SM)?;
            let sm_meta = store::cf(db, CF_SM_META)?;
            let req_cf = store::cf(db, CF_REQUESTS)?;
            let mut batch = WriteBatch::default();
            // In order: a request put and evicted in the same batch ends deleted.
            for (cf, list) in [(sm, changed.records), (req_cf, changed.requests)] {
                for (key, value) in list {
                    match value {
                        Some(v) => batch.put_cf(cf, key, v),
                        None => batch.delete_cf(cf, key),
                    }
                }
            }
            batch.put_cf(sm_meta, KEY_LAST_APPLIED, applied);
            batch.put_cf(sm_meta, KEY_LAST_MEMBERSHIP, membership);
            // Durable through the log; see the module comment.
            db.write(batch)?;
            Ok(())
        };
        write().map_err(|e| StorageIOError::write_state_machine(&e))?;
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder { db: self.db.clone(), snapshot_lock: self.snapshot_lock.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let sig = Some(meta.signature());
        let data = snapshot.into_inner();
        let decode = || -> Result<(Records, RecentRequests, Vec<u8>), StoreError> {
            let body: SnapshotBody = store::decode(&data)?;
            let records = Records::load(body.records.iter().map(|(_, v)| &v[..]))?;
            let requests = RecentRequests::load(body.requests)?;
            let stored = store::encode(&StoredSnapshot { meta: meta.clone(), data: data.clone() })?;
            Ok((records, requests, stored))
        };
        let (records, requests, stored) =
            decode().map_err(|e| StorageIOError::read_snapshot(sig.clone(), &e))?;
        // Written as this build encodes them, not as received.
        let pairs = records.encode_all();
        let request_pairs =
            requests.encode_all().map_err(|e| StorageIOError::write_snapshot(sig.clone(), &e))?;
        let pointers = || -> Result<(Vec<u8>, Vec<u8>), StoreError> {
            Ok((store::encode(&meta.last_log_id)?, store::encode(&meta.last_membership)?))
        };
        let (applied, membership) =
            pointers().map_err(|e| StorageIOError::write_snapshot(sig.clone(), &e))?;
        let db = self.db.clone();
        let lock = self.snapshot_lock.clone();
        blocking(move || {
            let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
            let sm = store::cf(&db, CF_SM)?;
            let sm_meta = store::cf(&db, CF_SM_META)?;
            let req_cf = store::cf(&db, CF_REQUESTS)?;
            let mut batch = WriteBatch::default();
            for (cf, new) in [(sm, pairs), (req_cf, request_pairs)] {
                for item in db.iterator_cf(cf, IteratorMode::Start) {
                    let (key, _) = item?;
                    batch.delete_cf(cf, key);
                }
                for (key, value) in new {
                    batch.put_cf(cf, key, value);
                }
            }
            batch.put_cf(sm_meta, KEY_LAST_APPLIED, applied);
            batch.put_cf(sm_meta, KEY_LAST_MEMBERSHIP, membership);
            batch.put_cf(sm_meta, KEY_SNAPSHOT, stored);
            store::write_synced(&db, batch)
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(sig, &e))?;

        *self.records.write().unwrap_or_else(PoisonError::into_inner) = records;
        self.requests = requests;
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
        tracing::info!(snapshot = %meta, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let stored: Option<StoredSnapshot> = store::get(&self.db, CF_SM_META, KEY_SNAPSHOT)
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(stored.map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}

/// Builds a snapshot from a point-in-time view of the database, off the apply path.
pub struct SnapshotBuilder {
    db: Arc<Database>,
    snapshot_lock: Arc<Mutex<()>>,
}

impl SnapshotBuilder {
    fn build(db: &DB, lock: &Mutex<()>) -> Result<(SnapshotMeta, Vec<u8>), StoreError> {
        let view = db.snapshot();
        let read = |key: &[u8]| -> Result<Option<Vec<u8>>, StoreError> {
            Ok(view.get_cf(store::cf(db, CF_SM_META)?, key)?)
        };
        let last_log_id: Option<LogId> = match read(KEY_LAST_APPLIED)? {
            Some(bytes) => store::decode(&bytes)?,
            None => None,
        };
        let last_membership: StoredMembership = match read(KEY_LAST_MEMBERSHIP)? {
            Some(bytes) => store::decode(&bytes)?,
            None => StoredMembership::default(),
        };
        let mut body = SnapshotBody::default();
        for item in view.iterator_cf(store::cf(db, CF_SM)?, IteratorMode::Start) {
            let (key, value) = item?;
            body.records.push((key.into_vec(), value.into_vec()));
        }
        for item in view.iterator_cf(store::cf(db, CF_REQUESTS)?, IteratorMode::Start) {
            let (key, value) = item?;
            body.requests.push((key.into_vec(), value.into_vec()));
        }
        drop(view);
        let data = store::encode(&body)?;
        let snapshot_id = match &last_log_id {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, unique_suffix()),
            None => format!("empty-{}", unique_suffix()),
        };
        let meta = SnapshotMeta { last_log_id, last_membership, snapshot_id };

        // Keep it as the current snapshot unless a newer one was installed meanwhile.
        let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let current: Option<StoredSnapshot> = store::get(db, CF_SM_META, KEY_SNAPSHOT)?;
        if current.is_none_or(|c| c.meta.last_log_id <= meta.last_log_id) {
            let stored = store::encode(&StoredSnapshot { meta: meta.clone(), data: data.clone() })?;
            let mut batch = WriteBatch::default();
            batch.put_cf(store::cf(db, CF_SM_META)?, KEY_SNAPSHOT, stored);
            store::write_synced(db, batch)?;
        }
        Ok((meta, data))
    }
}

/// Distinguishes snapshots built at the same log id (e.g. on two members).
fn unique_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let db = self.db.clone();
        let lock = self.snapshot_lock.clone();
        let (meta, data) = blocking(move || SnapshotBuilder::build(&db, &lock))
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        tracing::info!(snapshot = %meta, bytes = data.len(), "built snapshot");
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}
