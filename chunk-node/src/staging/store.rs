//! Staging of snapshots written through the EBS direct APIs: one append-only,
//! fsynced log per pending snapshot, under `data_dir/staging/<snapshot>.log`,
//! and the `SnapshotStaging` gRPC service over it.
//!
//! Why a log here and not in Raft: block maps never go through the metadata
//! group (DESIGN.md), and the gateway is stateless. The gateway appends each
//! accepted block (index -> chunk id, or zero) to the logs of the RF nodes
//! placement picks for the snapshot id before it answers PutSnapshotBlock,
//! and reads them back when it seals the snapshot.
//!
//! On disk: an 10-byte header (`CAIRNSTG`, format version u16 BE), then
//! fixed-size records of [`RECORD_LEN`] bytes: kind u8, block index u64,
//! chunk id [32], sha-256 [32], at_ms u64, value u64 (all BE), and the first
//! 4 bytes of the BLAKE3 of the preceding 89 bytes. A torn last record (a
//! crash mid-append, never acknowledged) is cut off when the log is opened; a
//! bad record anywhere else is corruption and an error, never skipped.
//!
//! Appends are group-committed: writers append under the state lock, then
//! one `fdatasync` covers every record written before it started, so many
//! concurrent PutSnapshotBlock calls share fsyncs instead of queueing on them.

use crate::error::check_name;
use cairn_core::ChunkId;
use cairn_proto::pb::snapshot_staging_server::{SnapshotStaging, SnapshotStagingServer};
use cairn_proto::pb::{self, StagingKind};
use cairn_proto::MAX_MESSAGE_BYTES;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

const MAGIC: &[u8; 8] = b"CAIRNSTG";
/// Format version of the staging log.
pub const STAGING_VERSION: u16 = 1;
const HEADER_LEN: u64 = 10;
const BODY_LEN: usize = 1 + 8 + 32 + 32 + 8 + 8;
/// Bytes of one record on disk.
pub const RECORD_LEN: usize = BODY_LEN + 4;
/// Entries per `Entries` reply message (~100 bytes each on the wire).
const ENTRIES_PER_REPLY: usize = 8192;
/// Most entries one `Append` may carry.
const MAX_APPEND: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("staging log {0} is corrupt: {1}")]
    Corrupt(PathBuf, String),
    #[error("invalid staging request: {0}")]
    Invalid(String),
    #[error("snapshot {0} was already completed; no more blocks are accepted")]
    Completed(String),
    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl From<StagingError> for Status {
    fn from(e: StagingError) -> Self {
        let code = match &e {
            StagingError::Invalid(_) => tonic::Code::InvalidArgument,
            StagingError::Completed(_) => tonic::Code::FailedPrecondition,
            StagingError::Corrupt(..) => tonic::Code::DataLoss,
            StagingError::Io { .. } | StagingError::Task(_) => tonic::Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}

fn io(op: &'static str, path: &Path, source: std::io::Error) -> StagingError {
    StagingError::Io { op, path: path.to_path_buf(), source }
}

/// One log entry, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: StagingKind,
    pub block_index: u64,
    pub chunk: [u8; 32],
    pub sha256: [u8; 32],
    pub at_ms: u64,
    pub value: u64,
}

impl Entry {
    fn from_pb(e: &pb::StagingEntry) -> Result<Entry, StagingError> {
        let kind = StagingKind::try_from(e.kind)
            .ok()
            .filter(|k| *k != StagingKind::Unspecified)
            .ok_or_else(|| StagingError::Invalid(format!("unknown entry kind {}", e.kind)))?;
        let fixed = |b: &[u8], what: &str| -> Result<[u8; 32], StagingError> {
            if b.is_empty() {
                return Ok([0; 32]);
            }
            b.try_into().map_err(|_| {
                StagingError::Invalid(format!("{what} must be 32 bytes, got {}", b.len()))
            })
        };
        let chunk = fixed(&e.chunk_id, "chunk_id")?;
        if kind == StagingKind::Block && e.chunk_id.is_empty() {
            return Err(StagingError::Invalid("a BLOCK entry needs its chunk id".into()));
        }
        Ok(Entry {
            kind,
            block_index: e.block_index,
            chunk,
            sha256: fixed(&e.sha256, "sha256")?,
            at_ms: e.at_ms,
            value: e.value,
        })
    }

    fn to_pb(self) -> pb::StagingEntry {
        pb::StagingEntry {
            kind: self.kind as i32,
            block_index: self.block_index,
            chunk_id: if self.kind == StagingKind::Block {
                self.chunk.to_vec()
            } else {
                Vec::new()
            },
            sha256: self.sha256.to_vec(),
            at_ms: self.at_ms,
            value: self.value,
        }
    }

    /// The on-disk record.
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut b = [0u8; RECORD_LEN];
        b[0] = self.kind as i32 as u8;
        b[1..9].copy_from_slice(&self.block_index.to_be_bytes());
        b[9..41].copy_from_slice(&self.chunk);
        b[41..73].copy_from_slice(&self.sha256);
        b[73..81].copy_from_slice(&self.at_ms.to_be_bytes());
        b[81..89].copy_from_slice(&self.value.to_be_bytes());
        let check = ChunkId::of(&b[..BODY_LEN]);
        b[BODY_LEN..].copy_from_slice(&check.0[..4]);
        b
    }

    /// Decodes a record; `None` when its check bytes or kind are wrong.
    pub fn decode(b: &[u8]) -> Option<Entry> {
        if b.len() != RECORD_LEN || ChunkId::of(&b[..BODY_LEN]).0[..4] != b[BODY_LEN..] {
            return None;
        }
        let u64_at = |i: usize| b[i..i + 8].try_into().ok().map(u64::from_be_bytes);
        let kind = StagingKind::try_from(i32::from(b[0])).ok()?;
        Some(Entry {
            kind,
            block_index: u64_at(1)?,
            chunk: b[9..41].try_into().ok()?,
            sha256: b[41..73].try_into().ok()?,
            at_ms: u64_at(73)?,
            value: u64_at(81)?,
        })
    }
}

