//! The volume host and everything a live volume needs.

pub mod blocks;
mod chunkcache;
pub mod copylog;
pub mod freeze;
pub mod host;
pub mod hydration;
pub mod io;
mod readahead;
pub mod tracking;

pub use host::{FreezeInfo, VolumeHost};
pub use io::{Volume, VolumeStats};
