//! Cairn's internal gRPC: the generated tonic code, conversions between wire
//! and domain types, the one metadata client every process uses, and the one
//! way to open a channel to a chunk node.

#[allow(clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("cairn.v1");
}

pub mod channel;
pub mod convert;
pub mod meta_client;

pub use channel::{
    chunk_node_channel, BadAddress, ChunkChannels, CONNECTION_WINDOW_BYTES, STREAM_WINDOW_BYTES,
};
pub use meta_client::{MetaClientError, MetadataClient};

/// Largest gRPC message any Cairn service sends or accepts (a chunk is 512 KiB;
/// Raft batches and snapshots stay below this).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
