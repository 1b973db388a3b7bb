//! Accepting connections without spinning: tonic's accept loop tries again
//! at once after an accept error, so running out of file descriptors
//! (EMFILE) would spin a core until one is freed. [`paced`] pauses a second
//! after each error first, as axum's `serve` does.

use futures::{Stream, StreamExt};
use std::time::Duration;

/// How long to wait after an accept error before accepting again.
pub const PAUSE_AFTER_ERROR: Duration = Duration::from_secs(1);

/// `incoming`, pausing [`PAUSE_AFTER_ERROR`] after every error it yields
/// before the serve loop asks for the next connection.
pub fn paced<S, T>(incoming: S) -> impl Stream<Item = Result<T, std::io::Error>>
where
    S: Stream<Item = Result<T, std::io::Error>>,
{
    incoming.then(|accepted| async move {
        if let Err(e) = &accepted {
            tracing::warn!(error = %e, "accepting a connection failed; pausing before the next");
            tokio::time::sleep(PAUSE_AFTER_ERROR).await;
        }
        accepted
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_error_holds_the_next_accept_back() {
        let items: Vec<Result<u8, std::io::Error>> =
            vec![Ok(1), Err(std::io::Error::from_raw_os_error(24)), Ok(2)];
        let mut s = std::pin::pin!(paced(futures::stream::iter(items)));
        assert_eq!(s.next().await.expect("first").expect("ok"), 1);
        let start = tokio::time::Instant::now();
        assert!(s.next().await.expect("second").is_err());
        assert!(start.elapsed() >= PAUSE_AFTER_ERROR, "{:?}", start.elapsed());
        assert_eq!(s.next().await.expect("third").expect("ok"), 2);
    }
}
