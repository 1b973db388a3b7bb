//! Serves every local volume over NBD (export name = volume id).
//!
//! Per connection: the handshake from `cairn_nbd`, then a reader that
//! decodes requests (always consuming WRITE payloads, even refused ones) and
//! runs each as its own task, and one writer that sends whole replies in
//! completion order, so pipelined clients get out-of-order replies. In-flight
//! payload bytes are bounded. Bad input yields an errno reply or, when the
//! stream itself is broken, a closed connection; never a panic.
//!
//! A client that negotiated structured replies gets READs as data and hole
//! chunks (holes are not sent as zeroes), and with `base:allocation` may ask
//! NBD_CMD_BLOCK_STATUS which ranges are holes; other commands keep simple
//! replies, which the protocol allows.

use crate::volume::{Volume, VolumeHost};
use cairn_nbd::structured::{self, ReadPiece, CMD_BLOCK_STATUS, CMD_FLAG_REQ_ONE};
use cairn_nbd::{self as nbd, Conn, Export, ExportResolver, NbdError, Request, Session, TlsOffer};
use std::io;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};

/// In-flight request budget per connection, in MiB of payload.
const INFLIGHT_MIB: u32 = 64;
/// How long a client may take over its handshake (TLS included).
const HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(60);
/// Most bytes one BLOCK_STATUS reply describes (a server may describe less
/// than asked). Clients ask from an offset to the end of the volume, once
/// per extent they walk: walking all of it each time made a full scan
/// quadratic.
const STATUS_SPAN: u32 = 64 << 20;
/// File extents walked for a BLOCK_STATUS that wants one extent. The
/// extent answered may then be shorter than the run it starts, which is
/// still true (the client asks again from where it ends).
const REQ_ONE_EXTENTS: usize = 16;

struct HostResolver(VolumeHost);

impl ExportResolver for HostResolver {
    type Handle = Arc<Volume>;

    async fn resolve(&mut self, name: &str, _: Session) -> Option<(Export, Arc<Volume>)> {
        self.0.get(name).map(|v| (Export::read_write(v.size()), v))
    }

    async fn list(&mut self) -> Option<Vec<String>> {
        Some(self.0.list().into_iter().map(|(id, _)| id).collect())
    }
}

/// Accepts NBD connections until `shutdown` flips to true; then drops every
/// open connection.
///
/// With `tls`, a client must start TLS (NBD_OPT_STARTTLS) with a certificate
/// the cluster CA signed before it can open a volume: only the gateway's NBD
/// door (or another cluster process) reaches a volume host.
pub async fn serve(
    listener: TcpListener,
    host: VolumeHost,
    tls: Option<TlsOffer>,
    mut shutdown: watch::Receiver<bool>,
) {
    let stop = async move {
        // A dropped sender also means shut down.
        let _ = shutdown.wait_for(|s| *s).await;
    };
    nbd::serve_connections(listener, "volume host", stop, |stream, peer| {
        let host = host.clone();
        let tls = tls.clone();
        async move {
            if let Err(e) = handle(stream, host, tls).await {
                tracing::debug!(%peer, error = %e, "nbd connection ended with an error");
            }
        }
    })
    .await
}

async fn handle(
    stream: TcpStream,
    host: VolumeHost,
    tls: Option<TlsOffer>,
) -> Result<(), NbdError> {
    stream.set_nodelay(true)?;
    // The handshake (TLS included) is bounded: a client that connects and
    // stalls does not hold a connection task for ever.
    let mut resolver = HostResolver(host);
    let handshake = nbd::server_negotiate_tls(stream, &mut resolver, tls.as_ref());
    let negotiated = tokio::time::timeout(HANDSHAKE, handshake).await.map_err(|_| {
        NbdError::Io(io::Error::new(io::ErrorKind::TimedOut, "nbd handshake timed out"))
    })??;
    let Some(((name, _, volume, session), conn)) = negotiated else {
        return Ok(());
    };
    tracing::debug!(volume = %name, ?session, tls = conn.is_tls(), "nbd transmission started");
    match conn {
        // A plain socket splits without a lock between its halves.
        Conn::Plain(stream) => {
            let (rd, wr) = stream.into_split();
            transmit(BufReader::new(rd), wr, volume, session).await
        }
        tls => {
            let (rd, wr) = tokio::io::split(tls);
            transmit(BufReader::new(rd), wr, volume, session).await
        }
    }
}

enum Reply {
    Simple {
        error: u32,
        cookie: u64,
        data: Vec<u8>,
    },
    /// Structured chunks, written back to back.
    Chunks(Vec<Vec<u8>>),
}

