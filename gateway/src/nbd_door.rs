//! The NBD front door (port 10809 on a local cluster): one address that
//! reaches any volume.
//!
//! Per connection the door negotiates with the client as an NBD server. When
//! the client picks an export (NBD_OPT_GO, or EXPORT_NAME from old clients),
//! the door looks the volume up in the metadata group (it must exist and be
//! `available` or `in-use`), finds its host's NBD address, opens an upstream
//! connection and negotiates the same export there as a client, then answers
//! the client with the upstream's export (size and transmission flags). From
//! then on it only splices bytes both ways until either side closes: the
//! transmission phase is the host's, request for request.
//!
//! The upstream leg is negotiated with the same reply style as the client's
//! (structured replies, `base:allocation` under the id every Cairn server
//! gives it), so the two transmission phases match byte for byte.
//!
//! TLS: the door offers NBD_OPT_STARTTLS to clients with its cluster
//! certificate (qemu's `tls-creds-x509` with the cluster CA as `ca-cert.pem`),
//! and with `nbd_tls_required` refuses to open a volume in clear text. The
//! upstream leg to the volume host is mutual TLS whenever the gateway has a
//! cluster certificate: hosts then accept nothing else.
//!
//! NBD_OPT_LIST is refused with ERR_UNSUP: NBD carries no credentials, and a
//! listing would reveal every account's volume ids. Clients that need a
//! volume know its id. A failure to reach the metadata group or the host
//! answers the client's GO with ERR_UNKNOWN and affects that client only.

use cairn_core::command::{Query, QueryOutput};
use cairn_core::records::VolumeState;
use cairn_core::VolumeId;
use cairn_nbd::{self as nbd, Conn, Export, ExportResolver, Session, TlsOffer};
use cairn_proto::tls::{ClusterTls, TlsError};
use cairn_proto::{MetaClientError, MetadataClient};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// How long connecting to a volume host may take.
const UPSTREAM_CONNECT: Duration = Duration::from_secs(5);
/// How long the upstream handshake may take.
const UPSTREAM_HANDSHAKE: Duration = Duration::from_secs(10);
/// How long a client may take over its handshake before it is dropped.
const CLIENT_HANDSHAKE: Duration = Duration::from_secs(60);
/// A volume host that stops acknowledging what the door sends (crashed, its
/// network cut, its address changed by a reconnect) ends the connection
/// after this long, so the client gets an error and retries (through any
/// gateway, to wherever the host is now) instead of waiting for ever on a
/// connection that cannot recover. Keepalive probes find an idle one dead.
const UPSTREAM_STALL: Duration = Duration::from_secs(30);
/// Splice buffer per direction. READ replies are up to several MiB; tokio's
/// default 8 KiB buffer turns each into hundreds of read/write syscalls.
const SPLICE_BUFFER: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum DoorError {
    #[error("metadata lookup failed: {0}")]
    Meta(#[from] MetaClientError),
    #[error("metadata answered {0} with an unexpected reply")]
    UnexpectedReply(&'static str),
    #[error("volume host {addr} unreachable: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("volume host {addr} took too long")]
    Timeout { addr: String },
    #[error("upstream handshake with {addr} failed: {source}")]
    Upstream { addr: String, source: nbd::NbdError },
}

/// Finds the NBD address of the host serving a volume.
pub trait Locate: Send + Sync + 'static {
    /// `Some(host:port)` for a volume that can be opened now, `None` when
    /// there is no such volume (or it is not in a usable state).
    fn locate(
        &self,
        volume: &str,
    ) -> impl Future<Output = Result<Option<String>, DoorError>> + Send;
}

/// Locates volumes through the metadata group.
pub struct MetaLocator(pub Arc<MetadataClient>);

impl Locate for MetaLocator {
    async fn locate(&self, volume: &str) -> Result<Option<String>, DoorError> {
        let Some(id) = VolumeId::parse(volume) else { return Ok(None) };
        let vol = match self.0.read(&Query::Volume(id)).await? {
            QueryOutput::Volume(v) => v,
            _ => return Err(DoorError::UnexpectedReply("Query::Volume")),
        };
        let Some(vol) = vol else { return Ok(None) };
        if !matches!(vol.state, VolumeState::Available | VolumeState::InUse) {
            return Ok(None);
        }
        let nodes = match self.0.read(&Query::Nodes).await? {
            QueryOutput::Nodes(n) => n,
            _ => return Err(DoorError::UnexpectedReply("Query::Nodes")),
        };
        Ok(nodes.into_iter().find(|n| n.node_id == vol.host_node).map(|n| n.nbd_addr))
    }
}

/// How the door speaks TLS, each way.
#[derive(Clone, Default)]
pub struct DoorTls {
    /// Offered to clients (NBD_OPT_STARTTLS), maybe required.
    pub front: Option<TlsOffer>,
    /// Used towards volume hosts: the gateway's cluster certificate.
    pub upstream: Option<TlsConnector>,
}

impl DoorTls {
    /// From the gateway's cluster certificate: clients get TLS offered (and
    /// required with `required`), hosts are reached over mutual TLS.
    pub fn from_cluster(tls: Option<&ClusterTls>, required: bool) -> Result<Self, TlsError> {
        let Some(tls) = tls else { return Ok(DoorTls::default()) };
        Ok(DoorTls {
            front: Some(TlsOffer {
                acceptor: TlsAcceptor::from(tls.rustls_server(false)?),
                required,
            }),
            upstream: Some(TlsConnector::from(tls.rustls_client()?)),
        })
    }
}

/// See [`UPSTREAM_STALL`]: unacknowledged data for that long, or an idle
/// connection whose keepalive probes go unanswered, ends it.
fn watch_liveness(s: &TcpStream) -> std::io::Result<()> {
    let sock = socket2::SockRef::from(s);
    sock.set_tcp_user_timeout(Some(UPSTREAM_STALL))?;
    let probes = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5))
        .with_retries(4);
    sock.set_tcp_keepalive(&probes)
}

