//! Every gRPC request this process serves, counted by method and status
//! with its latency, by a tower layer around the whole server
//! ([`GrpcMetricsLayer`]): it reads the status from the response headers
//! (an error answered at once) or from the trailers at the end of the
//! body. The admin port (`ops::metrics`) exports the counts.

use pin_project_lite::pin_project;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
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

/// Requests served, by method and status, and their latencies.
#[derive(Clone, Debug)]
pub struct RequestStats {
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<MethodLabels, Histogram>,
}

impl Default for RequestStats {
    fn default() -> RequestStats {
        RequestStats {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(|| {
                // 100 µs to about 13 s.
                Histogram::new(exponential_buckets(0.0001, 2.0, 18))
            }),
        }
    }
}

impl RequestStats {
    /// Counts one request of `method` answered with `code`.
    pub fn finished(&self, method: &str, code: &str, started: Instant) {
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

/// Counts every request of the service it wraps in [`RequestStats`].
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    metrics: Arc<RequestStats>,
}

impl GrpcMetricsLayer {
    pub fn new(metrics: Arc<RequestStats>) -> GrpcMetricsLayer {
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
    metrics: Arc<RequestStats>,
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
                None => Some(Uncounted {
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
struct Uncounted {
    metrics: Arc<RequestStats>,
    method: String,
    started: Instant,
    code: Option<&'static str>,
}

impl Drop for Uncounted {
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
        pending: Option<Uncounted>,
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
}