/// What a log says without reading it again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Summary {
    timeout_minutes: u64,
    opened_ms: u64,
    last_activity_ms: u64,
    completed: bool,
    changed_blocks_count: u64,
    entries: u64,
}

impl Summary {
    fn add(&mut self, e: &Entry) {
        match e.kind {
            StagingKind::Open => {
                self.timeout_minutes = e.value;
                if self.opened_ms == 0 {
                    self.opened_ms = e.at_ms;
                }
            }
            StagingKind::Complete => {
                self.completed = true;
                self.changed_blocks_count = e.value;
            }
            _ => {}
        }
        self.last_activity_ms = self.last_activity_ms.max(e.at_ms);
        self.entries += 1;
    }
}

struct LogState {
    file: File,
    /// Valid bytes in the file (header included).
    len: u64,
    summary: Summary,
    /// Set after a failed write that could not be undone: the log refuses
    /// further appends rather than risk a gap.
    broken: bool,
}

/// One snapshot's log.
struct Log {
    path: PathBuf,
    state: Mutex<LogState>,
    /// A second handle, so fsync runs without holding the state lock.
    sync_file: File,
    /// Bytes known durable. Locked while an fsync runs (the group commit).
    synced: Mutex<u64>,
}

impl Log {
    /// Opens (or creates) the log at `path`, cutting off a torn last record.
    fn open(path: PathBuf) -> Result<Log, StagingError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io("open", &path, e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| io("read", &path, e))?;
        let mut summary = Summary::default();
        let len = if bytes.len() < HEADER_LEN as usize {
            // New, or torn before its header was whole: start it again.
            let mut header = MAGIC.to_vec();
            header.extend(STAGING_VERSION.to_be_bytes());
            file.set_len(0).map_err(|e| io("truncate", &path, e))?;
            file.seek(SeekFrom::Start(0)).map_err(|e| io("seek", &path, e))?;
            file.write_all(&header).map_err(|e| io("write", &path, e))?;
            file.sync_all().map_err(|e| io("fsync", &path, e))?;
            if let Some(dir) = path.parent() {
                fsync_dir(dir)?;
            }
            HEADER_LEN
        } else {
            check_header(&path, &bytes)?;
            let body = &bytes[HEADER_LEN as usize..];
            let whole = body.len() / RECORD_LEN;
            for (i, rec) in body.chunks_exact(RECORD_LEN).enumerate() {
                match Entry::decode(rec) {
                    Some(e) => summary.add(&e),
                    // A bad last record is a torn append nobody was told about.
                    None if i + 1 == whole => {
                        summary.entries = i as u64;
                        break;
                    }
                    None => {
                        return Err(StagingError::Corrupt(path, format!("record {i} is damaged")))
                    }
                }
            }
            let len = HEADER_LEN + summary.entries * RECORD_LEN as u64;
            if len != bytes.len() as u64 {
                tracing::warn!(path = %path.display(), kept = len, found = bytes.len(), "cutting a torn record off a staging log");
                file.set_len(len).map_err(|e| io("truncate", &path, e))?;
                file.sync_all().map_err(|e| io("fsync", &path, e))?;
            }
            len
        };
        file.seek(SeekFrom::Start(len)).map_err(|e| io("seek", &path, e))?;
        let sync_file = file.try_clone().map_err(|e| io("reopen", &path, e))?;
        Ok(Log {
            path,
            state: Mutex::new(LogState { file, len, summary, broken: false }),
            sync_file,
            synced: Mutex::new(len),
        })
    }

    /// Appends `entries` and returns once they are durable.
    fn append(&self, snapshot: &str, entries: &[Entry]) -> Result<(), StagingError> {
        let mut buf = Vec::with_capacity(entries.len() * RECORD_LEN);
        for e in entries {
            buf.extend_from_slice(&e.encode());
        }
        let end = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if st.broken {
                return Err(StagingError::Corrupt(
                    self.path.clone(),
                    "an earlier append failed".into(),
                ));
            }
            let writes_blocks =
                entries.iter().any(|e| matches!(e.kind, StagingKind::Block | StagingKind::Zero));
            if st.summary.completed && writes_blocks {
                return Err(StagingError::Completed(snapshot.to_string()));
            }
            if let Err(e) = st.file.write_all(&buf) {
                // Undo the partial write so the log never has a gap.
                let len = st.len;
                let undone = st.file.set_len(len).and_then(|_| st.file.seek(SeekFrom::Start(len)));
                if undone.is_err() {
                    st.broken = true;
                }
                return Err(io("append to", &self.path, e));
            }
            st.len += buf.len() as u64;
            for e in entries {
                st.summary.add(e);
            }
            st.len
        };
        // Group commit: one fdatasync makes every record written before it durable.
        let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        if *synced >= end {
            return Ok(());
        }
        let target = self.state.lock().unwrap_or_else(|e| e.into_inner()).len;
        self.sync_file.sync_data().map_err(|e| io("fsync", &self.path, e))?;
        *synced = target;
        Ok(())
    }

    fn summary(&self) -> Summary {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).summary
    }

    /// Every durable entry, in append order.
    fn entries(&self) -> Result<Vec<Entry>, StagingError> {
        let len = *self.synced.lock().unwrap_or_else(|e| e.into_inner());
        let mut f = File::open(&self.path).map_err(|e| io("open", &self.path, e))?;
        let mut bytes = vec![0u8; len as usize];
        f.read_exact(&mut bytes).map_err(|e| io("read", &self.path, e))?;
        check_header(&self.path, &bytes)?;
        bytes[HEADER_LEN as usize..]
            .chunks_exact(RECORD_LEN)
            .enumerate()
            .map(|(i, rec)| {
                Entry::decode(rec).ok_or_else(|| {
                    StagingError::Corrupt(self.path.clone(), format!("record {i} is damaged"))
                })
            })
            .collect()
    }
}

