//! One request id across processes. The gateway serves each API request under
//! its id (`x-amzn-requestid`, the one the client sees); every gRPC call made
//! while serving it carries the id as the metadata entry
//! [`REQUEST_ID_HEADER`], and a metadata or chunk node serves that call in a
//! `request` span holding the id. So one id finds a request's log lines in
//! every process (`CAIRN_LOG=info,cairn_proto::trace=debug` adds a line per
//! call served).
//!
//! The id lives in a task-local: work a request hands to a spawned task (a
//! copy job) is not the request's any more and carries no id.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tonic::codegen::http;
use tracing::Instrument;

/// The gRPC metadata key (an HTTP/2 header) holding the request id.
pub const REQUEST_ID_HEADER: &str = "x-cairn-request-id";

/// Longest id passed on; anything longer is not an id this project made.
const MAX_ID_LEN: usize = 128;

tokio::task_local! {
    static REQUEST_ID: Arc<str>;
}

/// Runs `fut` as part of request `id`: its log lines carry the id and its
/// gRPC calls pass it on.
pub async fn in_request<F: Future>(id: impl Into<Arc<str>>, fut: F) -> F::Output {
    let id: Arc<str> = id.into();
    let span = tracing::info_span!("request", request_id = %id);
    REQUEST_ID.scope(id, fut.instrument(span)).await
}

/// Runs `fut` as part of request `id` without a span of its own (for a
/// caller whose spans already carry the id, the gateway's `http` span).
pub async fn passing<F: Future>(id: impl Into<Arc<str>>, fut: F) -> F::Output {
    REQUEST_ID.scope(id.into(), fut).await
}

/// The id of the request being served, if any.
pub fn current() -> Option<Arc<str>> {
    REQUEST_ID.try_with(Arc::clone).ok()
}

/// Client side: adds the current request id to every call on a channel.
#[derive(Clone, Copy, Debug, Default)]
pub struct PassRequestId;

impl tonic::service::Interceptor for PassRequestId {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = current().and_then(|id| id.parse().ok()) {
            req.metadata_mut().insert(REQUEST_ID_HEADER, v);
        }
        Ok(req)
    }
}

/// Every client channel between Cairn processes that serves requests.
pub type Channel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, PassRequestId>;

/// Wraps a transport channel so its calls carry the request id.
pub fn passing_request_id(ch: tonic::transport::Channel) -> Channel {
    tonic::service::interceptor::InterceptedService::new(ch, PassRequestId)
}

/// Server side: serves each call that carries a request id inside
/// [`in_request`]. Added to a tonic server with `Server::builder().layer(..)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestIdLayer;

impl<S> tower::Layer<S> for RequestIdLayer {
    type Service = RequestIdService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestIdService { inner }
    }
}

#[derive(Clone, Debug)]
pub struct RequestIdService<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, B> tower::Service<http::Request<B>> for RequestIdService<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let id = req
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= MAX_ID_LEN)
            .map(Arc::<str>::from);
        let path = req.uri().path().to_string();
        let fut = self.inner.call(req);
        match id {
            None => Box::pin(fut),
            Some(id) => Box::pin(in_request(id, async move {
                let start = Instant::now();
                let out = fut.await;
                tracing::debug!(rpc = %path, elapsed_us = start.elapsed().as_micros() as u64, "served");
                out
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    #[tokio::test]
    async fn the_id_travels_only_inside_its_request() {
        let outside = PassRequestId.call(tonic::Request::new(())).unwrap();
        assert!(outside.metadata().get(REQUEST_ID_HEADER).is_none());
        let inside = in_request("4f1c-id", async {
            assert_eq!(current().as_deref(), Some("4f1c-id"));
            PassRequestId.call(tonic::Request::new(())).unwrap()
        })
        .await;
        assert_eq!(inside.metadata().get(REQUEST_ID_HEADER).unwrap(), "4f1c-id");
        assert!(current().is_none());
    }

    #[tokio::test]
    async fn a_server_call_runs_under_the_id_it_was_sent() {
        use tower::{Layer, Service, ServiceExt};
        let svc = tower::service_fn(|_req: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(current().map(|s| s.to_string()))
        });
        let mut svc = RequestIdLayer.layer(svc);
        let req = http::Request::builder().header(REQUEST_ID_HEADER, "abc").body(()).unwrap();
        let got = svc.ready().await.unwrap().call(req).await.unwrap();
        assert_eq!(got.as_deref(), Some("abc"));
        let bare = http::Request::builder().body(()).unwrap();
        assert_eq!(svc.ready().await.unwrap().call(bare).await.unwrap(), None);
    }
}