/// Opens and negotiates the upstream connection for `volume`.
async fn open_upstream(
    addr: &str,
    volume: &str,
    session: Session,
    tls: Option<&TlsConnector>,
) -> Result<(Export, Conn<TcpStream>), DoorError> {
    let timeout = || DoorError::Timeout { addr: addr.to_string() };
    let mut up = tokio::time::timeout(UPSTREAM_CONNECT, TcpStream::connect(addr))
        .await
        .map_err(|_| timeout())?
        .map_err(|source| DoorError::Connect { addr: addr.to_string(), source })?;
    up.set_nodelay(true).map_err(|source| DoorError::Connect { addr: addr.to_string(), source })?;
    watch_liveness(&up).map_err(|source| DoorError::Connect { addr: addr.to_string(), source })?;
    let handshake = async move {
        match tls {
            Some(tls) => {
                nbd::client_negotiate_tls(up, volume, session, tls, cairn_proto::tls::server_name())
                    .await
            }
            None => {
                let export = nbd::client_negotiate_with(&mut up, volume, session).await?;
                Ok((export, Conn::Plain(up)))
            }
        }
    };
    tokio::time::timeout(UPSTREAM_HANDSHAKE, handshake)
        .await
        .map_err(|_| timeout())?
        .map_err(|source| DoorError::Upstream { addr: addr.to_string(), source })
}

/// The door's export resolver: an export is a volume, and its handle is the
/// negotiated upstream connection.
struct DoorResolver<L> {
    locator: Arc<L>,
    upstream_tls: Option<TlsConnector>,
}

impl<L: Locate> ExportResolver for DoorResolver<L> {
    type Handle = Conn<TcpStream>;

    async fn resolve(&mut self, name: &str, session: Session) -> Option<(Export, Conn<TcpStream>)> {
        let addr = match self.locator.locate(name).await {
            Ok(Some(addr)) => addr,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(volume = name, error = %e, "nbd door cannot locate volume");
                return None;
            }
        };
        match open_upstream(&addr, name, session, self.upstream_tls.as_ref()).await {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(volume = name, error = %e, "nbd door cannot reach volume host");
                None
            }
        }
    }

    async fn list(&mut self) -> Option<Vec<String>> {
        None
    }
}