async fn transmit<R, W>(
    mut rd: R,
    mut wr: W,
    volume: Arc<Volume>,
    session: Session,
) -> Result<(), NbdError>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Reply>(64);
    let writer = tokio::spawn(async move {
        while let Some(r) = rx.recv().await {
            match r {
                Reply::Simple { error, cookie, data } => {
                    nbd::send_simple_reply(&mut wr, error, cookie, &data).await?
                }
                Reply::Chunks(chunks) => {
                    let parts: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
                    nbd::write_all_slices(&mut wr, &parts).await?
                }
            }
            // Flush once the queue drains, not after every reply.
            if rx.is_empty() {
                wr.flush().await?;
            }
        }
        Ok::<_, NbdError>(())
    });
    let budget = Arc::new(Semaphore::new(INFLIGHT_MIB as usize));
    let read_result = loop {
        let req = match nbd::read_request(&mut rd).await {
            Ok(Some(r)) => r,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        if req.kind == nbd::CMD_DISC {
            break Ok(());
        }
        let cost = match req.kind {
            nbd::CMD_READ | nbd::CMD_WRITE => (req.length >> 20).clamp(1, INFLIGHT_MIB),
            _ => 1,
        };
        let Ok(permit) = budget.clone().acquire_many_owned(cost).await else {
            break Ok(());
        };
        let mut payload = Vec::new();
        if req.kind == nbd::CMD_WRITE {
            if req.length > nbd::MAX_PAYLOAD {
                // Consume it anyway, or the stream loses its framing.
                let mut take = (&mut rd).take(u64::from(req.length));
                if let Err(e) = tokio::io::copy(&mut take, &mut tokio::io::sink()).await {
                    break Err(e.into());
                }
            } else {
                payload = vec![0u8; req.length as usize];
                if let Err(e) = rd.read_exact(&mut payload).await {
                    break Err(e.into());
                }
            }
        }
        if req.kind == nbd::CMD_READ && in_range(&volume, &req) {
            volume.note_read(req.offset, u64::from(req.length));
        }
        let (volume, tx) = (volume.clone(), tx.clone());
        tokio::spawn(async move {
            let reply = match req.kind {
                nbd::CMD_READ if session.structured => read_structured(&volume, &req).await,
                CMD_BLOCK_STATUS => block_status(&volume, &req, session).await,
                _ => {
                    let (error, data) = execute(&volume, &req, payload).await;
                    Reply::Simple { error, cookie: req.cookie, data }
                }
            };
            // A failed send means the writer is gone with the connection.
            let _ = tx.send(reply).await;
            drop(permit);
        });
    };
    // In-flight requests still hold senders; the writer ends after their replies.
    drop(tx);
    let write_result = writer.await.map_err(io::Error::other)?;
    read_result.and(write_result)
}

/// The protocol errno for an I/O failure.
fn errno(e: &io::Error) -> u32 {
    match e.raw_os_error() {
        Some(libc_errno) if libc_errno == nix::errno::Errno::ENOSPC as i32 => nbd::ENOSPC,
        Some(c)
            if c == nix::errno::Errno::EDQUOT as i32 || c == nix::errno::Errno::EFBIG as i32 =>
        {
            nbd::ENOSPC
        }
        Some(c) if c == nix::errno::Errno::ENOMEM as i32 => nbd::ENOMEM,
        Some(c) if c == nix::errno::Errno::EPERM as i32 || c == nix::errno::Errno::EROFS as i32 => {
            nbd::EPERM
        }
        _ => nbd::EIO,
    }
}

fn done(r: io::Result<()>) -> (u32, Vec<u8>) {
    match r {
        Ok(()) => (0, Vec::new()),
        Err(e) => {
            tracing::warn!(error = %e, "nbd request failed");
            (errno(&e), Vec::new())
        }
    }
}

/// Whether the request's range lies within the volume.
fn in_range(volume: &Volume, req: &Request) -> bool {
    req.offset.checked_add(u64::from(req.length)).is_some_and(|end| end <= volume.size())
}

/// The checks of a READ: (errno) when refused.
fn check_read(volume: &Volume, req: &Request) -> Result<(), u32> {
    if req.flags & !(nbd::CMD_FLAG_FUA | nbd::CMD_FLAG_DF) != 0 || !in_range(volume, req) {
        return Err(nbd::EINVAL);
    }
    if req.length > nbd::MAX_PAYLOAD {
        return Err(nbd::EOVERFLOW);
    }
    Ok(())
}

