//! Staging of snapshots written through the EBS direct APIs.

pub mod store;

pub use store::{service, Entry, StagingError, StagingService, StagingStore};
