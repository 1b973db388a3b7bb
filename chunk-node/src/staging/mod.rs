//! Staging of snapshots written through the EBS direct APIs: one append-only,
//! fsynced log per pending snapshot, under `data_dir/staging/<snapshot>.log`
//! (the `SnapshotStaging` gRPC service over it lives in `rpc/staging.rs`).
//!
//! Why a log here and not in Raft: block maps never go through the metadata
//! group (DESIGN.md), and the gateway is stateless. The gateway appends each
//! accepted block (index -> chunk id, or zero) to the logs of the RF nodes
//! placement picks for the snapshot id before it answers PutSnapshotBlock,
//! and reads them back when it seals the snapshot.
//!
//! On disk: an 10-byte header (`CAIRNSTG`, format version u16 BE), then
//! fixed-size records of [`RECORD_LEN`] bytes: kind u8, block index u64,
//! chunk id [32], sha-256 [32], at_ms u64, value u64 (all BE), and the first
//! 4 bytes of the BLAKE3 of the preceding 89 bytes. A torn last record (a
//! crash mid-append, never acknowledged) is cut off when the log is opened; a
//! bad record anywhere else is corruption and an error, never skipped.
//!
//! Appends are group-committed: writers append under the state lock, then
//! one `fdatasync` covers every record written before it started, so many
//! concurrent PutSnapshotBlock calls share fsyncs instead of queueing on them.
//!
//! The gateway reads a log back as its block map: one entry per block, in
//! block order, sorted outside memory when the log is large (`sort.rs`).
//!
//! Files: [`record`] (the record format), [`log`] (one snapshot's log, its
//! recovery and group commit), `sort` (its block map), [`store`] (the logs
//! of this node), [`error`].

pub mod error;
pub(crate) mod log;
pub mod record;
mod sort;
pub mod store;

pub use error::StagingError;
pub use record::{Entry, RECORD_LEN, STAGING_VERSION};
pub use store::{MapBatch, StagingStore};
