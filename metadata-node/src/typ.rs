//! The openraft type configuration of the metadata group, and short aliases for
//! the generic openraft types used across this crate.

use std::io::Cursor;

use cairn_core::command::CommandResult;
pub use cairn_proto::meta_client::{RequestId, WriteRequest};
use serde::{Deserialize, Serialize};

/// What one Raft log entry carries: the client writes the leader gathered
/// while earlier ones were being committed, proposed together so they share
/// one log append, one replication round and one state-machine batch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Batch(pub Vec<WriteRequest>);

openraft::declare_raft_types!(
    /// Log entries carry a [`Batch`] of [`WriteRequest`]s: each a `Command`
    /// and the client's request id, which makes a retried write apply once.
    /// Applying an entry yields one [`CommandResult`] per request (the domain
    /// function stays `Records::apply(Command)`).
    /// A member's [`openraft::BasicNode`] address is its gRPC URL, `http://host:port`.
    pub TypeConfig:
        D = Batch,
        R = Vec<CommandResult>,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type NodeId = u64;
pub type Node = openraft::BasicNode;
pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StorageIOError = openraft::StorageIOError<NodeId>;
pub type LogState = openraft::storage::LogState<TypeConfig>;
pub type Metrics = openraft::RaftMetrics<NodeId, Node>;

pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;
pub type RPCError<E = openraft::error::Infallible> =
    openraft::error::RPCError<NodeId, Node, RaftError<E>>;
pub type ClientWriteError = openraft::error::ClientWriteError<NodeId, Node>;
pub type CheckIsLeaderError = openraft::error::CheckIsLeaderError<NodeId, Node>;
pub type InitializeError = openraft::error::InitializeError<NodeId, Node>;
pub type InstallSnapshotError = openraft::error::InstallSnapshotError;
pub type ForwardToLeader = openraft::error::ForwardToLeader<NodeId, Node>;

pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<NodeId>;
pub type VoteRequest = openraft::raft::VoteRequest<NodeId>;
pub type VoteResponse = openraft::raft::VoteResponse<NodeId>;
pub type InstallSnapshotRequest = openraft::raft::InstallSnapshotRequest<TypeConfig>;
pub type InstallSnapshotResponse = openraft::raft::InstallSnapshotResponse<NodeId>;
