//! The gRPC face of the node: thin adapters (decode, call, encode) over the
//! chunk store ([`chunk_store`]), the volume host with the copy executor and
//! the restore ([`volume_host`]) and the staging store ([`staging`]), and
//! the server that carries them ([`server`]). Errors become status codes
//! through the one `From<ChunkNodeError> for Status` table
//! ([`crate::error`]) and the staging store's own.

pub mod chunk_store;
pub mod server;
pub mod staging;
pub mod volume_host;

pub use chunk_store::ChunkStoreService;
pub use server::{serve, Services};
pub use staging::StagingService;
pub use volume_host::VolumeHostService;
