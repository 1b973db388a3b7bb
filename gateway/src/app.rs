//! The gateway process: the axum app and its tower layers, the NBD front
//! door, and the lifecycle (`start`, `shutdown`).
//!
//! Cross-cutting concerns are layers, outermost first: request id
//! (`x-amzn-requestid`, a UUID, echoed as `requestId`/`RequestID`), tracing,
//! panic catching, load shedding over a global concurrency limit
//! (`RequestLimitExceeded`, 503), a request timeout (`Unavailable`, 503), the
//! body size limit (which also buffers the body, for a future SigV4
//! verifier), and on the EC2 route, authentication.

use crate::config::{ConfigError, GatewayConfig};
use crate::ctx::Ctx;
use crate::ebs::error::EbsError;
use crate::ec2::error::Ec2Error;
use crate::http::error::{AwsError, LayerFailure};
use crate::http::request_id::{request_id, REQUEST_ID_HEADER};
use crate::jobs::{self, Jobs};
use crate::nodes::NodeClients;
use crate::{admin, ebs, ec2};
use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use cairn_proto::MetadataClient;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::error::Overloaded;
use tower::timeout::error::Elapsed;
use tower::{BoxError, ServiceBuilder};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

/// A running gateway. Dropping it without [`Gateway::shutdown`] leaves its
/// tasks running until the runtime stops.
pub struct Gateway {
    http_addr: SocketAddr,
    nbd_addr: SocketAddr,
    ctx: Arc<Ctx>,
    stop: watch::Sender<bool>,
    http: JoinHandle<std::io::Result<()>>,
    nbd: JoinHandle<std::io::Result<()>>,
}

impl Gateway {
    /// Serves the EC2 Query API on `http` and the NBD front door on `nbd`, and
    /// resumes the jobs earlier gateways left unfinished.
    pub async fn start(
        config: GatewayConfig,
        http: TcpListener,
        nbd: TcpListener,
    ) -> Result<Gateway, GatewayError> {
        config.validate()?;
        let http_addr = http.local_addr()?;
        let nbd_addr = nbd.local_addr()?;
        let meta = Arc::new(
            MetadataClient::new(config.metadata.clone())
                .with_deadline(Duration::from_millis(config.metadata_deadline_ms)),
        );
        let ctx =
            Arc::new(Ctx { config, meta, nodes: NodeClients::default(), jobs: Jobs::default() });
        let (stop, stopped) = watch::channel(false);
        let signal = move |mut rx: watch::Receiver<bool>| async move {
            // An error means the sender is gone, which is a stop too.
            let _ = rx.wait_for(|s| *s).await;
        };

        let app = app(ctx.clone());
        let http_signal = signal(stopped.clone());
        let http = tokio::spawn(async move {
            axum::serve(http, app.into_make_service()).with_graceful_shutdown(http_signal).await
        });
        let nbd = spawn_nbd(nbd, ctx.meta.clone(), signal(stopped));
        jobs::spawn_resume(&ctx);
        ebs::spawn_background(&ctx);
        tracing::info!(%http_addr, %nbd_addr, region = %ctx.config.region, "gateway started");
        Ok(Gateway { http_addr, nbd_addr, ctx, stop, http, nbd })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn nbd_addr(&self) -> SocketAddr {
        self.nbd_addr
    }

    /// Stops serving and stops background jobs (they resume on the next start).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.ctx.jobs.shutdown().await;
        for (name, task) in [("http", self.http), ("nbd", self.nbd)] {
            let abort = task.abort_handle();
            match tokio::time::timeout(Duration::from_secs(10), task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => {
                    tracing::warn!(server = name, error = %e, "server ended with an error")
                }
                Ok(Err(e)) => tracing::warn!(server = name, error = %e, "server task failed"),
                Err(_) => {
                    tracing::warn!(server = name, "server did not stop within 10s; aborting");
                    abort.abort();
                }
            }
        }
        tracing::info!(http_addr = %self.http_addr, "gateway stopped");
    }
}

