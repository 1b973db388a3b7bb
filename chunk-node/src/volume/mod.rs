//! The volumes of this node and everything a live volume needs: the host
//! ([`host`]), the I/O paths ([`io`]) with their block locks ([`blocks`]),
//! change tracking ([`tracking`]), pending freezes ([`freeze`]) with their
//! copy logs ([`copylog`]), read-ahead ([`readahead`]), and lazy restore:
//! the hydration state ([`hydration`], persisted by [`restoremap`] with
//! its chunk map on disk, [`blockids`], and its [`chunkcache`]) and the background hydrator
//! ([`hydrator`]).
//!
//! Each live volume is a sparse file `data_dir/volumes/<vol-id>.img` of the
//! volume's size, with its state in `data_dir/volumes/<vol-id>.state/`:
//! changed-block tracking, pending freezes and, for a volume restored
//! lazily, its hydration state.
//!
//! Point in time: every mutation (write, write-zeroes, trim) holds the
//! volume's gate shared from before it touches anything until it is done,
//! and `freeze` holds it exclusively just long enough to record the freeze.
//! A mutation acknowledged before `freeze` returned finished before the
//! freeze, so the frozen image has it; one that starts after `freeze`
//! returned first saves, under the block's lock, the frozen content of every
//! block it is about to change that a pending freeze still needs.
//!
//! The host writes `data_dir/clean-shutdown` when it closes cleanly and
//! removes it when it opens; opening without it means the previous run was
//! killed, and change tracking becomes unknown (see [`tracking`]).
//!
//! Hydration fetches chunks through [`crate::peers`] (this node's own
//! store directly); the copy and the restore build on the volume code, never
//! the other way.

pub(crate) mod blockids;
pub mod blocks;
pub(crate) mod chunkcache;
pub mod copylog;
pub mod freeze;
mod grow;
pub mod host;
pub mod hydration;
pub mod hydrator;
pub mod io;
mod pressure;
mod readahead;
pub(crate) mod restoremap;
mod stamps;
pub mod tracking;

pub use host::{FreezeInfo, VolumeHost};
pub use io::{Volume, VolumeStats};
