//! The staging log's on-disk format: the header, and one fixed-size,
//! self-checking record per [`Entry`].

use crate::staging::error::StagingError;
use cairn_core::ChunkId;
use cairn_proto::pb::StagingKind;
use std::path::Path;

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
