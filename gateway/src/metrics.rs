//! The gateway's Prometheus metrics, served at `GET /metrics` in the text
//! exposition format: requests by API, action, HTTP status and AWS error
//! code, their latency, bytes in and out, and the background workers.
//!
//! Handlers say what a request was by putting an [`ApiCall`] in their
//! answer's extensions; the [`count`] middleware reads it (a request with
//! none, such as a path nobody serves, counts as action `other`). Label
//! values come only from fixed sets (action names, error codes, status
//! codes), never from ids or other caller-chosen text.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use cairn_core::command::Counts;
use cairn_worker::metrics::WorkerMetrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::sync::Arc;
use std::time::Instant;

/// What an answered request was, for the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiCall {
    /// `ec2`, `ebs` or `admin`.
    pub api: &'static str,
    /// The action or operation name (`CreateSnapshot`, `PutSnapshotBlock`).
    pub action: &'static str,
    /// The AWS error code, empty on success.
    pub error: &'static str,
}

impl ApiCall {
    /// Marks `resp` as an answer to `api`/`action`, failed with `error` (or "").
    pub fn tag(
        mut resp: Response,
        api: &'static str,
        action: &'static str,
        error: &'static str,
    ) -> Response {
        resp.extensions_mut().insert(ApiCall { api, action, error });
        resp
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    api: &'static str,
    action: &'static str,
    status: u16,
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    api: &'static str,
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

/// What the copies this gateway finished did, for [`Metrics::copy_done`].
#[derive(Clone, Debug, Default)]
struct CopyCounters {
    completed: Counter,
    read_blocks: Counter,
    sent_chunks: Counter,
}

fn latency_histogram() -> Histogram {
    // 1 ms to about 65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Every metric the gateway exports, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<ActionLabels, Histogram, fn() -> Histogram>,
    received: Family<ActionLabels, Counter>,
    sent: Family<ActionLabels, Counter>,
    workers: WorkerMetrics,
    volumes: Family<StateLabels, Gauge>,
    snapshots: Family<StateLabels, Gauge>,
    copies: CopyCounters,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("cairn_gateway");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "API requests answered, by API, action, HTTP status and AWS error code",
            requests.clone(),
        );
        let duration: Family<ActionLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "request_duration",
            "Time from a request's arrival to its answer, by API and action",
            Unit::Seconds,
            duration.clone(),
        );
        let received = Family::<ActionLabels, Counter>::default();
        registry.register_with_unit(
            "received",
            "Request body bytes received, by API and action",
            Unit::Bytes,
            received.clone(),
        );
        let sent = Family::<ActionLabels, Counter>::default();
        registry.register_with_unit(
            "sent",
            "Answer body bytes sent (as declared by Content-Length), by API and action",
            Unit::Bytes,
            sent.clone(),
        );
        let workers = WorkerMetrics::register(&mut registry);
        let volumes = Family::<StateLabels, Gauge>::default();
        registry.register(
            "cluster_volumes",
            "Volumes in the region by state (as the metadata group counts them at the scrape)",
            volumes.clone(),
        );
        let snapshots = Family::<StateLabels, Gauge>::default();
        registry.register(
            "cluster_snapshots",
            "Snapshots in the region by state (as the metadata group counts them at the scrape)",
            snapshots.clone(),
        );
        let copies = CopyCounters::default();
        registry.register(
            "copies_completed",
            "Snapshot copies this gateway saw complete",
            copies.completed.clone(),
        );
        registry.register(
            "copy_read_blocks",
            "Non-zero blocks the completed copies read (the last attempt of each)",
            copies.read_blocks.clone(),
        );
        registry.register(
            "copy_sent_chunks",
            "Distinct data chunks the completed copies stored anew (replicas not counted); read blocks minus these were deduplicated",
            copies.sent_chunks.clone(),
        );
        Metrics {
            registry,
            requests,
            duration,
            received,
            sent,
            workers,
            volumes,
            snapshots,
            copies,
        }
    }

    /// A copy completed having read `blocks` and stored `chunks` anew.
    pub fn copy_done(&self, blocks: u64, chunks: u64) {
        self.copies.completed.inc();
        self.copies.read_blocks.inc_by(blocks);
        self.copies.sent_chunks.inc_by(chunks);
    }

    fn observe(&self, call: ApiCall, status: u16, secs: f64, bytes_in: u64, bytes_out: u64) {
        let action = ActionLabels { api: call.api, action: call.action };
        self.requests
            .get_or_create(&RequestLabels {
                api: call.api,
                action: call.action,
                status,
                error: call.error,
            })
            .inc();
        self.duration.get_or_create(&action).observe(secs);
        self.received.get_or_create(&action).inc_by(bytes_in);
        self.sent.get_or_create(&action).inc_by(bytes_out);
    }

    /// The text exposition of every metric, workers and (when the metadata
    /// group answered) the region's volumes and snapshots as they are now.
    pub fn render(
        &self,
        workers: &[cairn_worker::WorkerStatus],
        counts: Option<&Counts>,
    ) -> String {
        self.workers.update(workers);
        if let Some(c) = counts {
            for (family, by_state) in [(&self.volumes, &c.volumes), (&self.snapshots, &c.snapshots)]
            {
                family.clear();
                for (state, n) in by_state {
                    family.get_or_create(&StateLabels { state: state.clone() }).set(*n as i64);
                }
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Counts every request the gateway answers (outermost, so refusals of the
/// shared layers count too).
pub async fn count(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let bytes_in = content_length(req.headers());
    let resp = next.run(req).await;
    let call = resp.extensions().get::<ApiCall>().copied().unwrap_or(ApiCall {
        api: "other",
        action: "other",
        error: "",
    });
    let bytes_out = content_length(resp.headers());
    metrics.observe(
        call,
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
        bytes_in,
        bytes_out,
    );
    resp
}

fn content_length(h: &axum::http::HeaderMap) -> u64 {
    h.get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE_VALUE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_action_and_error_code() {
        let m = Metrics::new();
        let ok = ApiCall { api: "ec2", action: "CreateVolume", error: "" };
        let bad = ApiCall { api: "ec2", action: "CreateVolume", error: "InvalidParameterValue" };
        m.observe(ok, 200, 0.003, 120, 900);
        m.observe(ok, 200, 0.004, 120, 900);
        m.observe(bad, 400, 0.001, 100, 300);
        let text = m.render(&[], None);
        assert!(text.contains(
            "cairn_gateway_requests_total{api=\"ec2\",action=\"CreateVolume\",status=\"200\",error=\"\"} 2"
        ), "{text}");
        assert!(text.contains("error=\"InvalidParameterValue\"} 1"), "{text}");
        assert!(text.contains("cairn_gateway_request_duration_seconds_count{api=\"ec2\",action=\"CreateVolume\"} 3"), "{text}");
        assert!(
            text.contains(
                "cairn_gateway_received_bytes_total{api=\"ec2\",action=\"CreateVolume\"} 340"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE cairn_gateway_request_duration_seconds histogram"), "{text}");
    }
}
