//! The staging logs of this node by snapshot id: opened on first use,
//! each call run on the blocking pool.

use crate::error::check_name;
use crate::staging::error::{io, StagingError};
use crate::staging::log::{fsync_dir, Log, Summary};
use crate::staging::record::Entry;
use crate::staging::sort::{self, RUN_ENTRIES};
use std::collections::HashMap;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};

/// The staging logs of one chunk node. Logs are opened on first use.
#[derive(Clone)]
pub struct StagingStore {
    dir: PathBuf,
    logs: Arc<Mutex<HashMap<String, Arc<Log>>>>,
    /// Turns to sort a log (see [`MAX_SORTS`]).
    sorts: Arc<Semaphore>,
}

/// Logs sorted into block maps at once on a node.
pub const MAX_SORTS: usize = 2;

/// How long a block map waits for its reader to take a batch: longer than
/// a gateway waits for the first batches of all the log's replicas.
const IDLE_READER: Duration = Duration::from_secs(900);

/// One batch of a block map; `last` (with no entries) ends a map read
/// whole.
#[derive(Debug, PartialEq, Eq)]
pub struct MapBatch {
    pub entries: Vec<Entry>,
    pub last: bool,
}

/// What a block map's reader receives.
pub type MapRead = Result<MapBatch, StagingError>;

