//! The one Prometheus registry of a process and every metric of the contract. HTTP metrics come
//! from actix-web-prom, configured so its names and labels are the seed's; the rest are ours.

use actix_web::{HttpResponse, Responder};
use actix_web_prom::{
    ActixMetricsConfiguration, LabelsConfiguration, PrometheusMetrics, PrometheusMetricsBuilder,
};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::admission::Priority;

/// 1 ms … 10 s, for request and upstream latency alike.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The `path` label of requests that matched no route.
pub const UNMATCHED_PATH: &str = "unmatched";

/// Every `upstream_requests_total{result}` value.
pub const UPSTREAM_RESULTS: [&str; 5] = ["ok", "error", "timeout", "transport", "breaker_open"];

/// Handles to every metric this service writes. Cloning shares them.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub upstream_requests: IntCounterVec,
    pub upstream_duration: HistogramVec,
    pub breaker_state: IntGauge,
    /// Failure share of the breaker's sliding window (breaker.mode = failure_rate).
    pub breaker_failure_rate: Gauge,
    /// Slow-call share of the breaker's sliding window.
    pub breaker_slow_call_rate: Gauge,
    pub breaker_transitions: IntCounterVec,
    pub admission_requests: IntCounterVec,
    pub admission_inflight: IntGauge,
    /// Requests waiting in the admission backlog (`admission.queue_size`).
    pub admission_queued: IntGauge,
    pub admission_limit: IntGaugeVec,
    /// The adaptive limiter's latency averages: `window` = short (recent) or long (baseline).
    pub admission_latency: GaugeVec,
    /// Permits given back, by priority: admitted = released + in flight, always.
    pub admission_released: IntCounterVec,
    /// `http_requests_total{status="499"}`. actix-web-prom records a request when its response body
    /// is dropped, so a request whose client went away first is never seen there; this counter adds
    /// those to the same family (see [`ClientClosedCollector`]).
    client_closed: IntCounterVec,
}

impl Metrics {
    /// Builds the registry with process metrics, our metrics, and the actix-web-prom middleware
    /// that records `http_requests_total` and `http_request_duration_seconds` into it.
    pub fn new() -> Result<(Self, PrometheusMetrics), prometheus::Error> {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;

        let upstream_requests = IntCounterVec::new(
            Opts::new(
                "upstream_requests_total",
                "Calls from /client to the upstream, by result (breaker_open: refused by the breaker)",
            ),
            &["result"],
        )?;
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "upstream_request_duration_seconds",
                "Time spent on the upstream call, by result",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["result"],
        )?;
        let breaker_state = IntGauge::new(
            "circuit_breaker_state",
            "Circuit breaker state: 0 closed, 1 open, 2 half-open",
        )?;
        let breaker_failure_rate = Gauge::new(
            "circuit_breaker_failure_rate",
            "Share of failed calls in the breaker's sliding window (breaker.mode failure_rate; 0 otherwise)",
        )?;
        let breaker_slow_call_rate = Gauge::new(
            "circuit_breaker_slow_call_rate",
            "Share of slow calls in the breaker's sliding window (breaker.mode failure_rate; 0 otherwise)",
        )?;
        let breaker_transitions = IntCounterVec::new(
            Opts::new(
                "circuit_breaker_transitions_total",
                "Circuit breaker transitions, by the state entered",
            ),
            &["to"],
        )?;
        let admission_requests = IntCounterVec::new(
            Opts::new(
                "admission_requests_total",
                "Admission decisions, by path, priority and decision (admitted or shed)",
            ),
            &["path", "priority", "decision"],
        )?;
        let admission_inflight =
            IntGauge::new("admission_inflight", "Admitted requests now in flight")?;
        let admission_queued = IntGauge::new(
            "admission_queued",
            "Requests waiting in the admission backlog for a slot",
        )?;
        let admission_latency = GaugeVec::new(
            Opts::new(
                "admission_latency_seconds",
                "Upstream latency as the adaptive limiter sees it: short (recent) and long (baseline) averages",
            ),
            &["window"],
        )?;
        let admission_released = IntCounterVec::new(
            Opts::new(
                "admission_released_total",
                "Admission permits given back (request finished, failed, timed out or abandoned), by priority",
            ),
            &["priority"],
        )?;
        let admission_limit = IntGaugeVec::new(
            Opts::new(
                "admission_limit",
                "In-flight ceiling now in force, by priority",
            ),
            &["priority"],
        )?;
        let client_closed = IntCounterVec::new(
            Opts::new("http_requests_total", "Total number of HTTP requests"),
            &["method", "path", "status"],
        )?;