/// A READ answered in structured chunks: holes as hole chunks.
async fn read_structured(volume: &Volume, req: &Request) -> Reply {
    let error = |e: u32| Reply::Chunks(vec![structured::encode_error(req.cookie, e)]);
    if let Err(e) = check_read(volume, req) {
        return error(e);
    }
    // DF (don't fragment): one data chunk, holes included.
    let pieces = match req.flags & nbd::CMD_FLAG_DF != 0 {
        true => volume
            .read(req.offset, req.length as usize)
            .await
            .map(|data| vec![ReadPiece::Data { offset: req.offset, data }]),
        false => volume.read_pieces(req.offset, u64::from(req.length)).await,
    };
    match pieces {
        Ok(pieces) => Reply::Chunks(structured::encode_read(req.cookie, pieces)),
        Err(e) => {
            tracing::warn!(error = %e, "nbd read failed");
            error(errno(&e))
        }
    }
}

/// NBD_CMD_BLOCK_STATUS for `base:allocation`: holes are HOLE|ZERO, the rest
/// data. Only for a client that selected the context.
async fn block_status(volume: &Volume, req: &Request, session: Session) -> Reply {
    let refuse = |e: u32| match session.structured {
        true => Reply::Chunks(vec![structured::encode_error(req.cookie, e)]),
        false => Reply::Simple { error: e, cookie: req.cookie, data: Vec::new() },
    };
    if !session.base_allocation
        || req.flags & !(nbd::CMD_FLAG_FUA | CMD_FLAG_REQ_ONE) != 0
        || req.length == 0
        || !in_range(volume, req)
    {
        return refuse(nbd::EINVAL);
    }
    // One extent wanted (qemu always asks so): the walk stops early.
    let one = req.flags & CMD_FLAG_REQ_ONE != 0;
    let span = u64::from(req.length.min(STATUS_SPAN));
    match volume.allocation(req.offset, span, one.then_some(REQ_ONE_EXTENTS)).await {
        Ok(runs) => {
            let hole = structured::STATE_HOLE | structured::STATE_ZERO;
            let take = if one { 1 } else { runs.len() };
            let extents: Vec<(u32, u32)> = runs
                .iter()
                .take(take)
                .map(|(s, e, zero)| ((e - s) as u32, if *zero { hole } else { 0 }))
                .collect();
            Reply::Chunks(vec![structured::encode_block_status(req.cookie, &extents)])
        }
        Err(e) => {
            tracing::warn!(error = %e, "nbd block status failed");
            refuse(errno(&e))
        }
    }
}

/// Runs one request; returns (errno, READ payload).
async fn execute(volume: &Arc<Volume>, req: &Request, payload: Vec<u8>) -> (u32, Vec<u8>) {
    let fua = req.flags & nbd::CMD_FLAG_FUA != 0;
    let len = u64::from(req.length);
    let in_range = in_range(volume, req);
    let flags_ok = |allowed: u16| req.flags & !allowed == 0;
    match req.kind {
        nbd::CMD_READ => {
            if let Err(e) = check_read(volume, req) {
                return (e, Vec::new());
            }
            match volume.read(req.offset, req.length as usize).await {
                Ok(data) => (0, data),
                Err(e) => done(Err(e)),
            }
        }
        nbd::CMD_WRITE => {
            if !flags_ok(nbd::CMD_FLAG_FUA) || req.length > nbd::MAX_PAYLOAD {
                return (nbd::EINVAL, Vec::new());
            }
            if !in_range {
                return (nbd::ENOSPC, Vec::new());
            }
            done(volume.write(req.offset, payload, fua).await)
        }
        nbd::CMD_FLUSH => {
            if !flags_ok(nbd::CMD_FLAG_FUA) {
                return (nbd::EINVAL, Vec::new());
            }
            done(volume.flush().await)
        }
        nbd::CMD_TRIM => {
            if !flags_ok(nbd::CMD_FLAG_FUA) || !in_range {
                return (nbd::EINVAL, Vec::new());
            }
            done(volume.trim(req.offset, len, fua).await)
        }
        nbd::CMD_WRITE_ZEROES => {
            if !flags_ok(nbd::CMD_FLAG_FUA | nbd::CMD_FLAG_NO_HOLE) {
                return (nbd::EINVAL, Vec::new());
            }
            if !in_range {
                return (nbd::ENOSPC, Vec::new());
            }
            let allocate = req.flags & nbd::CMD_FLAG_NO_HOLE != 0;
            done(volume.write_zeroes(req.offset, len, allocate, fua).await)
        }
        _ => (nbd::EINVAL, Vec::new()),
    }
}
