//! The one RocksDB database of a member, shared by the Raft log and the state
//! machine, and the versioned encoding of everything stored in it.
//!
//! Column families:
//! - `meta`: the vote, the last purged log id and the committed log id;
//! - `logs`: Raft log entries under their big-endian index, so keys sort by index;
//! - `sm_meta`: last applied log id, last membership and the current snapshot;
//! - `sm`: the records (`RecordKey::encode` -> `encode_record`), each with its
//!   own record version;
//! - `sm_requests`: recent request ids and their results, under the log index
//!   that applied them (see `requests`), part of the state machine.
//!
//! Every value this crate writes starts with [`FORMAT_VERSION`]; a value that
//! is short, of another version or undecodable is an error, never a default.

use bincode::Options as _;
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::oneshot;

pub(crate) const CF_META: &str = "meta";
pub(crate) const CF_LOGS: &str = "logs";
pub(crate) const CF_SM_META: &str = "sm_meta";
pub(crate) const CF_SM: &str = "sm";
pub(crate) const CF_REQUESTS: &str = "sm_requests";
const ALL_CFS: [&str; 5] = [CF_META, CF_LOGS, CF_SM_META, CF_SM, CF_REQUESTS];

/// Format version of every value this crate stores (records carry their own).
/// Version 2: log entries carry a `WriteRequest` (request id + command) and
/// snapshots the request table; a directory written by version 1 is refused.
pub const FORMAT_VERSION: u16 = 2;

/// Why a storage operation failed. Callers wrap it in openraft's
/// `StorageIOError` with the subject and verb of the failed operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
    #[error("stored value has format version {found}, this build reads {expected}")]
    Version { found: u16, expected: u16 },
    #[error("cannot encode value: {0}")]
    Encode(String),
    #[error("record: {0}")]
    Record(#[from] cairn_core::records::DecodeError),
    #[error("column family {0} is missing")]
    MissingColumnFamily(&'static str),
    #[error("raft log file: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage task failed: {0}")]
    Task(String),
}

/// The open database. The log store, the state machine, snapshot builds and
/// the replication readers share it through an `Arc`; it closes (and releases
/// the directory lock) when the last one lets go, which [`Closed`] reports.
pub struct Database {
    // Field order matters: `db` is closed before `_closed` signals it.
    db: DB,
    _closed: oneshot::Sender<()>,
}

impl Deref for Database {
    type Target = DB;

    fn deref(&self) -> &DB {
        &self.db
    }
}

/// Resolves once the [`Database`] it came with is closed.
pub struct Closed(oneshot::Receiver<()>);

impl Closed {
    /// Waits until the database is closed (its directory can be opened again).
    pub async fn wait(self) {
        // The sender is never used: the channel closing is the signal.
        let _ = self.0.await;
    }
}

/// Opens (creating if needed) the member's database with all column families.
pub fn open_db(dir: &Path) -> Result<(Arc<Database>, Closed), StoreError> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let cfs = ALL_CFS.iter().map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
    let db = DB::open_cf_descriptors(&opts, dir, cfs)?;
    let (tx, rx) = oneshot::channel();
    Ok((Arc::new(Database { db, _closed: tx }), Closed(rx)))
}

/// The handle of a column family created by [`open_db`].
pub(crate) fn cf<'a>(db: &'a DB, name: &'static str) -> Result<&'a ColumnFamily, StoreError> {
    db.cf_handle(name).ok_or(StoreError::MissingColumnFamily(name))
}

/// Writes `batch` and syncs the WAL before returning: the batch is durable.
pub(crate) fn write_synced(db: &DB, batch: WriteBatch) -> Result<(), StoreError> {
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    db.write_opt(batch, &opts)?;
    Ok(())
}

/// Runs blocking RocksDB work (fsyncs, whole-column scans) off the async threads.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Task(e.to_string()))?
}

/// bincode with fixed-width integers (the format of `bincode::serialize`) that
/// refuses trailing bytes, so a value read as the wrong type is an error.
fn codec() -> impl bincode::Options {
    bincode::DefaultOptions::new().with_fixint_encoding().reject_trailing_bytes()
}

/// The version marker, then the bincode body.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = FORMAT_VERSION.to_be_bytes().to_vec();
    codec().serialize_into(&mut out, value).map_err(|e| StoreError::Encode(e.to_string()))?;
    Ok(out)
}

/// Inverse of [`encode`]; refuses other versions, undecodable bodies and
/// trailing bytes.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    let Some((marker, body)) = bytes.split_first_chunk::<2>() else {
        return Err(StoreError::Corrupt("shorter than its version marker".into()));
    };
    let found = u16::from_be_bytes(*marker);
    if found != FORMAT_VERSION {
        return Err(StoreError::Version { found, expected: FORMAT_VERSION });
    }
    codec().deserialize(body).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Reads and decodes one value; `None` only when the key is absent.
pub(crate) fn get<T: DeserializeOwned>(
    db: &DB,
    cf_name: &'static str,
    key: &[u8],
) -> Result<Option<T>, StoreError> {
    match db.get_cf(cf(db, cf_name)?, key)? {
        Some(bytes) => decode(&bytes).map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_bad_ones_are_errors() {
        let bytes = encode(&(7u64, "seven".to_string())).expect("encode");
        let back: (u64, String) = decode(&bytes).expect("decode");
        assert_eq!(back, (7, "seven".to_string()));

        let mut other_version = bytes.clone();
        other_version[1] = 9;
        assert!(matches!(
            decode::<(u64, String)>(&other_version),
            Err(StoreError::Version { found: 9, .. })
        ));
        assert!(matches!(decode::<u64>(&[0]), Err(StoreError::Corrupt(_))));
        assert!(matches!(decode::<(u64, String)>(&bytes[..6]), Err(StoreError::Corrupt(_))));
        // A value read as another type that happens to be a prefix of it.
        let some = encode(&Some(5u64)).expect("encode");
        assert!(matches!(decode::<u64>(&some), Err(StoreError::Corrupt(_))));
    }
}