impl StagingStore {
    /// Logs live under `data_dir/staging`, created on the first append.
    /// Removes the sort runs a crash left there (`sort.rs`).
    pub fn new(data_dir: &Path) -> StagingStore {
        let dir = data_dir.join("staging");
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".sort-") && name.ends_with(".tmp") {
                if let Err(e) = fs::remove_file(entry.path()) {
                    tracing::warn!(path = %entry.path().display(), error = %e, "leftover sort run not removed");
                }
            }
        }
        StagingStore { dir, logs: Arc::default(), sorts: Arc::new(Semaphore::new(MAX_SORTS)) }
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

    /// What the log of `snapshot` says, if there is one.
    pub(crate) async fn summary(&self, snapshot: String) -> Result<Option<Summary>, StagingError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || Ok(store.log(&snapshot, false)?.map(|l| l.summary())))
            .await?
    }

    /// The block map of `snapshot`'s log (see `sort.rs`): one entry per
    /// block, ascending, in batches of at most `batch` through the returned
    /// channel, read on the blocking pool. A map read whole ends with a
    /// batch marked `last`; a failure (no log here: [`StagingError::NoLog`])
    /// is the last message instead, and a reader that stops taking batches
    /// for [`IDLE_READER`] gets neither. Dropping the receiver stops the read.
    /// At most [`MAX_SORTS`] logs are sorted at once (the reading, sorting
    /// and spilling); a map holds its turn until its first batch is handed
    /// over, so maps waiting on slow readers never hold up others. A map
    /// being sent still holds its one run (the log fit in one, up to 24 MiB)
    /// or its run files and up to 64 read buffers of 64 KiB until it is read
    /// or given up: one of these per `BlockMap` call in flight.
    pub fn block_map(&self, snapshot: String, batch: usize) -> mpsc::Receiver<MapRead> {
        self.block_map_in_runs(snapshot, batch, RUN_ENTRIES)
    }

    fn block_map_in_runs(
        &self,
        snapshot: String,
        batch: usize,
        run_entries: usize,
    ) -> mpsc::Receiver<MapRead> {
        let (tx, rx) = mpsc::channel(2);
        let store = self.clone();
        tokio::spawn(async move {
            // Each sort takes a run's memory and up to its log's size in
            // temporary files: a few at a time.
            let permit = tokio::select! {
                p = store.sorts.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                _ = tx.closed() => return,
            };
            let handle = tokio::runtime::Handle::current();
            let out = tx.clone();
            let read = tokio::task::spawn_blocking(move || {
                let mut turn = Some(permit);
                let Some(log) = store.log(&snapshot, false)? else {
                    return Err(StagingError::NoLog(snapshot));
                };
                let (path, len) = log.durable();
                let send = |entries, last| {
                    let batch = MapBatch { entries, last };
                    let sent =
                        handle.block_on(tokio::time::timeout(IDLE_READER, out.send(Ok(batch))));
                    matches!(sent, Ok(Ok(())))
                };
                let whole = sort::block_map(
                    path,
                    len,
                    run_entries,
                    batch,
                    || out.is_closed(),
                    |part| {
                        // Sorted: the next map may start.
                        turn = None;
                        send(part, false)
                    },
                )?;
                Ok(whole && send(Vec::new(), true))
            })
            .await;
            let failed = match read {
                Ok(Ok(_)) => return,
                Ok(Err(e)) => e,
                Err(e) => StagingError::Task(e),
            };
            let _ = tokio::time::timeout(IDLE_READER, tx.send(Err(failed))).await;
        });
        rx
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::staging::record::{HEADER_LEN, RECORD_LEN};
    use cairn_proto::pb::StagingKind;
    use std::fs::OpenOptions;
    use std::io::Write;

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

    /// The whole block map, read in batches of 3 and runs of `run`.
    async fn map(s: &StagingStore, snap: &str, run: usize) -> Result<Vec<Entry>, StagingError> {
        let mut rx = s.block_map_in_runs(snap.to_string(), 3, run);
        let mut out = Vec::new();
        while let Some(batch) = rx.recv().await {
            let batch = batch?;
            out.extend(batch.entries);
            if batch.last {
                assert!(rx.recv().await.is_none(), "nothing after the last batch");
                return Ok(out);
            }
        }
        panic!("the map ended without its last batch");
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
        assert_eq!(s2.summary(snap.clone()).await.expect("stat").expect("log").entries, 4);
        let blocks = map(&s2, &snap, RUN_ENTRIES).await.expect("map");
        assert_eq!(blocks, vec![block(1, 20), block(2, 30)]);
        assert_eq!(fs::metadata(&path).expect("meta").len(), HEADER_LEN + 4 * RECORD_LEN as u64);
        s2.remove(snap.clone()).await.expect("remove");
        assert!(!path.exists());
        s2.remove(snap.clone()).await.expect("remove twice");
        let gone = map(&s2, &snap, RUN_ENTRIES).await.expect_err("no log");
        assert!(matches!(gone, StagingError::NoLog(_)));
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
        let err =
            map(&StagingStore::new(dir.path()), &snap, RUN_ENTRIES).await.expect_err("corrupt");
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
        let idx: Vec<u64> =
            map(&s, &snap, RUN_ENTRIES).await.expect("map").iter().map(|e| e.block_index).collect();
        assert_eq!(idx, (0..32).collect::<Vec<_>>());
    }

    /// A log larger than a run: sorted runs spilled to files and merged give
    /// the same map as one sort in memory, the last write of each block
    /// winning (greatest time, then later in the log), and leave no file.
    #[tokio::test]
    async fn a_log_larger_than_a_run_is_merged_from_files() {
        use rand::{Rng, SeedableRng};
        let dir = tempfile::tempdir().expect("tempdir");
        let s = StagingStore::new(dir.path());
        let snap = "snap-0123456789abcdef3".to_string();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut want = std::collections::BTreeMap::new();
        s.append(snap.clone(), vec![open(1)]).await.expect("open");
        for n in 0..600u64 {
            let i = rng.gen_range(0..150u64);
            // Times go back now and then: a gateway's clock, or two gateways.
            let at = 100 + n / 3 - rng.gen_range(0..2u64) * 5;
            let mut e = block(i, at);
            e.chunk = [(n % 251) as u8; 32];
            if rng.gen_range(0..10) == 0 {
                e.kind = StagingKind::Zero;
            }
            match want.get(&i) {
                Some(prev) if prev_wins(prev, &e) => {}
                _ => {
                    want.insert(i, e);
                }
            }
            s.append(snap.clone(), vec![e]).await.expect("append");
        }
        let want: Vec<Entry> = want.into_values().collect();
        assert_eq!(map(&s, &snap, RUN_ENTRIES).await.expect("in memory"), want);
        assert_eq!(map(&s, &snap, 37).await.expect("merged"), want);
        // About 300 runs of two: more than merge at once, so groups of them
        // are merged into one run each first, in log order.
        assert_eq!(map(&s, &snap, 2).await.expect("merged in passes"), want);
        let left: Vec<_> = fs::read_dir(dir.path().join("staging"))
            .expect("dir")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 1, "only the log is left: {left:?}");
    }

    fn prev_wins(prev: &Entry, next: &Entry) -> bool {
        prev.at_ms > next.at_ms
    }

    /// A log with no block yet (only its OPEN) has an empty map, sent whole.
    #[tokio::test]
    async fn a_log_without_blocks_has_an_empty_map() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = StagingStore::new(dir.path());
        let snap = "snap-0123456789abcdef5".to_string();
        s.append(snap.clone(), vec![open(1)]).await.expect("open");
        let mut rx = s.block_map(snap, 8);
        let only = rx.recv().await.expect("a batch").expect("map");
        assert_eq!(only, MapBatch { entries: Vec::new(), last: true });
        assert!(rx.recv().await.is_none());
    }

    /// A reader that stops early stops the read, and the sort runs go.
    #[tokio::test]
    async fn a_stopped_read_leaves_no_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = StagingStore::new(dir.path());
        let snap = "snap-0123456789abcdef4".to_string();
        let entries: Vec<Entry> = (0..200).map(|i| block(199 - i, 1)).collect();
        s.append(snap.clone(), entries).await.expect("append");
        let mut rx = s.block_map_in_runs(snap.clone(), 1, 10);
        let first = rx.recv().await.expect("a batch").expect("map");
        assert_eq!(first, MapBatch { entries: vec![block(0, 1)], last: false });
        drop(rx);
        let staging = dir.path().join("staging");
        let runs_left = || {
            fs::read_dir(&staging)
                .expect("dir")
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
                .count()
        };
        for _ in 0..1000 {
            if runs_left() == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(runs_left(), 0);
        // A leftover from a crash is removed when the store opens.
        fs::write(staging.join(".sort-x.tmp"), b"run").expect("write");
        StagingStore::new(dir.path());
        assert_eq!(runs_left(), 0);
    }
}
