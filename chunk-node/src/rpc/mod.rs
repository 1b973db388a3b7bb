//! The gRPC services.

pub mod volume_host;

pub use volume_host::{ChunkStoreService, VolumeHostService};