/// Serves the front door on `listener` until `shutdown` completes; then
/// drops every open connection.
pub async fn serve(
    listener: TcpListener,
    meta: Arc<MetadataClient>,
    tls: DoorTls,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, Arc::new(MetaLocator(meta)), tls, shutdown).await
}

/// [`serve`] with any way of locating volumes.
pub async fn serve_with<L: Locate>(
    listener: TcpListener,
    locator: Arc<L>,
    tls: DoorTls,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    nbd::serve_connections(listener, "nbd door", shutdown, |client, peer| {
        let locator = locator.clone();
        let tls = tls.clone();
        async move {
            if let Err(e) = handle(client, locator, tls).await {
                tracing::debug!(%peer, error = %e, "nbd door connection ended with an error");
            }
        }
    })
    .await;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error(transparent)]
    Nbd(#[from] nbd::NbdError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("client handshake timed out")]
    HandshakeTimeout,
}

async fn handle<L: Locate>(
    client: TcpStream,
    locator: Arc<L>,
    tls: DoorTls,
) -> Result<(), ConnError> {
    client.set_nodelay(true)?;
    let mut resolver = DoorResolver { locator, upstream_tls: tls.upstream };
    let handshake = nbd::server_negotiate_tls(client, &mut resolver, tls.front.as_ref());
    let chosen = tokio::time::timeout(CLIENT_HANDSHAKE, handshake)
        .await
        .map_err(|_| ConnError::HandshakeTimeout)??;
    let Some(((name, _export, mut upstream, _session), mut client)) = chosen else {
        return Ok(());
    };
    let (to_host, to_client) = tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut upstream,
        SPLICE_BUFFER,
        SPLICE_BUFFER,
    )
    .await?;
    tracing::debug!(volume = %name, to_host, to_client, "nbd door connection closed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn an_upstream_connection_that_stops_answering_ends() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let up = TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
        watch_liveness(&up).expect("options");
        let sock = socket2::SockRef::from(&up);
        assert_eq!(sock.tcp_user_timeout().expect("user timeout"), Some(UPSTREAM_STALL));
        assert!(sock.keepalive().expect("keepalive"));
        assert_eq!(sock.tcp_keepalive_time().expect("idle"), Duration::from_secs(10));
    }

    /// Volumes at fixed addresses.
    struct Fixed(HashMap<String, String>);

    impl Locate for Fixed {
        async fn locate(&self, volume: &str) -> Result<Option<String>, DoorError> {
            Ok(self.0.get(volume).cloned())
        }
    }

    /// A volume host reduced to its NBD face: one in-memory export served
    /// with the shared codec (READ, WRITE, DISC), enough to prove the door
    /// negotiates both legs and carries the transmission phase unchanged.
    async fn upstream(name: &'static str, size: u64) -> (String, tokio::task::JoinHandle<()>) {
        struct One(&'static str, u64);
        impl ExportResolver for One {
            type Handle = ();
            async fn resolve(&mut self, name: &str, _: Session) -> Option<(Export, ())> {
                (name == self.0).then(|| (Export::read_write(self.1), ()))
            }
            async fn list(&mut self) -> Option<Vec<String>> {
                Some(vec![self.0.to_string()])
            }
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let task = tokio::spawn(async move {
            let mut disk = vec![0u8; size as usize];
            while let Ok((mut s, _)) = listener.accept().await {
                let Ok(Some(_)) = nbd::server_negotiate(&mut s, &mut One(name, size)).await else {
                    continue;
                };
                while let Ok(Some(req)) = nbd::read_request(&mut s).await {
                    let (off, len) = (req.offset as usize, req.length as usize);
                    let reply = match req.kind {
                        nbd::CMD_WRITE => {
                            let ok = s.read_exact(&mut disk[off..off + len]).await.is_ok();
                            nbd::write_simple_reply(
                                &mut s,
                                if ok { 0 } else { nbd::EIO },
                                req.cookie,
                                &[],
                            )
                            .await
                        }
                        nbd::CMD_READ => {
                            nbd::write_simple_reply(&mut s, 0, req.cookie, &disk[off..off + len])
                                .await
                        }
                        _ => break,
                    };
                    if reply.is_err() {
                        break;
                    }
                }
            }
        });
        (addr, task)
    }

    #[tokio::test]
    async fn door_negotiates_both_legs_and_splices() {
        let (addr, host) = upstream("vol-0123456789abcdef0", 1 << 20).await;
        let locator = Fixed(HashMap::from([
            ("vol-0123456789abcdef0".to_string(), addr),
            // Located, but nothing listens there.
            ("vol-dead0000000000000".to_string(), "127.0.0.1:1".to_string()),
        ]));
        let door = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let door_addr = door.local_addr().expect("addr");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server =
            tokio::spawn(serve_with(door, Arc::new(locator), DoorTls::default(), async move {
                let _ = stop_rx.await;
            }));

        // Unknown and unreachable volumes are refused; the door keeps serving.
        for name in ["vol-fffffffffffffffff", "vol-dead0000000000000"] {
            let mut c = TcpStream::connect(door_addr).await.expect("connect");
            match nbd::client_negotiate(&mut c, name).await {
                Err(nbd::NbdError::OptionRefused { code, .. }) => {
                    assert_eq!(code, nbd::REP_ERR_UNKNOWN)
                }
                other => panic!("expected ERR_UNKNOWN for {name}, got {other:?}"),
            }
        }

        // A client asking for structured replies and base:allocation gets
        // them: the door asks the host for the same.
        let mut s = TcpStream::connect(door_addr).await.expect("connect");
        let full = Session { structured: true, base_allocation: true };
        let export = nbd::client_negotiate_with(&mut s, "vol-0123456789abcdef0", full)
            .await
            .expect("structured negotiation through the door");
        assert_eq!(export, Export::read_write(1 << 20));
        drop(s);

        let mut c = TcpStream::connect(door_addr).await.expect("connect");
        let export =
            nbd::client_negotiate(&mut c, "vol-0123456789abcdef0").await.expect("negotiate");
        assert_eq!(export, Export::read_write(1 << 20));
        let w = nbd::Request { flags: 0, kind: nbd::CMD_WRITE, cookie: 1, offset: 4096, length: 4 };
        nbd::write_request(&mut c, &w, b"door").await.expect("write");
        assert_eq!(nbd::read_simple_reply(&mut c).await.expect("reply"), (0, 1));
        let r = nbd::Request { flags: 0, kind: nbd::CMD_READ, cookie: 2, offset: 4094, length: 8 };
        nbd::write_request(&mut c, &r, &[]).await.expect("read");
        assert_eq!(nbd::read_simple_reply(&mut c).await.expect("reply"), (0, 2));
        let mut buf = [9u8; 8];
        c.read_exact(&mut buf).await.expect("payload");
        assert_eq!(&buf, b"\0\0door\0\0");

        // LIST is refused, then the client can still pick an export.
        let mut l = TcpStream::connect(door_addr).await.expect("connect");
        let mut hello = [0u8; 18];
        l.read_exact(&mut hello).await.expect("hello");
        l.write_all(&3u32.to_be_bytes()).await.expect("flags");
        let mut opt = nbd::IHAVEOPT.to_be_bytes().to_vec();
        opt.extend_from_slice(&nbd::OPT_LIST.to_be_bytes());
        opt.extend_from_slice(&0u32.to_be_bytes());
        l.write_all(&opt).await.expect("list");
        let mut reply = [0u8; 20];
        l.read_exact(&mut reply).await.expect("reply");
        let kind = u32::from_be_bytes(reply[12..16].try_into().expect("4 bytes"));
        assert_eq!(kind, nbd::REP_ERR_UNSUP);

        drop(c);
        drop(l);
        let _ = stop_tx.send(());
        server.await.expect("door task").expect("door result");
        host.abort();
    }
}
