//! One module per resource, each with the parsing (pure, called by the
//! router) and the execution of its operations.

pub mod copy;
pub mod modify;
pub mod sharing;
pub mod snapshots;
pub mod tags;
pub mod tiers;
pub mod volumes;
