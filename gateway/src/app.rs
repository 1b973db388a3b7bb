//! The HTTP application: the routes of both AWS fronts and the operator
//! endpoints, under the tower layers every request goes through.
//!
//! Cross-cutting concerns are layers, outermost first: metrics (every
//! answer counted, see `metrics.rs`), request id
//! (`x-amzn-requestid`, a UUID, echoed as `requestId`/`RequestID`), tracing,
//! panic catching, load shedding over a global concurrency limit
//! (`RequestLimitExceeded`, 503), a request timeout (`Unavailable`, 503), the
//! body size limit (which also buffers the body, for a future SigV4
//! verifier), and on the EC2 route, authentication.

use crate::ctx::Ctx;
use crate::ebs::error::EbsError;
use crate::ec2::error::Ec2Error;
use crate::http::error::{AwsError, LayerFailure};
use crate::http::request_id::{request_id, REQUEST_ID_HEADER};
use crate::{admin, console, ebs, ec2, metrics, node_admin, progress, scrub};
use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use std::time::Duration;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::error::Overloaded;
use tower::timeout::error::Elapsed;
use tower::{BoxError, ServiceBuilder};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

/// The HTTP application with every layer.
pub fn app(ctx: Arc<Ctx>) -> Router {
    let header = HeaderName::from_static(REQUEST_ID_HEADER);
    let max_body = ctx.config.max_body_bytes;
    let layers = ServiceBuilder::new()
        .layer(middleware::from_fn_with_state(ctx.metrics.clone(), metrics::count))
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
        .layer(middleware::from_fn(pass_request_id))
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
        .merge(console::routes())
        .route("/_cairn/health", get(admin::health))
        .route("/healthz", get(admin::alive))
        .route("/readyz", get(admin::health))
        .route("/metrics", get(admin::metrics))
        .route("/_cairn/chunks", get(admin::chunks))
        .route("/_cairn/gc", get(admin::gc_status).post(admin::gc_request))
        .route("/_cairn/scrub", get(scrub::status).post(scrub::request))
        .route("/_cairn/snapshots/{id}/usage", get(admin::usage))
        .route("/_cairn/snapshots/{id}/progress", get(progress::snapshot))
        .route("/_cairn/volumes/{id}/hydration", get(progress::hydration))
        .route("/_cairn/nodes", get(node_admin::list))
        .route("/_cairn/nodes/{id}/volumes", get(node_admin::volumes))
        .route("/_cairn/nodes/{id}/drain", post(node_admin::drain))
        .route("/_cairn/nodes/{id}/remove", post(node_admin::remove))
        .route("/_cairn/repair", get(node_admin::repair_status).post(node_admin::repair_request))
        .fallback(fallback)
        .with_state(ctx)
        .layer(layers)
}

/// Serves the request with its id in scope: the gRPC calls made for it carry
/// the id to the metadata and chunk nodes (`cairn_proto::trace`).
async fn pass_request_id(req: Request, next: Next) -> Response {
    let id = request_id(req.headers());
    cairn_proto::trace::passing(id, next.run(req)).await
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
