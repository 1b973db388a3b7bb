//! The copy executor: moves a frozen volume into the chunk stores of its
//! destination and writes its manifest.
//!
//! A reader ([`read`]) reads the freeze's read set (changed blocks, or every
//! block that may hold data) in batches, each block from the overlay or the
//! live volume under its lock, and hashes non-zero ones next to the data.
//! Each batch is stored at RF ([`store`], through [`crate::peers::put`]): a
//! chunk counts only once every one of its replicas acknowledged it, and an
//! unreachable replica fails the copy (Unavailable) rather than leaving it
//! under-replicated. After each batch is durable the copy log records it
//! ([`checkpoint`], over [`crate::volume::copylog`]), which is the
//! checkpoint a re-run resumes from (replaying the recorded entries). Each
//! durable batch's entries also go to the manifest, written page by page as
//! the checkpoints pass each page, from the parent's when the freeze was
//! incremental (only changed pages are written), its pages and then its
//! root stored the same way ([`manifest`]): no step holds the volume's
//! entries, whatever its size. How much block data the steps hold at once
//! is the node's `copy_memory_bytes` ([`budget`]). Every step is
//! idempotent. [`executor`] runs the steps, and [`fence`] admits them: one
//! copy per snapshot at a time, and none of a superseded job epoch.

pub mod budget;
mod checkpoint;
pub mod executor;
pub mod fence;
mod manifest;
mod read;
mod store;

pub use budget::CopyMemory;
pub use executor::{run, CopyJob, Ended};
pub use fence::{CopyFence, Superseded, Ticket};
