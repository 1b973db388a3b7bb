//! The one accept loop every NBD listener runs (a volume host's, the
//! gateway's front door): a task per connection, a short pause when accept
//! fails (typically out of descriptors) instead of spinning, and on shutdown
//! every open connection dropped.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// How long to wait after a failed accept before the next.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// Accepts connections on `listener` and runs `handle` for each in its own
/// task, until `shutdown` completes; then aborts every connection's task and
/// waits for them. `what` names the listener in logs.
pub async fn serve_connections<F, Fut>(
    listener: TcpListener,
    what: &'static str,
    shutdown: impl Future<Output = ()>,
    mut handle: F,
) where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::pin!(shutdown);
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            res = listener.accept() => match res {
                Ok((stream, peer)) => {
                    conns.spawn(handle(stream, peer));
                }
                Err(e) => {
                    tracing::warn!(listener = what, error = %e, "nbd accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            },
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}
