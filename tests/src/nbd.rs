//! A minimal NBD client over `cairn_nbd` for tests that need to know
//! exactly when each write was sent and acknowledged (one request in flight
//! per connection), plus cluster helpers to reach the NBD door and the
//! volume hosts' counters.

use crate::TestCluster;
use anyhow::{bail, Context};
use cairn_chunk_node::VolumeStats;
use cairn_nbd::{self as nbd, Request};
use std::net::SocketAddr;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

pub struct NbdConn {
    stream: TcpStream,
    size: u64,
    cookie: u64,
}

impl NbdConn {
    /// Connects to `addr` and negotiates export `name`.
    pub async fn connect(addr: SocketAddr, name: &str) -> anyhow::Result<NbdConn> {
        let mut stream = TcpStream::connect(addr).await.context("connect to nbd")?;
        stream.set_nodelay(true)?;
        let export = nbd::client_negotiate(&mut stream, name).await?;
        Ok(NbdConn { stream, size: export.size, cookie: 0 })
    }

    /// The export size the server announced.
    pub fn size(&self) -> u64 {
        self.size
    }

    async fn request(
        &mut self,
        kind: u16,
        offset: u64,
        length: u32,
        payload: &[u8],
    ) -> anyhow::Result<()> {
        self.cookie += 1;
        let req = Request { flags: 0, kind, cookie: self.cookie, offset, length };
        nbd::write_request(&mut self.stream, &req, payload).await?;
        let (error, cookie) = nbd::read_simple_reply(&mut self.stream).await?;
        if cookie != self.cookie {
            bail!("reply for cookie {cookie}, expected {}", self.cookie);
        }
        if error != 0 {
            bail!("nbd request {kind} at {offset} failed with errno {error}");
        }
        Ok(())
    }

    /// Writes `data` at `offset`; returns once the server acknowledged it.
    pub async fn write(&mut self, offset: u64, data: &[u8]) -> anyhow::Result<()> {
        self.request(nbd::CMD_WRITE, offset, data.len() as u32, data).await
    }

    /// Makes every acknowledged write durable; returns once the server did.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        self.request(nbd::CMD_FLUSH, 0, 0, &[]).await
    }

    pub async fn read(&mut self, offset: u64, len: u32) -> anyhow::Result<Vec<u8>> {
        self.request(nbd::CMD_READ, offset, len, &[]).await?;
        let mut buf = vec![0u8; len as usize];
        self.stream.read_exact(&mut buf).await?;
        Ok(buf)
    }
}

impl TestCluster {
    /// The gateway's NBD front door.
    pub fn nbd_addr(&self) -> SocketAddr {
        self.gateway.as_ref().map(|g| g.nbd_addr()).unwrap_or_else(|| ([127, 0, 0, 1], 0).into())
    }

    /// The counters of `volume` on whichever chunk node hosts it.
    pub fn volume_stats(&self, volume: &str) -> Option<VolumeStats> {
        self.chunks.iter().find_map(|c| c.volumes().get(volume)).map(|v| v.stats())
    }
}