/// Serves the NBD front door until `shutdown`.
fn spawn_nbd(
    listener: TcpListener,
    meta: Arc<MetadataClient>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> JoinHandle<std::io::Result<()>> {
    tokio::spawn(crate::nbd_door::serve(listener, meta, shutdown))
}

/// The HTTP application with every layer.
pub fn app(ctx: Arc<Ctx>) -> Router {
    let header = HeaderName::from_static(REQUEST_ID_HEADER);
    let max_body = ctx.config.max_body_bytes;
    let layers = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(header.clone(), MakeRequestUuid))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            tracing::info_span!(
                "http",
                method = %req.method(),
                path = %req.uri().path(),
                request_id = %request_id(req.headers()),
            )
        }))
        .layer(PropagateRequestIdLayer::new(header))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(HandleErrorLayer::new(service_error))
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::new(ctx.config.max_concurrent_requests))
        .timeout(Duration::from_millis(ctx.config.request_timeout_ms))
        .layer(middleware::from_fn_with_state(max_body, limit_body));
    Router::new()
        .merge(ec2::routes(&ctx))
        // The EBS direct APIs authenticate themselves (scope service `ebs`).
        .merge(ebs::routes(ctx.clone()))
        .route("/_cairn/health", get(admin::health))
        .route("/_cairn/chunks", get(admin::chunks))
        .fallback(fallback)
        .with_state(ctx)
        .layer(layers)
}

/// Errors of the tower layers, answered as the request's front answers them.
async fn service_error(uri: Uri, headers: HeaderMap, err: BoxError) -> Response {
    let failure = if err.is::<Overloaded>() {
        LayerFailure::Overloaded(err.to_string())
    } else if err.is::<Elapsed>() {
        LayerFailure::TimedOut(err.to_string())
    } else {
        LayerFailure::Internal(err.to_string())
    };
    layer_failure(&headers, &uri, failure)
}

/// A failure of the shared layers in the error shape of the front the
/// request is for: the one place that tells the fronts apart.
fn layer_failure(headers: &HeaderMap, uri: &Uri, failure: LayerFailure) -> Response {
    let rid = request_id(headers);
    if ebs::is_ebs_request(headers, uri) {
        EbsError::from(failure).respond(&rid)
    } else {
        Ec2Error::from(failure).respond(&rid)
    }
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("request handler panicked");
    let rid = uuid::Uuid::new_v4().to_string();
    Ec2Error::InternalError("the request could not be served".into()).respond(&rid)
}

/// Unknown paths: a rest-json error for EBS-scoped requests, else plain text.
async fn fallback(headers: HeaderMap, uri: Uri) -> Response {
    if ebs::is_ebs_request(&headers, &uri) {
        let e =
            EbsError::UnknownOperation(format!("No EBS direct operation is at {}.", uri.path()));
        return e.respond(&request_id(&headers));
    }
    (StatusCode::NOT_FOUND, "no such path\n").into_response()
}

/// Refuses bodies over `max` bytes and buffers the rest, so later layers and
/// handlers see a complete body.
async fn limit_body(State(max): State<usize>, req: Request, next: Next) -> Response {
    let rid = request_id(req.headers());
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return layer_failure(req.headers(), req.uri(), LayerFailure::BodyTooLarge(max));
    }
    let (parts, body) = req.into_parts();
    match axum::body::to_bytes(body, max).await {
        Ok(bytes) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        // Found while buffering (no or a wrong declared length): answered as
        // an EC2 error whichever front the request is for.
        Err(e) => {
            let too_large =
                std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
                    e.source()
                })
                .any(|e| e.is::<http_body_util::LengthLimitError>());
            if too_large {
                Ec2Error::RequestTooLarge(max).respond(&rid)
            } else {
                Ec2Error::MalformedQueryString(format!("the request body could not be read: {e}"))
                    .respond(&rid)
            }
        }
    }
}
