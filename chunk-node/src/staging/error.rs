//! The staging store's error, and how it maps to gRPC status codes.

use std::path::{Path, PathBuf};
use tonic::Status;

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
    #[error("no staging log of snapshot {0} on this node")]
    NoLog(String),
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
            StagingError::NoLog(_) => tonic::Code::NotFound,
            StagingError::Corrupt(..) => tonic::Code::DataLoss,
            StagingError::Io { .. } | StagingError::Task(_) => tonic::Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}

/// An I/O error on `path` during `op`.
pub(crate) fn io(op: &'static str, path: &Path, source: std::io::Error) -> StagingError {
    StagingError::Io { op, path: path.to_path_buf(), source }
}
