//! The staging log's on-disk format: the header, and one fixed-size,
//! self-checking record per [`Entry`].

use crate::staging::error::{io, StagingError};
use cairn_core::ChunkId;
use cairn_proto::pb::StagingKind;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

pub(crate) const MAGIC: &[u8; 8] = b"CAIRNSTG";
/// Format version of the staging log.
pub const STAGING_VERSION: u16 = 1;
pub(crate) const HEADER_LEN: u64 = 10;
const BODY_LEN: usize = 1 + 8 + 32 + 32 + 8 + 8;
/// Bytes of one record on disk.
pub const RECORD_LEN: usize = BODY_LEN + 4;

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

/// Checks that `bytes` start with a staging log header of this version.
pub(crate) fn check_header(path: &Path, bytes: &[u8]) -> Result<(), StagingError> {
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

/// A record's index in its log and its entry (`None`: damaged).
pub(crate) type Numbered = (u64, Option<Entry>);

/// A log's records in order, read a buffer at a time (a log can be GiBs)
/// after its header is checked.
pub(crate) struct Records {
    reader: BufReader<File>,
    path: PathBuf,
    next: u64,
    count: u64,
}

impl Records {
    /// The whole records of the first `len` bytes of the log `file` (at
    /// `path`), read from its start.
    pub(crate) fn open(path: &Path, file: File, len: u64) -> Result<Records, StagingError> {
        let mut reader = BufReader::with_capacity(64 << 10, file);
        let mut header = [0u8; HEADER_LEN as usize];
        reader.read_exact(&mut header).map_err(|e| io("read", path, e))?;
        check_header(path, &header)?;
        let count = len.saturating_sub(HEADER_LEN) / RECORD_LEN as u64;
        Ok(Records { reader, path: path.to_path_buf(), next: 0, count })
    }

    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// The next record's index and entry (`None`: damaged); `None` after
    /// the last.
    pub(crate) fn next(&mut self) -> Result<Option<Numbered>, StagingError> {
        if self.next == self.count {
            return Ok(None);
        }
        let mut rec = [0u8; RECORD_LEN];
        self.reader.read_exact(&mut rec).map_err(|e| io("read", &self.path, e))?;
        self.next += 1;
        Ok(Some((self.next - 1, Entry::decode(&rec))))
    }
}
