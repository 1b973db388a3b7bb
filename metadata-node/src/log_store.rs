//! The Raft log (entries in [`SegmentLog`]), the vote and the log pointers
//! (purged, committed) in RocksDB.
//!
//! Every mutation that openraft relies on for safety (vote, append, truncate,
//! purge) is synced: it is on disk before the call returns, and an append is
//! reported flushed only after that. The purge pointer is synced before the
//! segments it frees are deleted; being a synced write to RocksDB's one
//! write-ahead log, it also makes the state machine's earlier (unsynced)
//! writes durable, which the state machine relies on (see there).
//!
//! A data directory written before the entries moved out of RocksDB still
//! has them in the `logs` column family: they are copied into the segment
//! log (synced) and then deleted, the first time the member opens.

use crate::raft_log::SegmentLog;
use crate::store::{self, blocking, Database, StoreError, CF_LOGS, CF_META};
use crate::typ::{Entry, LogId, LogState, StorageError, StorageIOError, TypeConfig, Vote};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use rocksdb::{IteratorMode, WriteBatch};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

const KEY_VOTE: &[u8] = b"vote";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
const KEY_COMMITTED: &[u8] = b"committed";

/// The log key of an index in the old `logs` column family.
fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// Log storage over the shared database and the segment log. Clones share
/// both, so one serves as the log reader of replication tasks while the core
/// appends.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    log: Arc<SegmentLog>,
}

impl LogStore {
    /// Opens the log kept in `dir` (segments of `segment_bytes`) beside `db`,
    /// moving entries an earlier build kept in `db` into it.
    pub fn open(db: Arc<Database>, dir: &Path, segment_bytes: u64) -> Result<Self, StoreError> {
        let purged: Option<LogId> = store::get(&db, CF_META, KEY_LAST_PURGED)?;
        let log = SegmentLog::open(dir, segment_bytes, purged)?;
        let cf = store::cf(&db, CF_LOGS)?;
        let mut old = Vec::new();
        for item in db.iterator_cf(cf, IteratorMode::Start) {
            let (_, value) = item?;
            let entry: Entry = store::decode(&value)?;
            old.push((entry.log_id, value.into_vec()));
        }
        if !old.is_empty() {
            // A crash may have come in the middle of an earlier copy (whole
            // records up to some entry reached the disk) or between the copy
            // and the delete: only what is above the segment log's last
            // entry is copied, in batches of a size that fits a segment.
            let have = log.last().map(|l| l.index);
            let rest: Vec<_> =
                old.iter().filter(|(id, _)| have.is_none_or(|h| id.index > h)).cloned().collect();
            for batch in rest.chunks(256) {
                log.append(batch)?;
            }
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(cf, index_key(0), index_key(u64::MAX));
            batch.delete_cf(cf, index_key(u64::MAX));
            store::write_synced(&db, batch)?;
            tracing::info!(entries = old.len(), "moved the raft log out of rocksdb");
        }
        Ok(LogStore { db, log: Arc::new(log) })
    }

    /// Puts `value` under `key` in the meta column family, synced.
    async fn put_meta_synced<T: serde::Serialize>(
        &self,
        key: &'static [u8],
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = store::encode(value)?;
        let db = self.db.clone();
        blocking(move || {
            let mut batch = WriteBatch::default();
            batch.put_cf(store::cf(&db, CF_META)?, key, bytes);
            store::write_synced(&db, batch)
        })
        .await
    }
}

/// `[start, end)` of a range of log indexes.
fn bounds<RB: RangeBounds<u64>>(range: &RB) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = bounds(&range);
        self.log.read(start, end).map_err(|e| StorageIOError::read_logs(&e).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState, StorageError> {
        let last_purged_log_id: Option<LogId> = store::get(&self.db, CF_META, KEY_LAST_PURGED)
            .map_err(|e| StorageIOError::read_logs(&e))?;
        let last_log_id = self.log.last();
        Ok(LogState { last_log_id: last_log_id.or(last_purged_log_id), last_purged_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put_meta_synced(KEY_VOTE, vote).await.map_err(|e| StorageIOError::write_vote(&e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        store::get(&self.db, CF_META, KEY_VOTE).map_err(|e| StorageIOError::read_vote(&e).into())
    }

    /// The committed pointer only saves re-applying logs at start-up, so it is
    /// written without waiting for a sync: losing it in a crash is harmless.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let write = || -> Result<(), StoreError> {
            let bytes = store::encode(&committed)?;
            self.db.put_cf(store::cf(&self.db, CF_META)?, KEY_COMMITTED, bytes)?;
            Ok(())
        };
        write().map_err(|e| StorageIOError::write(&e))?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let stored: Option<Option<LogId>> =
            store::get(&self.db, CF_META, KEY_COMMITTED).map_err(|e| StorageIOError::read(&e))?;
        Ok(stored.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        for entry in entries {
            let bytes = store::encode(&entry).map_err(|e| StorageIOError::write_logs(&e))?;
            encoded.push((entry.log_id, bytes));
        }
        let log = self.log.clone();
        let res = blocking(move || log.append(&encoded)).await;
        match res {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(&e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "truncating log from this index on");
        let log = self.log.clone();
        blocking(move || log.truncate(log_id.index))
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "purging log up to this index");
        let pointer = store::encode(&log_id).map_err(|e| StorageIOError::write_logs(&e))?;
        let (db, log) = (self.db.clone(), self.log.clone());
        blocking(move || {
            // The pointer first: a crash before the segments go leaves
            // entries that recovery skips, never a hole it cannot explain.
            let mut batch = WriteBatch::default();
            batch.put_cf(store::cf(&db, CF_META)?, KEY_LAST_PURGED, pointer);
            store::write_synced(&db, batch)?;
            log.purge(log_id.index)
        })
        .await
        .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::open_db;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    #[tokio::test]
    async fn entries_an_earlier_build_kept_in_rocksdb_move_to_the_segment_log() {
        let dir = tempfile::TempDir::new().expect("tmp");
        let log_dir = dir.path().join("raft-log");
        {
            let (db, _closed) = open_db(dir.path()).expect("open");
            let cf = store::cf(&db, CF_LOGS).expect("cf");
            let mut batch = WriteBatch::default();
            for i in 1..=3 {
                batch.put_cf(cf, index_key(i), store::encode(&entry(i)).expect("encode"));
            }
            store::write_synced(&db, batch).expect("write");
        }
        {
            // An earlier copy was cut short after entry 1.
            let log = SegmentLog::open(&log_dir, 1 << 20, None).expect("log");
            let first = entry(1);
            log.append(&[(first.log_id, store::encode(&first).expect("encode"))]).expect("append");
        }
        for _ in 0..2 {
            let (db, _closed) = open_db(dir.path()).expect("open");
            let mut log = LogStore::open(db.clone(), &log_dir, 1 << 20).expect("log");
            let got = log.try_get_log_entries(0..10).await.expect("read");
            assert_eq!(got, vec![entry(1), entry(2), entry(3)]);
            let cf = store::cf(&db, CF_LOGS).expect("cf");
            assert!(db.iterator_cf(cf, IteratorMode::Start).next().is_none(), "old entries left");
        }
    }
}