fn check_header(path: &Path, bytes: &[u8]) -> Result<(), StagingError> {
    if bytes.len() < HEADER_LEN as usize || &bytes[..8] != MAGIC {
        return Err(StagingError::Corrupt(path.to_path_buf(), "not a staging log".into()));
    }
    let version = u16::from_be_bytes([bytes[8], bytes[9]]);
    if version != STAGING_VERSION {
        return Err(StagingError::Corrupt(
            path.to_path_buf(),
            format!("format version {version}, this build reads {STAGING_VERSION}"),
        ));
    }
    Ok(())
}

fn fsync_dir(dir: &Path) -> Result<(), StagingError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io("fsync", dir, e))
}

/// The staging logs of one chunk node. Logs are opened on first use.
#[derive(Clone)]
pub struct StagingStore {
    dir: PathBuf,
    logs: Arc<Mutex<HashMap<String, Arc<Log>>>>,
}

impl StagingStore {
    /// Logs live under `data_dir/staging`, created on the first append.
    pub fn new(data_dir: &Path) -> StagingStore {
        StagingStore { dir: data_dir.join("staging"), logs: Arc::default() }
    }

    fn path(&self, snapshot: &str) -> PathBuf {
        self.dir.join(format!("{snapshot}.log"))
    }

    /// The open log of `snapshot`; `create` makes it when absent, else `None`.
    fn log(&self, snapshot: &str, create: bool) -> Result<Option<Arc<Log>>, StagingError> {
        check_name("snapshot id", snapshot).map_err(|e| StagingError::Invalid(e.to_string()))?;
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = logs.get(snapshot) {
            return Ok(Some(l.clone()));
        }
        let path = self.path(snapshot);
        match fs::symlink_metadata(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound && !create => return Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                if !self.dir.is_dir() {
                    fs::create_dir_all(&self.dir).map_err(|e| io("create", &self.dir, e))?;
                    if let Some(parent) = self.dir.parent() {
                        fsync_dir(parent)?;
                    }
                }
            }
            Err(e) => return Err(io("stat", &path, e)),
        }
        let log = Arc::new(Log::open(path)?);
        logs.insert(snapshot.to_string(), log.clone());
        Ok(Some(log))
    }

    pub async fn append(&self, snapshot: String, entries: Vec<Entry>) -> Result<(), StagingError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let log = store.log(&snapshot, true)?.ok_or_else(|| {
                StagingError::Invalid(format!("staging log of {snapshot} could not be created"))
            })?;
            log.append(&snapshot, &entries)
        })
        .await?
    }

    async fn summary(&self, snapshot: String) -> Result<Option<Summary>, StagingError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || Ok(store.log(&snapshot, false)?.map(|l| l.summary())))
            .await?
    }

    /// Every entry of `snapshot`'s log (empty when there is none).
    pub async fn entries(&self, snapshot: String) -> Result<Vec<Entry>, StagingError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || match store.log(&snapshot, false)? {
            Some(l) => l.entries(),
            None => Ok(Vec::new()),
        })
        .await?
    }

    pub async fn remove(&self, snapshot: String) -> Result<(), StagingError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            check_name("snapshot id", &snapshot)
                .map_err(|e| StagingError::Invalid(e.to_string()))?;
            let mut logs = store.logs.lock().unwrap_or_else(|e| e.into_inner());
            logs.remove(&snapshot);
            let path = store.path(&snapshot);
            match fs::remove_file(&path) {
                Ok(()) => fsync_dir(&store.dir),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io("remove", &path, e)),
            }
        })
        .await?
    }
}

