//! The chunk node's one error type, the one table that maps it to gRPC
//! status codes, and the checks of request fields (names, chunk ids) that
//! end in it.

use cairn_core::manifest::ManifestError;
use cairn_core::ChunkId;
use std::path::PathBuf;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum ChunkNodeError {
    #[error("invalid configuration: {0}")]
    Config(&'static str),
    #[error("{0}")]
    Tls(String),
    #[error("capacity tier: {0}")]
    Tier(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("chunk id must be 32 bytes, got {0}")]
    BadChunkId(usize),
    #[error("data does not hash to chunk id {0}")]
    HashMismatch(ChunkId),
    #[error("chunk {0} is not stored here")]
    ChunkNotFound(ChunkId),
    #[error("volume {0} does not exist")]
    VolumeNotFound(String),
    #[error("volume {id} already exists with size {size}")]
    VolumeExists { id: String, size: u64 },
    #[error("invalid {what}: {value:?}")]
    InvalidName { what: &'static str, value: String },
    #[error("invalid request: {0}")]
    InvalidArgument(&'static str),
    #[error("snapshot {0} is not frozen on this node")]
    NotFrozen(String),
    #[error("volume {0} already has the most pending snapshots a volume may have")]
    TooManyFreezes(String),
    #[error("the freeze measured changes since {frozen:?} but the copy names parent {given:?}")]
    ParentMismatch { frozen: String, given: String },
    #[error("this copy was started against another parent manifest and cannot switch")]
    CopyMismatch,
    #[error("state file {path} is corrupt: {why}")]
    CorruptState { path: PathBuf, why: String },
    #[error("cannot encode state: {0}")]
    Encode(String),
    #[error("no source holds a valid copy of chunk {0}")]
    ChunkUnavailable(ChunkId),
    #[error("chunk node {node} failed: {status}")]
    Remote { node: String, status: Status },
    #[error("the chunk store has stopped")]
    StoreStopped,
    #[error("bad address {addr}: {reason}")]
    BadAddress { addr: String, reason: String },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("cannot serve gRPC: {0}")]
    Transport(#[from] tonic::transport::Error),
}

impl ChunkNodeError {
    /// An I/O error on `path` during `op`.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ChunkNodeError::Io { op, path: path.into(), source }
    }
}

impl From<ChunkNodeError> for Status {
    fn from(e: ChunkNodeError) -> Self {
        use ChunkNodeError as E;
        let code = match &e {
            // No frozen image is "not found" too: a copy of it can never
            // succeed, and the gateway tells it apart from a refusal.
            E::ChunkNotFound(_) | E::VolumeNotFound(_) | E::NotFrozen(_) => Code::NotFound,
            E::BadChunkId(_)
            | E::HashMismatch(_)
            | E::InvalidName { .. }
            | E::InvalidArgument(_)
            | E::BadAddress { .. } => Code::InvalidArgument,
            E::VolumeExists { .. } => Code::AlreadyExists,
            E::ParentMismatch { .. } | E::CopyMismatch => Code::FailedPrecondition,
            E::TooManyFreezes(_) => Code::ResourceExhausted,
            E::CorruptState { .. } => Code::DataLoss,
            E::ChunkUnavailable(_) | E::Remote { .. } | E::StoreStopped => Code::Unavailable,
            E::Manifest(_) => Code::DataLoss,
            E::Config(_)
            | E::Tls(_)
            | E::Tier(_)
            | E::Io { .. }
            | E::Task(_)
            | E::Transport(_)
            | E::Encode(_) => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}

/// Volume and snapshot ids name files: only `[A-Za-z0-9_-]`, 1..=64 bytes.
pub(crate) fn check_name(what: &'static str, value: &str) -> Result<(), ChunkNodeError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ChunkNodeError::InvalidName { what, value: value.to_string() })
    }
}

/// A chunk id from the bytes a request carries (32 of them).
pub(crate) fn chunk_id(bytes: &[u8]) -> Result<ChunkId, ChunkNodeError> {
    ChunkId::from_slice(bytes).ok_or(ChunkNodeError::BadChunkId(bytes.len()))
}
