//! Prometheus metrics of one process, served on the admin port
//! (`--admin-port`, `GET /metrics`): every gRPC request it served by
//! method and status, with its latency; lookups and their hops;
//! stabilization rounds; records and bytes stored; anti-entropy traffic.
//!
//! Requests are counted by a tower layer around the whole gRPC server
//! ([`GrpcMetricsLayer`]): it reads the status from the response headers
//! (an error answered at once) or from the trailers at the end of the body.

use pin_project_lite::pin_project;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `Service/Method`, e.g. `Api/Put`.
    pub method: String,
    /// The gRPC status name, e.g. `OK`, `UNAVAILABLE`.
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: String,
}

/// One process's metrics.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<MethodLabels, Histogram>,
    pub lookup_hops: Histogram,
    pub stabilize_rounds: Counter,
    pub anti_entropy_bytes: Counter,
    pub anti_entropy_records: Counter,
    pub records: Gauge,
    pub stored_bytes: Gauge,
    pub hints: Gauge,
    pub members_joined: Gauge,
    /// The last membership changes, for the dashboard.
    pub events: crate::dashboard::Events,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("chordal");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "gRPC requests served, by method and status",
            requests.clone(),
        );
        let request_seconds = Family::<MethodLabels, Histogram>::new_with_constructor(|| {
            // 100 µs to about 13 s.
            Histogram::new(exponential_buckets(0.0001, 2.0, 18))
        });
        registry.register(
            "request_duration_seconds",
            "Time to answer a gRPC request (for a stream, until it ends)",
            request_seconds.clone(),
        );
        let lookup_hops =
            Histogram::new([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 16.0, 32.0]);
        registry.register(
            "lookup_hops",
            "Processes asked by each lookup this process ran",
            lookup_hops.clone(),
        );
        let stabilize_rounds = Counter::default();
        registry.register(
            "stabilize_rounds",
            "Stabilization rounds run by this process's members",
            stabilize_rounds.clone(),
        );
        let anti_entropy_bytes = Counter::default();
        registry.register(
            "anti_entropy_bytes",
            "Bytes of anti-entropy requests and answers of rounds this process drove",
            anti_entropy_bytes.clone(),
        );
        let anti_entropy_records = Counter::default();
        registry.register(
            "anti_entropy_records",
            "Records anti-entropy rounds this process drove sent or received",
            anti_entropy_records.clone(),
        );
        let records = Gauge::default();
        registry.register(
            "records",
            "Records stored, tombstones included",
            records.clone(),
        );
        let stored_bytes = Gauge::default();
        registry.register(
            "stored_bytes",
            "Bytes of live data files in this process's RocksDB database",
            stored_bytes.clone(),
        );
        let hints = Gauge::default();
        registry.register(
            "hints",
            "Writes held for replicas that could not be reached",
            hints.clone(),
        );
        let members_joined = Gauge::default();
        registry.register(
            "members_joined",
            "This process's members that are in the ring",
            members_joined.clone(),
        );
        Metrics {
            registry,
            requests,
            request_seconds,
            lookup_hops,
            stabilize_rounds,
            anti_entropy_bytes,
            anti_entropy_records,
            records,
            stored_bytes,
            hints,
            members_joined,
            events: crate::dashboard::Events::default(),
        }
    }

    /// The metrics in Prometheus' text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }

    fn finished(&self, method: &str, code: &str, started: Instant) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_string(),
                code: code.to_string(),
            })
            .inc();
        self.request_seconds
            .get_or_create(&MethodLabels {
                method: method.to_string(),
            })
            .observe(started.elapsed().as_secs_f64());
    }
}

/// Serves the admin port on `listener` until `shutdown`: `GET /metrics`
/// (Prometheus' text format, the gauges read afresh for every scrape) and
/// the dashboard ([`crate::dashboard`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    data: Arc<crate::data::Data>,
    advertise: String,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    use axum::routing::get;
    let (metrics_for_pages, data_for_pages) = (metrics.clone(), data.clone());
    let scrape = move || {
        let (metrics, data) = (metrics.clone(), data.clone());
        async move {
            metrics.records.set(data.store().tree().root().count as i64);
            metrics.hints.set(data.hints_held() as i64);
            metrics
                .stored_bytes
                .set(data.store().engine().stored_bytes() as i64);
            metrics.members_joined.set(data.members_joined() as i64);
            (
                [(
                    http::header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                metrics.encode(),
            )
        }
    };
    let app = axum::Router::new()
        .route("/metrics", get(scrape))
        .merge(crate::dashboard::routes(
            metrics_for_pages,
            data_for_pages,
            advertise,
        ));
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::warn!("the admin port stopped: {error}");
    }
}

