//! An append-only file of checksummed records, the durable journal under
//! freeze overlays, copy checkpoints and hydration marks.
//!
//! Record: magic (4 bytes), payload length (4, LE), BLAKE3 of the payload
//! (32), payload. An append is acknowledged only after `fdatasync`, and the
//! state it describes is acted on only after that, so a record torn by a
//! crash (short, or failing its checksum) at the end of the file describes
//! something that never happened: opening the log drops it and every byte
//! after it.

use crate::error::ChunkNodeError;
use cairn_core::ChunkId;
use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: u32 = 0x4352_4c31; // "CRL1"
const HEADER: u64 = 40;
/// Largest payload: a 512 KiB block plus its framing, with room to spare.
pub const MAX_PAYLOAD: u32 = 8 << 20;

pub struct RecordLog {
    file: File,
    path: PathBuf,
    end: u64,
}

/// Where a record's payload lies in the file, and its checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordAt {
    pub offset: u64,
    pub len: u32,
    pub hash: ChunkId,
}

impl RecordLog {
    /// Opens (creating) the log at `path`, calling `visit` with every intact
    /// record in order, and cuts off a torn tail.
    pub fn open(
        path: &Path,
        mut visit: impl FnMut(RecordAt, &[u8]) -> Result<(), ChunkNodeError>,
    ) -> Result<RecordLog, ChunkNodeError> {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| ChunkNodeError::io("open", path, e))?;
        let size = file.metadata().map_err(|e| ChunkNodeError::io("stat", path, e))?.len();
        let pos = scan(&file, path, size, |at, payload| visit(at, payload).map(|()| true))?;
        if pos < size {
            tracing::warn!(path = %path.display(), kept = pos, dropped = size - pos, "torn record at the end of a log dropped");
            file.set_len(pos).map_err(|e| ChunkNodeError::io("truncate", path, e))?;
            file.sync_all().map_err(|e| ChunkNodeError::io("fsync", path, e))?;
        }
        Ok(RecordLog { file, path: path.to_path_buf(), end: pos })
    }

    /// Appends one record and makes it durable before returning.
    pub fn append(&mut self, payload: &[u8]) -> Result<RecordAt, ChunkNodeError> {
        if payload.len() > MAX_PAYLOAD as usize {
            return Err(ChunkNodeError::InvalidArgument("log record too large"));
        }
        let hash = ChunkId::of(payload);
        let mut buf = Vec::with_capacity(HEADER as usize + payload.len());
        buf.extend(MAGIC.to_le_bytes());
        buf.extend((payload.len() as u32).to_le_bytes());
        buf.extend(hash.0);
        buf.extend_from_slice(payload);
        self.file
            .write_all_at(&buf, self.end)
            .map_err(|e| ChunkNodeError::io("append to", &self.path, e))?;
        self.file.sync_data().map_err(|e| ChunkNodeError::io("fsync", &self.path, e))?;
        let at = RecordAt { offset: self.end + HEADER, len: payload.len() as u32, hash };
        self.end += buf.len() as u64;
        Ok(at)
    }

    /// The payload of a record, verified against its checksum.
    pub fn read(&self, at: RecordAt) -> Result<Vec<u8>, ChunkNodeError> {
        let mut buf = vec![0u8; at.len as usize];
        read_at(&self.file, &self.path, &mut buf, at.offset)?;
        if ChunkId::of(&buf) != at.hash {
            return Err(ChunkNodeError::io(
                "verify",
                &self.path,
                std::io::Error::new(ErrorKind::InvalidData, "log record fails its checksum"),
            ));
        }
        Ok(buf)
    }

    /// Calls `visit` with every record in order, until it returns false;
    /// the records were checked when the log was opened, and are again.
    pub fn replay(
        &self,
        mut visit: impl FnMut(RecordAt, &[u8]) -> Result<bool, ChunkNodeError>,
    ) -> Result<(), ChunkNodeError> {
        let end = scan(&self.file, &self.path, self.end, &mut visit)?;
        if end < self.end {
            return Err(ChunkNodeError::CorruptState {
                path: self.path.clone(),
                why: format!("a record at {end} no longer reads back"),
            });
        }
        Ok(())
    }

    /// Bytes of intact records.
    pub fn size_bytes(&self) -> u64 {
        self.end
    }
}

