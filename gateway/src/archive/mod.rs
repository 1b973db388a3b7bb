//! The archive tier: a snapshot's full content in an object store (a local
//! directory, or any S3-compatible service), so its chunks may leave the
//! chunk stores. `store.rs` opens the store from the configuration,
//! `format.rs` is the layout (packs and one index object), `write.rs`
//! archives and verifies, `restore.rs` brings an archive back into the
//! chunk stores and deletes archives, and `worker.rs` runs that work for
//! the tiering records that ask for it (core's `command/tiers.rs`),
//! reporting through `report.rs`; `handle.rs` is what the rest of the
//! gateway holds.

mod format;
pub mod handle;
mod report;
mod restore;
mod store;
mod worker;
mod write;

pub use handle::Archive;
pub use store::open;
pub use worker::spawn;
