//! Domain types every Cairn process shares: ids, blocks and chunk ids, the
//! metadata records and the commands that change them, manifests and
//! placement. Nothing here does I/O.

pub mod accounts;
pub mod backoff;
pub mod block;
pub mod command;
pub mod gc;
pub mod ids;
pub mod manifest;
pub mod placement;
pub mod records;
pub mod sigv4;
pub mod tiering;
pub mod time;

pub use block::{chunk_of, is_zero, ChunkId, BLOCK_SIZE};
pub use ids::{OutpostId, SnapshotId, VolumeId};
