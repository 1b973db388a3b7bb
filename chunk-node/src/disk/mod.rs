//! Durability primitives, with no knowledge of chunks or volumes: fsynced
//! and versioned files, the checksummed record log, sparse files, and
//! aligned buffers for direct I/O. Everything above builds on these.

pub(crate) mod direct;
pub mod files;
pub mod reclog;
pub mod sparse;
pub mod volfile;
