//! The copy executor.

pub mod executor;

pub use executor::{run, CopyJob};
