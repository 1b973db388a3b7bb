//! Cairn's internal gRPC: the generated tonic code, conversions between wire
//! and domain types, the one metadata client every process uses, the one
//! way to open a channel to a chunk node, and the one way to open an object
//! store ([`objects`]).

pub mod accept;
pub mod channel;
pub mod convert;
pub mod meta_client;
pub mod objects;
pub mod pb;
pub mod tls;
pub mod trace;

pub use channel::{
    chunk_node_channel, BadAddress, ChunkChannels, CONNECTION_WINDOW_BYTES, MAX_MESSAGE_BYTES,
    STREAM_WINDOW_BYTES,
};
pub use meta_client::{MetaClientError, MetadataClient};
pub use trace::Channel;