/// Visits the intact records of `file` below `size` in order, until one is
/// not intact or `visit` returns false; returns where the intact records
/// end (`size` when `visit` stopped early).
fn scan(
    file: &File,
    path: &Path,
    size: u64,
    mut visit: impl FnMut(RecordAt, &[u8]) -> Result<bool, ChunkNodeError>,
) -> Result<u64, ChunkNodeError> {
    let mut pos = 0u64;
    let mut header = [0u8; HEADER as usize];
    while pos + HEADER <= size {
        read_at(file, path, &mut header, pos)?;
        let magic = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&header[8..40]);
        if magic != MAGIC || len > MAX_PAYLOAD || pos + HEADER + u64::from(len) > size {
            break;
        }
        let mut payload = vec![0u8; len as usize];
        read_at(file, path, &mut payload, pos + HEADER)?;
        if ChunkId::of(&payload).0 != hash {
            break;
        }
        let more = visit(RecordAt { offset: pos + HEADER, len, hash: ChunkId(hash) }, &payload)?;
        pos += HEADER + u64::from(len);
        if !more {
            return Ok(size);
        }
    }
    Ok(pos)
}

fn read_at(file: &File, path: &Path, buf: &mut [u8], at: u64) -> Result<(), ChunkNodeError> {
    file.read_exact_at(buf, at).map_err(|e| ChunkNodeError::io("read", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(path: &Path) -> (RecordLog, Vec<Vec<u8>>) {
        let mut out = Vec::new();
        let log = RecordLog::open(path, |_, p| {
            out.push(p.to_vec());
            Ok(())
        })
        .expect("open");
        (log, out)
    }

    #[test]
    fn appends_survive_reopen_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let (mut log, none) = collect(&path);
        assert!(none.is_empty());
        let a = log.append(b"first").expect("append");
        log.append(&vec![7u8; 1000]).expect("append");
        assert_eq!(log.read(a).expect("read"), b"first");
        let good_len = log.size_bytes();
        drop(log);
        // A crash in the middle of a third append: header and half a payload.
        let f = File::options().write(true).open(&path).expect("open");
        let mut torn = MAGIC.to_le_bytes().to_vec();
        torn.extend(100u32.to_le_bytes());
        torn.extend([0u8; 32]);
        torn.extend([1u8; 50]);
        f.write_all_at(&torn, good_len).expect("tear");
        drop(f);
        let (mut log, recs) = collect(&path);
        assert_eq!(recs, vec![b"first".to_vec(), vec![7u8; 1000]]);
        assert_eq!(log.size_bytes(), good_len);
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), good_len);
        log.append(b"after").expect("append after repair");
        drop(log);
        assert_eq!(collect(&path).1.len(), 3);
    }

    #[test]
    fn a_flipped_byte_ends_the_log_there() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let (mut log, _) = collect(&path);
        log.append(b"one").expect("append");
        let second = log.append(b"two").expect("append");
        drop(log);
        let f = File::options().write(true).open(&path).expect("open");
        f.write_all_at(b"X", second.offset).expect("flip");
        drop(f);
        assert_eq!(collect(&path).1, vec![b"one".to_vec()]);
    }

    #[test]
    fn a_replay_stops_when_asked_and_reports_a_record_damaged_since_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let (mut log, _) = collect(&path);
        log.append(b"one").expect("append");
        let second = log.append(b"two").expect("append");
        let mut seen = Vec::new();
        let stop_at_two = |_: RecordAt, p: &[u8]| {
            seen.push(p.to_vec());
            Ok(p != b"two")
        };
        log.replay(stop_at_two).expect("stopped on the last record: not damage");
        assert_eq!(seen, vec![b"one".to_vec(), b"two".to_vec()]);
        let f = File::options().write(true).open(&path).expect("open");
        f.write_all_at(b"X", second.offset).expect("flip");
        let err = log.replay(|_, _| Ok(true)).expect_err("damaged after open");
        assert!(matches!(err, ChunkNodeError::CorruptState { .. }), "{err}");
    }
}
