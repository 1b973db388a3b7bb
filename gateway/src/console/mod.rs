//! The web console at `/console`: one page, its script and its style,
//! embedded in the binary (no build step, nothing fetched from elsewhere).
//! The page reads only what any client may: the EC2 API (DescribeVolumes,
//! DescribeSnapshots), signed in the browser with SigV4 (WebCrypto) using
//! keys the user enters and the browser keeps, and the operator endpoints
//! (`/_cairn/nodes`, `/_cairn/health`, `/_cairn/snapshots/{id}/progress`).
//! `/console/config.json` tells it the region, account and zones, none of
//! which is secret.

use crate::ctx::Ctx;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("console.js");
const SIGV4: &str = include_str!("sigv4.js");
const STYLE: &str = include_str!("console.css");

pub fn routes() -> Router<Arc<Ctx>> {
    Router::new()
        .route("/console", get(|| page(INDEX, "text/html; charset=utf-8")))
        .route("/console/", get(|| page(INDEX, "text/html; charset=utf-8")))
        .route("/console/console.js", get(|| page(SCRIPT, "text/javascript; charset=utf-8")))
        .route("/console/sigv4.js", get(|| page(SIGV4, "text/javascript; charset=utf-8")))
        .route("/console/console.css", get(|| page(STYLE, "text/css; charset=utf-8")))
        .route("/console/config.json", get(config))
}

async fn page(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body)
        .into_response()
}

async fn config(State(ctx): State<Arc<Ctx>>) -> Json<serde_json::Value> {
    let c = &ctx.config;
    Json(serde_json::json!({
        "region": c.region,
        "account_id": c.account_id,
        "zones": c.availability_zones,
        "replication_factor": c.replication_factor,
    }))
}
