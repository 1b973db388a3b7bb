//! The EBS direct APIs (rest-json under `/snapshots`, botocore's `ebs`
//! 2019-11-02 model): write snapshots block by block from outside
//! (StartSnapshot, PutSnapshotBlock, CompleteSnapshot) and read any completed
//! regional snapshot back (ListSnapshotBlocks, GetSnapshotBlock,
//! ListChangedBlocks).
//!
//! Shape of the front: the [`endpoint`] authenticates and dispatches what the
//! pure [`router`] parsed to one module per operation family ([`start`],
//! [`write`], [`seal`], [`read`]), which share [`state`], write and read
//! bytes through [`chunks`] and [`staging`] (whose replicas' block maps
//! [`blockmap`] merges), and fail with one error type ([`error::EbsError`])
//! that renders the rest-json error. The [`sweeper`]
//! worker ends what callers and gateways left pending.
//!
//! Where things live. The snapshot record is in the metadata group
//! (`Command::StartSnapshot`, volume id `vol-ffffffff` as on AWS). Blocks are
//! chunks under their BLAKE3 id at RF on the regional chunk nodes, like every
//! other snapshot's. The pending block map is in staging logs on chunk nodes
//! (see `chunk-node/src/staging/`), never in Raft; CompleteSnapshot seals
//! it into a paged manifest on top of the parent's, and the record then
//! holds only the root, so EC2 CreateVolume restores it like any snapshot.

pub mod blockmap;
pub mod checksum;
pub mod chunks;
pub mod endpoint;
pub mod error;
pub mod manifest;
pub mod read;
pub mod router;
pub mod seal;
pub mod staging;
pub mod start;
pub mod state;
pub mod sweeper;
pub mod tokens;
pub mod write;

use crate::ctx::Ctx;
use crate::http::auth::request_scope;
use axum::http::{HeaderMap, Uri};
use axum::routing::any;
use axum::Router;
use state::Ebs;
use std::sync::Arc;

/// The `/snapshots` routes, to merge into the gateway's router.
pub fn routes(ctx: Arc<Ctx>) -> Router<Arc<Ctx>> {
    let ebs = Ebs::new(ctx);
    Router::new()
        .route("/snapshots", any(endpoint::endpoint))
        .route("/snapshots/{*rest}", any(endpoint::endpoint))
        .with_state(ebs)
}

/// Starts the background work among the gateway's workers: the sweeper
/// that times out idle snapshots and resumes seals a previous gateway left
/// unfinished.
pub fn spawn_background(ctx: &Arc<Ctx>) {
    ctx.workers.spawn(sweeper::Sweeper::new(Ebs::new(ctx.clone())));
}

/// True when a request is for the EBS direct APIs: its path, or its SigV4
/// scope's service (`ebs`), says so.
pub fn is_ebs_request(headers: &HeaderMap, uri: &Uri) -> bool {
    router::is_ebs_path(uri.path())
        || request_scope(headers, uri.query()).is_ok_and(|s| s.service == "ebs")
}

#[cfg(test)]
mod tests {
    use super::*;

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
