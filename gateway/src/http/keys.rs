//! Access keys as a gateway checks signatures with them: read from the
//! metadata group, the secret unsealed with the cluster key, and kept for
//! [`KEY_TTL`]. A busy key costs one read every [`KEY_TTL`], an unknown
//! one too (so a flood of made-up keys does not become a flood of reads),
//! and a key revoked anywhere stops working on every gateway within
//! [`KEY_TTL`] plus one read.

use super::scope::AuthError;
use cairn_core::accounts::{ClusterKey, KeyState};
use cairn_core::command::{Query, QueryOutput};
use cairn_proto::MetadataClient;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a looked-up key (or its absence) is trusted.
pub const KEY_TTL: Duration = Duration::from_secs(2);
/// Past this many cached keys the cache starts over (unknown keys are
/// cached too, and anyone can make them up).
const MAX_CACHED: usize = 10_000;

/// An active key: whose it is and its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ActiveKey {
    pub account_id: String,
    pub secret: String,
}

impl std::fmt::Debug for ActiveKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveKey").field("account_id", &self.account_id).finish_non_exhaustive()
    }
}

pub struct KeyRing {
    meta: Arc<MetadataClient>,
    cluster_key: ClusterKey,
    cache: Mutex<HashMap<String, (Instant, Option<ActiveKey>)>>,
}

impl KeyRing {
    pub fn new(meta: Arc<MetadataClient>, cluster_key: ClusterKey) -> Self {
        KeyRing { meta, cluster_key, cache: Mutex::default() }
    }

    fn cached(&self, id: &str) -> Option<Option<ActiveKey>> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(id).filter(|(at, _)| at.elapsed() < KEY_TTL).map(|(_, k)| k.clone())
    }

    /// The active key `id`, `None` when it does not exist or was revoked.
    pub async fn lookup(&self, id: &str) -> Result<Option<ActiveKey>, AuthError> {
        if let Some(k) = self.cached(id) {
            return Ok(k);
        }
        let out = self
            .meta
            .read(&Query::AccessKey(id.to_string()))
            .await
            .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        let key = match out {
            QueryOutput::AccessKey(Some(k)) if k.state == KeyState::Active => {
                let secret = self.cluster_key.unseal(&k.id, &k.sealed_secret).map_err(|e| {
                    // Another cluster key than the one the secret was sealed with.
                    tracing::error!(key = %k.id, error = %e, "cannot unseal an access key");
                    AuthError::Unavailable(format!("access key {} cannot be checked: {e}", k.id))
                })?;
                Some(ActiveKey { account_id: k.account_id, secret })
            }
            QueryOutput::AccessKey(_) => None,
            other => {
                return Err(AuthError::Unavailable(format!(
                    "unexpected metadata answer to an access key lookup: {other:?}"
                )))
            }
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(id.to_string(), (Instant::now(), key.clone()));
        Ok(key)
    }
}
