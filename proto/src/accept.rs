//! Accepting connections without spinning: tonic's accept loop tries again
//! at once after an accept error, so running out of file descriptors
//! (EMFILE) would spin a core until one is freed. [`paced`] pauses a second
//! after such an error first, as axum's `serve` does; an error that belongs
//! to one connection (reset, aborted, unreachable) passes at once.

use futures::{Stream, StreamExt};
use std::time::Duration;

/// How long to wait after an accept error before accepting again.
pub const PAUSE_AFTER_ERROR: Duration = Duration::from_secs(1);

/// Linux's errno values for running out of what an accept needs: EMFILE,
/// ENFILE, ENOBUFS, ENOMEM.
const OUT_OF_RESOURCES: [i32; 4] = [24, 23, 105, 12];

/// Whether `e` says the process or the system ran out of what accepting
/// needs (retrying at once would fail again), not that one connection died.
pub fn out_of_resources(e: &std::io::Error) -> bool {
    e.raw_os_error().is_some_and(|n| OUT_OF_RESOURCES.contains(&n))
}

/// `incoming`, pausing [`PAUSE_AFTER_ERROR`] after an error that says the
/// node is out of resources, before the serve loop asks for the next
/// connection.
pub fn paced<S, T>(incoming: S) -> impl Stream<Item = Result<T, std::io::Error>>
where
    S: Stream<Item = Result<T, std::io::Error>>,
{
    incoming.then(|accepted| async move {
        match &accepted {
            Err(e) if out_of_resources(e) => {
                tracing::warn!(error = %e, "accepting a connection failed; pausing before the next");
                tokio::time::sleep(PAUSE_AFTER_ERROR).await;
            }
            _ => {}
        }
        accepted
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_error_holds_the_next_accept_back() {
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let emfile = std::io::Error::from_raw_os_error(24);
        let items: Vec<Result<u8, std::io::Error>> = vec![Ok(1), Err(reset), Err(emfile), Ok(2)];
        let mut s = std::pin::pin!(paced(futures::stream::iter(items)));
        assert_eq!(s.next().await.expect("first").expect("ok"), 1);
        let start = tokio::time::Instant::now();
        assert!(s.next().await.expect("a reset").is_err());
        assert!(start.elapsed() < PAUSE_AFTER_ERROR, "one connection's error passes at once");
        assert!(s.next().await.expect("out of descriptors").is_err());
        assert!(start.elapsed() >= PAUSE_AFTER_ERROR, "{:?}", start.elapsed());
        assert_eq!(s.next().await.expect("third").expect("ok"), 2);
    }
}
