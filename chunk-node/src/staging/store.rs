//! The staging logs of this node by snapshot id: opened on first use,
//! each call run on the blocking pool.

use crate::error::check_name;
use crate::staging::error::{io, StagingError};
use crate::staging::log::{fsync_dir, Log, Summary};
use crate::staging::record::Entry;
use std::collections::HashMap;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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

    /// What the log of `snapshot` says, if there is one.
    pub(crate) async fn summary(&self, snapshot: String) -> Result<Option<Summary>, StagingError> {
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
