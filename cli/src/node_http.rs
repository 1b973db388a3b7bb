//! The small HTTP listener beside a metadata or chunk node: `GET /metrics`
//! (Prometheus text), `/healthz` (the process answers) and `/readyz` (it can
//! serve: a metadata member knows a leader; a chunk node's store is open).
//! The gateway serves the same three paths on its own HTTP listener.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What a node reports.
pub trait Observe: Send + Sync + 'static {
    fn metrics(&self) -> String;
    fn ready(&self) -> bool;
}

impl Observe for cairn_metadata_node::metrics::Observer {
    fn metrics(&self) -> String {
        self.metrics_text()
    }
    fn ready(&self) -> bool {
        self.is_ready()
    }
}

impl Observe for cairn_chunk_node::metrics::Observer {
    fn metrics(&self) -> String {
        self.metrics_text()
    }
    fn ready(&self) -> bool {
        self.is_ready()
    }
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `obs` on `listener` until `stop` turns true.
pub fn serve(
    listener: TcpListener,
    obs: Arc<dyn Observe>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let metrics = obs.clone();
    let ready = obs;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    if ready.ready() {
                        (StatusCode::OK, "ready\n").into_response()
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move { ([(header::CONTENT_TYPE, OPENMETRICS)], m.metrics()).into_response() }
            }),
        )
        .fallback(|| async {
            (StatusCode::NOT_FOUND, "no such path\n").into_response() as Response
        });
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::warn!(error = %e, "HTTP listener failed");
        }
    })
}