/// The methods counted by name; any other path counts as `other`, so that
/// a client cannot grow the metrics by inventing paths.
const KNOWN_METHODS: &[(&str, &[&str])] = &[
    (
        "Api",
        &[
            "Lookup", "Describe", "Put", "Get", "Delete", "Repair", "Watch", "Relay",
        ],
    ),
    (
        "Data",
        &[
            "Write",
            "Read",
            "Fetch",
            "Absorb",
            "Replicate",
            "Sync",
            "Forget",
        ],
    ),
    ("Ring", &["FindStep", "GetState", "Notify", "Leaving"]),
    ("Health", &["Check", "Watch"]),
];

/// `/chordal.v1.Api/Put` as `Api/Put`; health checks as `Health/Check`;
/// anything else as `other`.
fn method_of(path: &str) -> String {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or_default();
    let method = parts.next().unwrap_or_default();
    let service = service.rsplit('.').next().unwrap_or(service);
    let known = KNOWN_METHODS
        .iter()
        .any(|(s, methods)| *s == service && methods.contains(&method));
    if known {
        format!("{service}/{method}")
    } else {
        "other".into()
    }
}

/// The name of a gRPC status code.
pub fn code_name(code: &str) -> &'static str {
    match code.trim() {
        "0" => "OK",
        "1" => "CANCELLED",
        "2" => "UNKNOWN",
        "3" => "INVALID_ARGUMENT",
        "4" => "DEADLINE_EXCEEDED",
        "5" => "NOT_FOUND",
        "6" => "ALREADY_EXISTS",
        "7" => "PERMISSION_DENIED",
        "8" => "RESOURCE_EXHAUSTED",
        "9" => "FAILED_PRECONDITION",
        "10" => "ABORTED",
        "11" => "OUT_OF_RANGE",
        "12" => "UNIMPLEMENTED",
        "13" => "INTERNAL",
        "14" => "UNAVAILABLE",
        "15" => "DATA_LOSS",
        "16" => "UNAUTHENTICATED",
        _ => "OTHER",
    }
}

/// Counts every request of the service it wraps in [`Metrics`].
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    metrics: Arc<Metrics>,
}

impl GrpcMetricsLayer {
    pub fn new(metrics: Arc<Metrics>) -> GrpcMetricsLayer {
        GrpcMetricsLayer { metrics }
    }
}

impl<S> tower_layer::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, R> tower_service::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<CountedBody<R>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = method_of(request.uri().path());
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            // A status in the headers: answered at once, no trailers.
            let early = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .map(code_name);
            let pending = match early {
                Some(code) => {
                    metrics.finished(&method, code, started);
                    None
                }
                None => Some(Pending {
                    metrics,
                    method,
                    started,
                    code: None,
                }),
            };
            Ok(response.map(|body| CountedBody { body, pending }))
        })
    }
}

/// What is left to count when the body ends: counted when dropped, with
/// the status the trailers gave, or as cancelled when the body was
/// dropped before them (the client went away).
struct Pending {
    metrics: Arc<Metrics>,
    method: String,
    started: Instant,
    code: Option<&'static str>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let code = self.code.unwrap_or("CANCELLED");
        self.metrics.finished(&self.method, code, self.started);
    }
}

pin_project! {
    /// A response body that counts its request when its trailers pass.
    pub struct CountedBody<B> {
        #[pin]
        body: B,
        pending: Option<Pending>,
    }
}

impl<B: http_body::Body> http_body::Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        let code = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame.trailers_ref().map(|trailers| {
                trailers
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .map_or("OK", code_name)
            }),
            Poll::Ready(Some(Err(_))) => Some("INTERNAL"),
            // The end without trailers.
            Poll::Ready(None) => Some("UNKNOWN"),
            Poll::Pending => None,
        };
        if let Some(code) = code {
            // Counted as it is dropped, here.
            if let Some(mut pending) = this.pending.take() {
                pending.code = Some(code);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_and_codes_get_bounded_names() {
        assert_eq!(method_of("/chordal.v1.Api/Put"), "Api/Put");
        assert_eq!(method_of("/grpc.health.v1.Health/Check"), "Health/Check");
        assert_eq!(method_of("/nonsense"), "other");
        // Invented paths, even in a real service, share one label.
        assert_eq!(method_of("/chordal.v1.Api/Invented1"), "other");
        assert_eq!(method_of(&format!("/a/{}", "x".repeat(100))), "other");
        assert_eq!(code_name("14"), "UNAVAILABLE");
        assert_eq!(code_name("99"), "OTHER");
    }

    #[test]
    fn the_text_format_names_every_family() {
        let metrics = Metrics::new();
        metrics.finished("Api/Put", "OK", Instant::now());
        metrics.lookup_hops.observe(2.0);
        let text = metrics.encode();
        for name in [
            "chordal_requests_total{method=\"Api/Put\",code=\"OK\"} 1",
            "chordal_request_duration_seconds_count{method=\"Api/Put\"} 1",
            "chordal_lookup_hops_count 1",
            "chordal_stabilize_rounds_total",
            "chordal_anti_entropy_bytes_total",
            "chordal_records",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