        registry.register(Box::new(upstream_requests.clone()))?;
        registry.register(Box::new(upstream_duration.clone()))?;
        registry.register(Box::new(breaker_state.clone()))?;
        registry.register(Box::new(breaker_failure_rate.clone()))?;
        registry.register(Box::new(breaker_slow_call_rate.clone()))?;
        registry.register(Box::new(breaker_transitions.clone()))?;
        registry.register(Box::new(admission_requests.clone()))?;
        registry.register(Box::new(admission_inflight.clone()))?;
        registry.register(Box::new(admission_queued.clone()))?;
        registry.register(Box::new(admission_limit.clone()))?;
        registry.register(Box::new(admission_released.clone()))?;
        registry.register(Box::new(admission_latency.clone()))?;
        registry.register(Box::new(ClientClosedCollector(client_closed.clone())))?;

        // Series exist from the first scrape, so dashboards and rate() see zeros, not gaps.
        for result in UPSTREAM_RESULTS {
            upstream_requests.with_label_values(&[result]);
        }
        for to in ["open", "half_open", "closed"] {
            breaker_transitions.with_label_values(&[to]);
        }
        for p in Priority::ALL {
            admission_released.with_label_values(&[p.as_str()]);
        }
        for path in ["/client", "/work"] {
            for p in Priority::ALL {
                for decision in ["admitted", "shed"] {
                    admission_requests.with_label_values(&[path, p.as_str(), decision]);
                }
            }
        }

        let http = PrometheusMetricsBuilder::new("")
            .registry(registry.clone())
            .buckets(LATENCY_BUCKETS)
            .mask_unmatched_patterns(UNMATCHED_PATH)
            .metrics_configuration(
                ActixMetricsConfiguration::default()
                    .labels(LabelsConfiguration::default().endpoint("path"))
                    .http_requests_duration_seconds_name("http_request_duration_seconds"),
            )
            .build()
            .map_err(|e| prometheus::Error::Msg(e.to_string()))?;

        Ok((
            Self {
                registry,
                upstream_requests,
                upstream_duration,
                breaker_state,
                breaker_failure_rate,
                breaker_slow_call_rate,
                breaker_transitions,
                admission_requests,
                admission_inflight,
                admission_queued,
                admission_limit,
                admission_released,
                admission_latency,
                client_closed,
            },
            http,
        ))
    }

    /// Counts a request whose client went away before it was answered.
    pub fn client_closed(&self, method: &str, path: &str) {
        self.client_closed
            .with_label_values(&[method, path, "499"])
            .inc();
    }

    /// The registry in Prometheus text format.
    pub fn encode(&self) -> Result<String, prometheus::Error> {
        TextEncoder::new().encode_to_string(&self.registry.gather())
    }
}

/// Adds the 499 series to `http_requests_total`. It declares no descriptor, since the family's
/// descriptor belongs to actix-web-prom's counter; `Registry::gather` merges families by name.
struct ClientClosedCollector(IntCounterVec);

impl Collector for ClientClosedCollector {
    fn desc(&self) -> Vec<&Desc> {
        Vec::new()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.0.collect()
    }
}

/// Counts the request as 499 unless [`ClientClosedGuard::answered`] is called first: a handler
/// dropped mid-request means the client went away.
pub struct ClientClosedGuard<'a> {
    metrics: &'a Metrics,
    method: &'static str,
    path: &'static str,
    answered: bool,
}

impl<'a> ClientClosedGuard<'a> {
    pub fn new(metrics: &'a Metrics, method: &'static str, path: &'static str) -> Self {
        Self {
            metrics,
            method,
            path,
            answered: false,
        }
    }

    pub fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for ClientClosedGuard<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.metrics.client_closed(self.method, self.path);
        }
    }
}

/// `GET /metrics`.
pub async fn serve(metrics: actix_web::web::Data<Metrics>) -> impl Responder {
    match metrics.encode() {
        Ok(body) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(body),
        Err(e) => {
            log::error!("encoding metrics failed: {e}");
            HttpResponse::ServiceUnavailable()
                .json(serde_json::json!({"error": "metrics unavailable"}))
        }
    }
}
