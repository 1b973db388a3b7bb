//! The chunk store: immutable blocks named by their BLAKE3, appended to pack
//! files under `data_dir/packs/`, with an in-memory index rebuilt at open;
//! and [`LocalStore`], this node's store as the copy and the restore see it
//! among the chunk nodes they talk to.
//!
//! Why packs and not a file per chunk: on ext4 a file per 512 KiB chunk (create
//! a temp file, write, fsync, rename, fsync the directory) ran at 130 to 380
//! MiB/s here, bound by inode creation and two journal commits per chunk;
//! appending to a pack with one `fdatasync` per batch ran at 1.2 GiB/s (see
//! the README's snapshot benchmark). restic and borg store packs for the
//! same reason. Records are aligned so that a batch is one `O_DIRECT` write:
//! on this kind of machine (a VM whose page cache pages are costly to
//! allocate) copying chunks into the page cache was the largest cost of a
//! snapshot; direct writes skip it. Where the file system refuses
//! `O_DIRECT`, writes go through the page cache.
//!
//! Discipline:
//! - One committer thread per store appends ([`committer`]): a put is
//!   durable when it returns. Puts are put-if-absent.
//! - The pack being appended is `NNNNNNNN.open`; once it is full (after its
//!   last sync) it is renamed to `NNNNNNNN.pack` (sealed). Opening the store
//!   walks the headers of sealed packs and verifies every record of open ones
//!   (a crash may have left a torn or unsynced tail there, never
//!   acknowledged): the first bad record and all after it are cut off, then
//!   the pack is sealed. New puts go to a new pack. A damaged header in a
//!   sealed pack loses only its record: the walk resynchronises at the next
//!   aligned record that verifies ([`packfile`]).
//! - Clean shutdown: [`ChunkStore::close`] writes `clean-shutdown`, and open
//!   removes it. Opened without it (a crash, a kill, a power loss), the store
//!   hashes every record of its sealed packs too, and buries bad ones.
//! - Every read verifies the hash. A corrupt record is recorded in
//!   `tombstones.log` (so it stays out of the index across restarts), counted,
//!   reported as missing (`has` answers false: a rotten copy never counts
//!   as a replica), and its id queued for repair ([`repair_queue`]), so
//!   that the repairer (or the next put) stores the chunk again in a new
//!   record. Scrub checks every indexed record the same way ([`scrub`]).
//! - A store written by earlier versions (one file per chunk under
//!   `data_dir/chunks/`) is moved into packs at open, verified, and the old
//!   files removed once the packs are durable.
//!
//! - Capacity tier (optional): sealed packs are uploaded to an object
//!   store and removed from the disk, which then holds the pack being
//!   appended, one small record per uploaded pack and a bounded read cache
//!   ([`tier`], [`remote`], [`cache`]).
//!
//! - Garbage collection: puts and `has` hits stamp chunks with a touch
//!   sequence, fences remember where each generation began, and a sweep
//!   drops from the index what the gateway's live filter lacks and nobody
//!   touched since ([`gc`]). Compaction then removes packs without live
//!   records and rewrites mostly dead ones ([`compact`]); pack numbers are
//!   never reused.
//!
//! Files: [`chunk_store`] (the handle: open, put, get, has, and the entry
//! points of garbage collection), [`committer`], [`shared`] (what handles
//! and the committer share; verified reads), [`index`] (the sharded index
//! and the touch sequence), [`gc`] (fences and sweeps), [`compact`],
//! [`packfile`] (the record format), [`scrub`] (what a scrub pass checks),
//! [`repair_queue`], [`local`], [`pack`] (a pack open for reading, local or
//! remote), [`tier`], [`remote`] and [`cache`] (the capacity tier). The store builds only on
//! [`crate::disk`].

pub(crate) mod cache;
pub mod chunk_store;
pub(crate) mod committer;
pub(crate) mod compact;
pub(crate) mod gc;
pub(crate) mod index;
pub mod local;
pub(crate) mod pack;
pub(crate) mod packfile;
pub(crate) mod remote;
pub(crate) mod repair_queue;
pub(crate) mod scrub;
pub(crate) mod shared;
pub(crate) mod tier;

pub use cache::CacheStats;
pub use chunk_store::{ChunkStore, StoreStats, TierStats, COMPACT_LIVE_FRACTION};
pub use compact::CompactReport;
pub use gc::SweepReport;
pub use local::LocalStore;
pub(crate) use packfile::Loc;
pub use packfile::MAX_CHUNK;
pub use remote::TierSettings;
pub(crate) use shared::Checked;

#[cfg(test)]
mod gc_tests;
#[cfg(test)]
mod scrub_tests;
#[cfg(test)]
mod tier_tests;
