//! Talking to other chunk stores: gRPC clients that verify what they
//! receive, fetching a chunk by placement, and putting chunks at RF.

pub mod client;

pub use client::{candidates, connect, fetch, fetch_near, replication_factor, Peer, DEFAULT_RF};
