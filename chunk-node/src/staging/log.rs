//! One snapshot's staging log: opened with a torn last record cut off,
//! appended under a lock and made durable by group commit; its block map
//! is read back by `sort.rs`.

use crate::staging::error::{io, StagingError};
use crate::staging::record::{Entry, Records, HEADER_LEN, MAGIC, RECORD_LEN, STAGING_VERSION};
use cairn_proto::pb::StagingKind;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What a log says without reading it again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Summary {
    pub(crate) timeout_minutes: u64,
    pub(crate) opened_ms: u64,
    pub(crate) last_activity_ms: u64,
    pub(crate) completed: bool,
    pub(crate) changed_blocks_count: u64,
    pub(crate) entries: u64,
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
pub(crate) struct Log {
    path: PathBuf,
    state: Mutex<LogState>,
    /// A second handle, so fsync runs without holding the state lock.
    sync_file: File,
    /// Bytes known durable. Locked while an fsync runs (the group commit).
    synced: Mutex<u64>,
}

impl Log {
    /// Opens (or creates) the log at `path`, cutting off a torn last record.
    pub(crate) fn open(path: PathBuf) -> Result<Log, StagingError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io("open", &path, e))?;
        let found = file.metadata().map_err(|e| io("stat", &path, e))?.len();
        let mut summary = Summary::default();
        let len = if found < HEADER_LEN {
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
            let reader = file.try_clone().map_err(|e| io("reopen", &path, e))?;
            let mut records = Records::open(&path, reader, found)?;
            while let Some((i, entry)) = records.next()? {
                match entry {
                    Some(e) => summary.add(&e),
                    // A bad last record is a torn append nobody was told about.
                    None if i + 1 == records.count() => break,
                    None => {
                        return Err(StagingError::Corrupt(path, format!("record {i} is damaged")))
                    }
                }
            }
            let len = HEADER_LEN + summary.entries * RECORD_LEN as u64;
            if len != found {
                tracing::warn!(path = %path.display(), kept = len, found, "cutting a torn record off a staging log");
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
    pub(crate) fn append(&self, snapshot: &str, entries: &[Entry]) -> Result<(), StagingError> {
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

    pub(crate) fn summary(&self) -> Summary {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).summary
    }

    /// The log's file and how many of its bytes are durable: what a reader
    /// may read (appends after it are not acknowledged yet).
    pub(crate) fn durable(&self) -> (&Path, u64) {
        (&self.path, *self.synced.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Makes `dir`'s entries durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), StagingError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io("fsync", dir, e))
}
