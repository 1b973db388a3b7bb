//! Domain types every Cairn process shares: ids, blocks and chunk ids, the
//! metadata records and the commands that change them, manifests, placement,
//! and the NBD wire protocol.
//!
//! Nothing here does network I/O except the NBD codec, which works on any
//! `AsyncRead + AsyncWrite`.

pub mod block;
pub mod command;
pub mod ids;
pub mod manifest;
pub mod nbd;
pub mod placement;
pub mod records;
pub mod time;

pub use block::{is_zero, ChunkId, BLOCK_SIZE};
pub use ids::{OutpostId, SnapshotId, VolumeId};