/// The gRPC service: decode, call the store, encode.
pub struct StagingService {
    store: StagingStore,
}

/// The service over the logs under `data_dir`, ready for the node's router.
pub fn service(data_dir: &Path) -> SnapshotStagingServer<StagingService> {
    SnapshotStagingServer::new(StagingService { store: StagingStore::new(data_dir) })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

type EntriesStream = Pin<Box<dyn Stream<Item = Result<pb::StagingEntriesReply, Status>> + Send>>;

#[tonic::async_trait]
impl SnapshotStaging for StagingService {
    async fn append(
        &self,
        request: Request<pb::StagingAppendRequest>,
    ) -> Result<Response<pb::StagingAppendReply>, Status> {
        let req = request.into_inner();
        if req.entries.is_empty() || req.entries.len() > MAX_APPEND {
            return Err(StagingError::Invalid(format!(
                "an append carries 1..={MAX_APPEND} entries, not {}",
                req.entries.len()
            ))
            .into());
        }
        let entries = req.entries.iter().map(Entry::from_pb).collect::<Result<Vec<_>, _>>()?;
        self.store.append(req.snapshot_id, entries).await?;
        Ok(Response::new(pb::StagingAppendReply {}))
    }

    async fn stat(
        &self,
        request: Request<pb::StagingStatRequest>,
    ) -> Result<Response<pb::StagingStatReply>, Status> {
        let reply = match self.store.summary(request.into_inner().snapshot_id).await? {
            Some(s) => pb::StagingStatReply {
                exists: true,
                timeout_minutes: s.timeout_minutes,
                opened_ms: s.opened_ms,
                last_activity_ms: s.last_activity_ms,
                completed: s.completed,
                changed_blocks_count: s.changed_blocks_count,
                entries: s.entries,
            },
            None => pb::StagingStatReply::default(),
        };
        Ok(Response::new(reply))
    }

    type EntriesStream = EntriesStream;

    async fn entries(
        &self,
        request: Request<pb::StagingEntriesRequest>,
    ) -> Result<Response<Self::EntriesStream>, Status> {
        let entries = self.store.entries(request.into_inner().snapshot_id).await?;
        let replies: Vec<Result<pb::StagingEntriesReply, Status>> = entries
            .chunks(ENTRIES_PER_REPLY)
            .map(|part| {
                Ok(pb::StagingEntriesReply { entries: part.iter().map(|e| e.to_pb()).collect() })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(replies))))
    }

    async fn remove(
        &self,
        request: Request<pb::StagingRemoveRequest>,
    ) -> Result<Response<pb::StagingRemoveReply>, Status> {
        self.store.remove(request.into_inner().snapshot_id).await?;
        Ok(Response::new(pb::StagingRemoveReply {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(i: u64, at: u64) -> Entry {
        Entry {
            kind: StagingKind::Block,
            block_index: i,
            chunk: [i as u8; 32],
            sha256: [7; 32],
            at_ms: at,
            value: 0,
        }
    }

    fn open(at: u64) -> Entry {
        Entry {
            kind: StagingKind::Open,
            block_index: 0,
            chunk: [0; 32],
            sha256: [0; 32],
            at_ms: at,
            value: 60,
        }
    }

    #[test]
    fn record_roundtrip_and_damage() {
        let e = block(9, 1234);
        let mut b = e.encode();
        assert_eq!(Entry::decode(&b), Some(e));
        b[3] ^= 1;
        assert_eq!(Entry::decode(&b), None);
        assert_eq!(Entry::decode(&b[..10]), None);
    }

    #[tokio::test]
    async fn append_read_reopen_and_complete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = StagingStore::new(dir.path());
        let snap = "snap-0123456789abcdef0".to_string();
        assert_eq!(s.summary(snap.clone()).await.expect("stat"), None);
        s.append(snap.clone(), vec![open(10)]).await.expect("open");
        s.append(snap.clone(), vec![block(1, 20), block(2, 30)]).await.expect("append");
        let complete = Entry { kind: StagingKind::Complete, value: 2, at_ms: 40, ..open(0) };
        s.append(snap.clone(), vec![complete]).await.expect("complete");
        let err = s.append(snap.clone(), vec![block(3, 50)]).await.expect_err("closed");
        assert!(matches!(err, StagingError::Completed(_)));
        let sum = s.summary(snap.clone()).await.expect("stat").expect("exists");
        assert_eq!((sum.timeout_minutes, sum.opened_ms, sum.last_activity_ms), (60, 10, 40));
        assert!(sum.completed);
        assert_eq!(sum.entries, 4);

        // A fresh store (a restarted node) reads the same log, and a torn
        // tail is cut off.
        let path = dir.path().join("staging").join(format!("{snap}.log"));
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(&block(4, 60).encode()[..20]).expect("torn write");
        let s2 = StagingStore::new(dir.path());
        let entries = s2.entries(snap.clone()).await.expect("entries");
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[1], block(1, 20));
        assert_eq!(fs::metadata(&path).expect("meta").len(), HEADER_LEN + 4 * RECORD_LEN as u64);
        s2.remove(snap.clone()).await.expect("remove");
        assert!(!path.exists());
        s2.remove(snap.clone()).await.expect("remove twice");
        assert!(s2.entries(snap).await.expect("entries").is_empty());
    }

    #[tokio::test]
    async fn damage_in_the_middle_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = StagingStore::new(dir.path());
        let snap = "snap-0123456789abcdef1".to_string();
        s.append(snap.clone(), vec![block(1, 1), block(2, 2), block(3, 3)]).await.expect("append");
        let path = dir.path().join("staging").join(format!("{snap}.log"));
        let mut bytes = fs::read(&path).expect("read");
        bytes[HEADER_LEN as usize + 5] ^= 0xff;
        fs::write(&path, bytes).expect("write");
        let err = StagingStore::new(dir.path()).entries(snap).await.expect_err("corrupt");
        assert!(matches!(err, StagingError::Corrupt(..)));
    }

    #[tokio::test]
    async fn concurrent_appends_all_land() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = StagingStore::new(dir.path());
        let snap = "snap-0123456789abcdef2".to_string();
        let tasks: Vec<_> = (0..32u64)
            .map(|i| {
                let (s, snap) = (s.clone(), snap.clone());
                tokio::spawn(async move { s.append(snap, vec![block(i, i)]).await })
            })
            .collect();
        for t in tasks {
            t.await.expect("join").expect("append");
        }
        let mut idx: Vec<u64> =
            s.entries(snap).await.expect("entries").iter().map(|e| e.block_index).collect();
        idx.sort_unstable();
        assert_eq!(idx, (0..32).collect::<Vec<_>>());
    }
}
