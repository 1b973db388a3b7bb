//! Why a member could not start or initialize.

use crate::store::StoreError;
use crate::typ::{InitializeError, NodeId};

/// Why a member could not start or initialize.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("invalid raft configuration: {0}")]
    Config(#[from] Box<openraft::ConfigError>),
    #[error("io (data directory or listener): {0}")]
    Io(#[from] std::io::Error),
    #[error("storage: {0}")]
    Storage(#[from] StoreError),
    #[error("raft: {0}")]
    Raft(#[from] openraft::error::Fatal<NodeId>),
    #[error("invalid members: {0}")]
    InvalidMembers(String),
    #[error("cannot initialize: {0}")]
    Initialize(#[from] InitializeError),
    #[error("{0}")]
    Tls(#[from] cairn_proto::tls::TlsError),
    #[error("TLS: {0}")]
    Transport(#[from] tonic::transport::Error),
}
