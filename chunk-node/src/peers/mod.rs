//! Talking to other chunk stores: gRPC clients that verify what they
//! receive ([`client`]), fetching a chunk by placement ([`fetch`]) and
//! putting chunks at RF ([`put`]). Builds on [`crate::store`] for this
//! node's own store, which is read and written directly.

pub mod client;
pub mod fetch;
pub mod put;

pub use client::{candidates, connect, replication_factor, use_tls, Peer, DEFAULT_RF};
pub use fetch::{fetch, fetch_near};
pub(crate) use put::Sender;
