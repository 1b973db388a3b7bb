//! The Raft log, the vote and the log pointers (purged, committed) in RocksDB.
//!
//! Every mutation that openraft relies on for safety (vote, append, truncate,
//! purge) is a synced write batch: it is on disk before the call returns, and
//! an append is reported flushed only after that.

use crate::store::{self, blocking, Database, StoreError, CF_LOGS, CF_META};
use crate::typ::{Entry, LogId, LogState, StorageError, StorageIOError, TypeConfig, Vote};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use rocksdb::{Direction, IteratorMode, WriteBatch};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

const KEY_VOTE: &[u8] = b"vote";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
const KEY_COMMITTED: &[u8] = b"committed";

/// The log key of an index: big-endian, so RocksDB's byte order is index order.
fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn key_index(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("log key of {} bytes", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

/// Log storage over the shared database. Clones share the database, so one
/// serves as the log reader of replication tasks while the core appends.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    pub fn new(db: Arc<Database>) -> Self {
        LogStore { db }
    }

    /// Entries with index in `[start, end)`, in order; absent ones are skipped.
    fn read_range(&self, start: u64, end: u64) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::new();
        if start >= end {
            return Ok(out);
        }
        let from = index_key(start);
        let iter = self.db.iterator_cf(
            store::cf(&self.db, CF_LOGS)?,
            IteratorMode::From(&from, Direction::Forward),
        );
        for item in iter {
            let (key, value) = item?;
            let index = key_index(&key)?;
            if index >= end {
                break;
            }
            let entry: Entry = store::decode(&value)?;
            if entry.log_id.index != index {
                return Err(StoreError::Corrupt(format!(
                    "log key {index} holds entry {}",
                    entry.log_id
                )));
            }
            out.push(entry);
        }
        Ok(out)
    }

    fn last_log_id(&self) -> Result<Option<LogId>, StoreError> {
        let mut iter = self.db.iterator_cf(store::cf(&self.db, CF_LOGS)?, IteratorMode::End);
        match iter.next() {
            Some(item) => {
                let (_, value) = item?;
                let entry: Entry = store::decode(&value)?;
                Ok(Some(entry.log_id))
            }
            None => Ok(None),
        }
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
        self.read_range(start, end).map_err(|e| StorageIOError::read_logs(&e).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState, StorageError> {
        let last_purged_log_id: Option<LogId> = store::get(&self.db, CF_META, KEY_LAST_PURGED)
            .map_err(|e| StorageIOError::read_logs(&e))?;
        let last_log_id = self.last_log_id().map_err(|e| StorageIOError::read_logs(&e))?;
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
            encoded.push((index_key(entry.log_id.index), bytes));
        }
        let db = self.db.clone();
        let res = blocking(move || {
            let cf = store::cf(&db, CF_LOGS)?;
            let mut batch = WriteBatch::default();
            for (key, bytes) in encoded {
                batch.put_cf(cf, key, bytes);
            }
            store::write_synced(&db, batch)
        })
        .await;
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
        let db = self.db.clone();
        blocking(move || {
            let cf = store::cf(&db, CF_LOGS)?;
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(cf, index_key(log_id.index), index_key(u64::MAX));
            batch.delete_cf(cf, index_key(u64::MAX));
            store::write_synced(&db, batch)
        })
        .await
        .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "purging log up to this index");
        let pointer = store::encode(&log_id).map_err(|e| StorageIOError::write_logs(&e))?;
        let db = self.db.clone();
        blocking(move || {
            let mut batch = WriteBatch::default();
            // Pointer and deletion in one atomic batch: the log never has a
            // hole that the pointer does not account for.
            batch.put_cf(store::cf(&db, CF_META)?, KEY_LAST_PURGED, pointer);
            let logs = store::cf(&db, CF_LOGS)?;
            match log_id.index.checked_add(1) {
                Some(end) => batch.delete_range_cf(logs, index_key(0), index_key(end)),
                None => {
                    batch.delete_range_cf(logs, index_key(0), index_key(u64::MAX));
                    batch.delete_cf(logs, index_key(u64::MAX));
                }
            }
            store::write_synced(&db, batch)
        })
        .await
        .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }
}
