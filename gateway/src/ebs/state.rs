//! What the EBS handlers share ([`Ebs`]: the gateway context, the
//! authenticator, token keys, staging clients, the length of a `Timeout`
//! minute) and the checks every operation starts with: who the caller is,
//! and whether a snapshot id names a snapshot the caller may use.

use super::error::{EbsError, Invalid};
use super::staging::StagingClients;
use super::tokens::Tokens;
use crate::ctx::Ctx;
use crate::http::auth::{AuthError, Caller, Presented};
use crate::retry::write_retrying;
use cairn_core::accounts::ClusterSecret;
use cairn_core::command::DIRECT_VOLUME_ID;
use cairn_core::command::{Command, CommandOutput};
use cairn_core::records::RECORD_VERSION;
use cairn_core::records::{Snapshot, SnapshotState};
use cairn_core::SnapshotId;
use cairn_proto::MetaClientError;
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

/// Length of one `Timeout` minute. Tests shorten it with
/// `CAIRN_EBS_TIMEOUT_MINUTE_MS` so that the inactivity timeout (at least
/// 10 minutes by the model) can be observed.
pub fn timeout_minute() -> Duration {
    std::env::var("CAIRN_EBS_TIMEOUT_MINUTE_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(60))
}

/// What the EBS handlers share.
pub struct Ebs {
    pub ctx: Arc<Ctx>,
    /// Loaded on first use ([`Ebs::tokens`]).
    tokens: OnceCell<Tokens>,
    pub staging: StagingClients,
    pub minute: Duration,
}

impl Ebs {
    pub fn new(ctx: Arc<Ctx>) -> Arc<Ebs> {
        Arc::new(Ebs {
            staging: StagingClients::new(ctx.nodes.tls().cloned()),
            ctx,
            tokens: OnceCell::new(),
            minute: timeout_minute(),
        })
    }
}

/// The cluster secret that keys block and page tokens.
pub const TOKEN_SECRET: &str = "ebs-tokens";

impl Ebs {
    /// The token key: the cluster secret [`TOKEN_SECRET`] in the metadata
    /// group, which the first gateway to need it sets to a random value
    /// (proposing it again is harmless: the first value stays). The write
    /// is retried while the group is briefly unavailable, as other writes are.
    pub async fn tokens(&self) -> Result<Tokens, EbsError> {
        let load = || async {
            let proposed = ClusterSecret {
                version: RECORD_VERSION,
                name: TOKEN_SECRET.to_string(),
                value: rand::thread_rng().gen::<[u8; 32]>().to_vec(),
            };
            match write_retrying(&self.ctx, &Command::EnsureSecret(proposed)).await? {
                Ok(CommandOutput::Secret(s)) => Ok(Tokens::new(&s.value)),
                Ok(other) => Err(EbsError::Internal(format!("unexpected answer {other:?}"))),
                Err(e) => Err(EbsError::from(e)),
            }
        };
        self.tokens.get_or_try_init(load).await.cloned()
    }
}

/// A snapshot written through these APIs (no volume backs it).
pub fn is_direct(s: &Snapshot) -> bool {
    s.volume_id.as_str() == DIRECT_VOLUME_ID
}

/// The caller of a request, authenticated for service `ebs`. Refused
/// credentials are the model's `AccessDeniedException` with AWS's message;
/// keys that cannot be read now are a retryable error.
pub async fn authenticate(ebs: &Ebs, req: &Presented<'_>) -> Result<Caller, EbsError> {
    ebs.ctx.auth.authenticate(req, "ebs").await.map_err(|e| match e {
        AuthError::Unavailable(m) => EbsError::from(MetaClientError::Unavailable(m)),
        other => EbsError::AccessDenied(other.to_string()),
    })
}

/// Parses a snapshot id of a request: a malformed one is a
/// ValidationException, one of the model's shape that Cairn never issues
/// does not exist.
pub fn snapshot_id(s: &str) -> Result<SnapshotId, EbsError> {
    if let Some(id) = SnapshotId::parse(s) {
        return Ok(id);
    }
    let model_shape = s.strip_prefix("snap-").is_some_and(|h| {
        !h.is_empty() && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if model_shape && s.len() <= 64 {
        Err(EbsError::SnapshotNotFound(s.to_string()))
    } else {
        Err(EbsError::invalid(Invalid::SnapshotId, format!("The snapshot ID '{s}' is not valid.")))
    }
}

/// The caller's snapshot `id`, to write: another account's is AccessDenied
/// (`UNAUTHORIZED_ACCOUNT`, even when shared with the caller), an Outpost
/// local snapshot too (the EBS direct APIs serve regional snapshots only).
pub async fn own_snapshot(ebs: &Ebs, caller: &Caller, id: &str) -> Result<Snapshot, EbsError> {
    let s = regional_snapshot(ebs, id).await?;
    if s.owner != caller.account_id {
        return Err(EbsError::AccessDenied(format!(
            "The snapshot '{}' belongs to another account.",
            s.id
        )));
    }
    Ok(s)
}

async fn regional_snapshot(ebs: &Ebs, id: &str) -> Result<Snapshot, EbsError> {
    let id = snapshot_id(id)?;
    let s =
        ebs.ctx.snapshot(&id).await?.ok_or_else(|| EbsError::SnapshotNotFound(id.to_string()))?;
    if s.outpost.is_some() {
        return Err(EbsError::AccessDenied(format!(
            "The snapshot '{id}' is an Outpost local snapshot; the EBS direct APIs do not serve those."
        )));
    }
    Ok(s)
}

/// A completed snapshot `id` the caller owns or that is shared with it (with
/// its account or with everyone), for reading.
pub async fn readable(ebs: &Ebs, caller: &Caller, id: &str) -> Result<Snapshot, EbsError> {
    let s = regional_snapshot(ebs, id).await?;
    if s.owner != caller.account_id {
        let shared = ebs.ctx.sharing(&s.id).await?;
        if !shared.is_some_and(|sh| sh.grants(&caller.account_id)) {
            return Err(EbsError::AccessDenied(format!(
                "The snapshot '{}' belongs to another account and is not shared with yours.",
                s.id
            )));
        }
    }
    match (s.state, s.manifest_root) {
        (SnapshotState::Completed, Some(_)) => Ok(s),
        _ => Err(EbsError::invalid(
            Invalid::SnapshotId,
            format!(
                "The snapshot '{}' is {}; only completed snapshots can be read.",
                s.id,
                s.state.as_str()
            ),
        )),
    }
}

/// [`readable`], and not in the archive tier unless restored: listing its
/// blocks (which mints the block tokens GetSnapshotBlock needs) reads its
/// manifest from the chunk nodes, which an archived snapshot has left.
pub async fn listable(ebs: &Ebs, caller: &Caller, id: &str) -> Result<Snapshot, EbsError> {
    let s = readable(ebs, caller, id).await?;
    if ebs.ctx.tierings_of(vec![s.id.clone()]).await?.get(&s.id).is_some_and(|t| !t.readable()) {
        return Err(EbsError::invalid(
            Invalid::SnapshotId,
            format!(
                "The snapshot '{}' is in the archive tier; restore it (RestoreSnapshotTier) before reading it.",
                s.id
            ),
        ));
    }
    Ok(s)
}

/// Seconds since the epoch, as rest-json timestamps are sent.
pub fn epoch_secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::error::AwsError;

    #[test]
    fn snapshot_ids() {
        assert!(snapshot_id("snap-0123456789abcdef0").is_ok());
        assert_eq!(snapshot_id("snap-0123").unwrap_err().code(), "ResourceNotFoundException");
        let e = snapshot_id("vol-0123456789abcdef0").unwrap_err();
        assert_eq!((e.code(), e.reason()), ("ValidationException", Some("INVALID_SNAPSHOT_ID")));
        assert_eq!(snapshot_id("snap-XYZ").unwrap_err().code(), "ValidationException");
    }
}
