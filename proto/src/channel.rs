//! Channels and limits of Cairn's internal gRPC: the one message-size
//! limit every service and client sets, and the one way to open a channel
//! to a chunk node (every client of chunk traffic, the gateway's host calls
//! and EBS direct I/O and a chunk node's peers, gets the same connect
//! timeout, `TCP_NODELAY` and the large HTTP/2 windows chunks need, and
//! shares channels through one cache).

use crate::tls::{self, ClusterTls};
use crate::trace::{passing_request_id, Channel};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Largest gRPC message any Cairn service sends or accepts (a chunk is 512 KiB;
/// Raft batches and snapshots stay below this).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// HTTP/2 flow-control windows for chunk traffic. The defaults (64 KiB to
/// 1 MiB) let only one or two 512 KiB chunks be in flight per connection, so
/// a copy with many puts in flight waited on window updates.
pub const STREAM_WINDOW_BYTES: u32 = 8 << 20;
pub const CONNECTION_WINDOW_BYTES: u32 = 64 << 20;

/// How long connecting to a chunk node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// An address that is not a valid gRPC URL.
#[derive(Clone, Debug, thiserror::Error)]
#[error("bad chunk node address {addr}: {reason}")]
pub struct BadAddress {
    pub addr: String,
    pub reason: String,
}

/// A lazily connected channel to the chunk node at `addr`
/// (`http://host:port`), over mutual TLS with `tls`; with `request_timeout`,
/// every call on it fails after that long.
pub fn chunk_node_channel(
    addr: &str,
    request_timeout: Option<Duration>,
    tls: Option<&ClusterTls>,
) -> Result<Channel, BadAddress> {
    let endpoint = tls::endpoint(addr, tls)
        .map_err(|e| BadAddress { addr: addr.to_string(), reason: e.to_string() })?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES);
    let endpoint = match request_timeout {
        Some(t) => endpoint.timeout(t),
        None => endpoint,
    };
    Ok(passing_request_id(endpoint.connect_lazy()))
}

/// Channels to chunk nodes by address, opened on first use and shared after.
#[derive(Default)]
pub struct ChunkChannels {
    channels: Mutex<HashMap<String, Channel>>,
    tls: Option<ClusterTls>,
}

impl ChunkChannels {
    /// Channels over mutual TLS with `tls` (`None`: clear text).
    pub fn new(tls: Option<ClusterTls>) -> Self {
        ChunkChannels { channels: Mutex::default(), tls }
    }

    /// The TLS these channels use, for whoever opens more of their kind.
    pub fn tls(&self) -> Option<&ClusterTls> {
        self.tls.as_ref()
    }

    /// The channel to `addr`, opened (lazily) on first use.
    pub fn get(&self, addr: &str) -> Result<Channel, BadAddress> {
        let mut map = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let ch = chunk_node_channel(addr, None, self.tls.as_ref())?;
        map.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }
}
