//! Cairn's internal gRPC: the generated tonic code, conversions between wire
//! and domain types, and the one metadata client every process uses.

#[allow(clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("cairn.v1");
}

pub mod convert;
pub mod meta_client;

pub use meta_client::{MetaClientError, MetadataClient};

/// Largest gRPC message any Cairn service sends or accepts (a chunk is 512 KiB;
/// Raft batches and snapshots stay below this).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// HTTP/2 flow-control windows for chunk traffic. The defaults (64 KiB to
/// 1 MiB) let only one or two 512 KiB chunks be in flight per connection, so
/// a copy with many puts in flight waited on window updates.
pub const STREAM_WINDOW_BYTES: u32 = 8 << 20;
pub const CONNECTION_WINDOW_BYTES: u32 = 64 << 20;
