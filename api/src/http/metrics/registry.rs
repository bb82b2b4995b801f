//! The Prometheus registry of one process: HTTP traffic (counted by the `track` middleware)
//! and the job delivery figures `GET /metrics` reads at scrape time.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// Per kind with a due job waiting for a delivery: how long the oldest has waited, and
/// whether a live worker (heard from within `ENGRAM_WORKER_STALE_SECS`, not stopping) claims
/// the kind; with the workers it read (`http::health::delivery_waits`).
pub(crate) type DeliveryWaits = (Vec<(String, Duration, bool)>, Vec<storage::sql::WorkerRecord>);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerLabels {
    worker: String,
    kind: String,
}

pub struct HttpMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, Histogram>,
    in_flight: Gauge,
    oldest_due_age: Family<KindLabels, Gauge<f64, AtomicU64>>,
    consumer_alive: Family<ConsumerLabels, Gauge>,
    consumer_restarts: Family<ConsumerLabels, Gauge>,
}

impl HttpMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("engram");
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        let in_flight = Gauge::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time to produce a response head",
            durations.clone(),
        );
        registry.register("http_requests_in_flight", "HTTP requests being handled", in_flight.clone());
        let oldest_due_age = Family::<KindLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "jobs_oldest_due_age_seconds",
            "How long the oldest due job of each kind has waited for a worker (0: none waiting)",
            oldest_due_age.clone(),
        );
        let consumer_alive = Family::<ConsumerLabels, Gauge>::default();
        registry.register(
            "job_consumer_alive",
            "1 while the worker's consumer of the kind runs, 0 while it is being restarted",
            consumer_alive.clone(),
        );
        let consumer_restarts = Family::<ConsumerLabels, Gauge>::default();
        registry.register(
            "job_consumer_restarts",
            "Times the worker restarted its consumer of the kind since it started",
            consumer_restarts.clone(),
        );
        registry.register(
            "build",
            "The running Engram build",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        Self { registry, requests, durations, in_flight, oldest_due_age, consumer_alive, consumer_restarts }
    }

    /// Sets the job delivery figures to what a scrape read: every kind `kinds` runs (0 when
    /// nothing waits), how long each kind's oldest due job has waited, and the workers.
    pub(crate) fn record_job_delivery<'a>(
        &self,
        kinds: impl Iterator<Item = &'a str>,
        (waits, workers): DeliveryWaits,
    ) {
        self.oldest_due_age.clear();
        for kind in kinds {
            self.oldest_due_age.get_or_create(&KindLabels { kind: kind.to_string() }).set(0.0);
        }
        for (kind, waited, _) in waits {
            self.oldest_due_age.get_or_create(&KindLabels { kind }).set(waited.as_secs_f64());
        }
        self.consumer_alive.clear();
        self.consumer_restarts.clear();
        for worker in workers {
            for consumer in worker.consumers {
                let labels = ConsumerLabels { worker: worker.id.clone(), kind: consumer.kind };
                self.consumer_alive.get_or_create(&labels).set(i64::from(consumer.alive));
                self.consumer_restarts
                    .get_or_create(&labels)
                    .set(consumer.restarts.min(i64::MAX as u64) as i64);
            }
        }
    }

    pub(crate) fn render(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts and times every request by method, route template and status.
pub async fn track(State(metrics): State<Arc<HttpMetrics>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = request.method().to_string();
    metrics.in_flight.inc();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.in_flight.dec();
    let route_labels = RouteLabels { method: method.clone(), route: route.clone() };
    metrics.durations.get_or_create(&route_labels).observe(started.elapsed().as_secs_f64());
    metrics
        .requests
        .get_or_create(&RequestLabels { method, route, status: response.status().as_u16() })
        .inc();
    response
}
