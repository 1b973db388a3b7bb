//! The EBS direct APIs (rest-json under `/snapshots`, botocore's `ebs`
//! 2019-11-02 model): write snapshots block by block from outside
//! (StartSnapshot, PutSnapshotBlock, CompleteSnapshot) and read any completed
//! regional snapshot back (ListSnapshotBlocks, GetSnapshotBlock,
//! ListChangedBlocks).
//!
//! Shape of the front: a pure [`router`], one module per concern of the
//! operations ([`start`], [`write`], [`seal`], [`read`]), one error type
//! ([`error::EbsError`]) that renders the rest-json error.
//!
//! Where things live. The snapshot record is in the metadata group
//! (`Command::StartSnapshot`, volume id `vol-ffffffff` as on AWS). Blocks are
//! chunks under their BLAKE3 id at RF on the regional chunk nodes, like every
//! other snapshot's. The pending block map is in staging logs on chunk nodes
//! (see `chunk-node/src/staging.rs`), never in Raft; CompleteSnapshot seals
//! it into a paged manifest on top of the parent's, and the record then
//! holds only the root, so EC2 CreateVolume restores it like any snapshot.

pub mod checksum;
pub mod chunks;
pub mod error;
pub mod manifest;
pub mod read;
pub mod router;
pub mod seal;
pub mod staging;
pub mod start;
pub mod tokens;
pub mod write;

use crate::ctx::Ctx;
use crate::http::auth::{request_scope, Authenticator, Caller};
use crate::http::error::AwsError;
use crate::http::request_id::request_id;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use cairn_core::command::DIRECT_VOLUME_ID;
use cairn_core::records::{Snapshot, SnapshotState};
use cairn_core::SnapshotId;
use error::{EbsError, Invalid};
use router::{route, EbsRequest};
use staging::StagingClients;
use std::sync::Arc;
use std::time::Duration;
use tokens::Tokens;

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
    auth: Authenticator,
    pub tokens: Tokens,
    pub staging: StagingClients,
    pub minute: Duration,
}

impl Ebs {
    pub fn new(ctx: Arc<Ctx>) -> Arc<Ebs> {
        let auth = Authenticator::DevAnyKey {
            account_id: ctx.config.account_id.clone(),
            region: ctx.config.region.clone(),
        };
        let tokens = Tokens::from_config(&ctx.config);
        Arc::new(Ebs {
            ctx,
            auth,
            tokens,
            staging: StagingClients::default(),
            minute: timeout_minute(),
        })
    }
}

/// The `/snapshots` routes, to merge into the gateway's router.
pub fn routes(ctx: Arc<Ctx>) -> Router<Arc<Ctx>> {
    let ebs = Ebs::new(ctx);
    Router::new()
        .route("/snapshots", any(endpoint))
        .route("/snapshots/{*rest}", any(endpoint))
        .with_state(ebs)
}

/// Starts the background work: the sweeper that times out idle snapshots
/// and resumes seals a previous gateway left unfinished.
pub fn spawn_background(ctx: &Arc<Ctx>) {
    seal::spawn_sweeper(Ebs::new(ctx.clone()));
}

/// True when a request is for the EBS direct APIs: its path, or its SigV4
/// scope's service (`ebs`), says so.
pub fn is_ebs_request(headers: &HeaderMap, uri: &Uri) -> bool {
    router::is_ebs_path(uri.path())
        || request_scope(headers, uri.query()).is_ok_and(|s| s.service == "ebs")
}

/// A snapshot written through these APIs (no volume backs it).
pub fn is_direct(s: &Snapshot) -> bool {
    s.volume_id.as_str() == DIRECT_VOLUME_ID
}

fn authenticate(ebs: &Ebs, headers: &HeaderMap, uri: &Uri) -> Result<Caller, EbsError> {
    request_scope(headers, uri.query())
        .and_then(|s| ebs.auth.authenticate(&s, "ebs"))
        .map_err(|e| EbsError::AccessDenied(e.to_string()))
}

async fn endpoint(
    State(ebs): State<Arc<Ebs>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let rid = request_id(&headers);
    match serve(&ebs, &method, &uri, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.respond(&rid),
    }
}

async fn serve(
    ebs: &Arc<Ebs>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, EbsError> {
    let caller = authenticate(ebs, headers, uri)?;
    let req = route(method, uri.path(), uri.query())?;
    tracing::debug!(operation = req.operation(), "ebs request");
    match req {
        EbsRequest::StartSnapshot => start::start(ebs, &caller, &body).await,
        EbsRequest::PutSnapshotBlock { snapshot, index } => {
            write::put(ebs, &caller, &snapshot, index, headers, body).await
        }
        EbsRequest::CompleteSnapshot { snapshot } => {
            write::complete(ebs, &caller, &snapshot, headers).await
        }
        EbsRequest::GetSnapshotBlock { snapshot, index, block_token } => {
            read::get_block(ebs, &caller, &snapshot, index, &block_token).await
        }
        EbsRequest::ListSnapshotBlocks { snapshot, paging } => {
            read::list_blocks(ebs, &caller, &snapshot, &paging).await
        }
        EbsRequest::ListChangedBlocks { first, second, paging } => {
            read::list_changed(ebs, &caller, first.as_deref(), &second, &paging).await
        }
    }
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

/// The caller's snapshot `id`: another account's is AccessDenied, an Outpost
/// local snapshot too (the EBS direct APIs serve regional snapshots only).
pub async fn own_snapshot(ebs: &Ebs, caller: &Caller, id: &str) -> Result<Snapshot, EbsError> {
    let id = snapshot_id(id)?;
    let s =
        ebs.ctx.snapshot(&id).await?.ok_or_else(|| EbsError::SnapshotNotFound(id.to_string()))?;
    if s.owner != caller.account_id {
        return Err(EbsError::AccessDenied(format!(
            "The snapshot '{id}' belongs to another account."
        )));
    }
    if s.outpost.is_some() {
        return Err(EbsError::AccessDenied(format!(
            "The snapshot '{id}' is an Outpost local snapshot; the EBS direct APIs do not serve those."
        )));
    }
    Ok(s)
}

/// The caller's completed snapshot `id`, for reading.
pub async fn readable(ebs: &Ebs, caller: &Caller, id: &str) -> Result<Snapshot, EbsError> {
    let s = own_snapshot(ebs, caller, id).await?;
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

/// Seconds since the epoch, as rest-json timestamps are sent.
pub fn epoch_secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_ids() {
        assert!(snapshot_id("snap-0123456789abcdef0").is_ok());
        assert_eq!(snapshot_id("snap-0123").unwrap_err().code(), "ResourceNotFoundException");
        let e = snapshot_id("vol-0123456789abcdef0").unwrap_err();
        assert_eq!((e.code(), e.reason()), ("ValidationException", Some("INVALID_SNAPSHOT_ID")));
        assert_eq!(snapshot_id("snap-XYZ").unwrap_err().code(), "ValidationException");
    }

    #[test]
    fn ebs_requests_by_path_or_scope() {
        let mut h = HeaderMap::new();
        assert!(is_ebs_request(&h, &"/snapshots/x/blocks".parse().unwrap()));
        assert!(!is_ebs_request(&h, &"/other".parse().unwrap()));
        h.insert(
            axum::http::header::AUTHORIZATION,
            "AWS4-HMAC-SHA256 Credential=K/20260101/cairn-1/ebs/aws4_request, SignedHeaders=host, Signature=x"
                .parse()
                .unwrap(),
        );
        assert!(is_ebs_request(&h, &"/other".parse().unwrap()));
    }
}
