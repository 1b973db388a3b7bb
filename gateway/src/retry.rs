//! Retrying what fails transiently, with one backoff for the whole gateway:
//! host calls, metadata writes, seals and resume passes all wait
//! [`backoff`] between attempts (the workers, [`policy`]'s delays).

use crate::ctx::Ctx;
use crate::nodes::HostError;
use cairn_core::backoff::Backoff;
use cairn_core::command::{Command, CommandResult};
use cairn_proto::MetaClientError;
use std::future::Future;
use std::time::Duration;

/// The first delay and the cap of every retry in the gateway.
const FIRST: Duration = Duration::from_millis(200);
const MAX: Duration = Duration::from_secs(5);

/// Backoff before attempt `n + 1` (n from 1): 200 ms doubling, at most 5 s,
/// by the workspace's one back-off policy.
pub fn backoff(n: u32) -> Duration {
    Backoff::delay(FIRST, MAX, n)
}

/// The same delays for a loop that keeps its own state (a worker's failing
/// steps): 200 ms doubling, at most 5 s.
pub fn policy() -> Backoff {
    Backoff::new(FIRST, MAX)
}

/// Runs `f` up to `attempts` times while it fails transiently.
pub async fn retry<T, Fut>(
    what: &str,
    attempts: u32,
    mut f: impl FnMut() -> Fut,
) -> Result<T, HostError>
where
    Fut: Future<Output = Result<T, HostError>>,
{
    let mut n = 0;
    loop {
        n += 1;
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && n < attempts => {
                tracing::warn!(what, attempt = n, error = %e, "transient failure, retrying");
                tokio::time::sleep(backoff(n)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A metadata write, retried while the group is unavailable.
pub async fn write_retrying(ctx: &Ctx, cmd: &Command) -> Result<CommandResult, MetaClientError> {
    let mut n = 0;
    loop {
        n += 1;
        match ctx.meta.write(cmd).await {
            Err(MetaClientError::Unavailable(e)) if n < 5 => {
                tracing::warn!(error = %e, "metadata unavailable, retrying");
                tokio::time::sleep(backoff(n)).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(2), Duration::from_millis(400));
        assert_eq!(backoff(5), Duration::from_millis(3200));
        assert_eq!(backoff(6), Duration::from_secs(5));
        assert_eq!(backoff(60), Duration::from_secs(5));
        let mut p = policy();
        let delays: Vec<Duration> = (0..7).map(|_| p.next_delay()).collect();
        assert_eq!(delays, (1..=7).map(backoff).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn retry_stops_on_permanent_errors() {
        let mut calls = 0;
        let r: Result<(), HostError> = retry("t", 5, || {
            calls += 1;
            async {
                Err(HostError::rpc("n", tonic::Status::failed_precondition("no frozen image")))
            }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1);
        let mut calls = 0;
        let r: Result<u32, HostError> = retry("t", 3, || {
            calls += 1;
            let c = calls;
            async move {
                if c < 3 {
                    Err(HostError::rpc("n", tonic::Status::unavailable("down")))
                } else {
                    Ok(c)
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 3);
    }
}
