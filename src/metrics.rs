//! The one Prometheus registry of a process, the HTTP metrics on it and `GET /metrics`.
//!
//! HTTP metrics come from actix-web-prom, configured so that `http_requests_total` and
//! `http_request_duration_seconds` carry `method`, `path` (the route pattern) and `status`. Every
//! component declares and registers its own metrics next to its code (`breaker::metrics`,
//! `admission::metrics`, `api::metrics`, `retry::metrics`) on the registry built here; this module
//! knows none of them.

use actix_web::{HttpResponse, Responder};
use actix_web_prom::{
    ActixMetricsConfiguration, LabelsConfiguration, PrometheusMetrics, PrometheusMetricsBuilder,
};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, Opts, Registry, TextEncoder};

/// 1 ms … 10 s, for request and upstream latency alike.
pub(crate) const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The `path` label of requests that matched no route.
const UNMATCHED_PATH: &str = "unmatched";

/// The registry of a process, and the one HTTP series actix-web-prom cannot see. Cloning shares it.
#[derive(Clone)]
pub struct Metrics {
    /// The service's own series (and actix-web-prom's).
    registry: Registry,
    /// The process metrics (read from /proc at each gather), apart so the status page's
    /// once-a-second sampler does not pay for them; `/metrics` serves both.
    process: Registry,
    /// `http_requests_total{status="499"}`. actix-web-prom records a request when its response body
    /// is dropped, so a request whose client went away first is never seen there; this counter adds
    /// those to the same family (see [`ClientClosedCollector`]).
    client_closed: IntCounterVec,
}

impl Metrics {
    /// Builds the registry with process metrics and the actix-web-prom middleware that records
    /// `http_requests_total` and `http_request_duration_seconds` into it.
    pub(crate) fn new() -> Result<(Self, PrometheusMetrics), prometheus::Error> {
        let registry = Registry::new();
        let process = Registry::new();
        #[cfg(target_os = "linux")]
        process.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let client_closed = IntCounterVec::new(
            Opts::new("http_requests_total", "Total number of HTTP requests"),
            &["method", "path", "status"],
        )?;
        registry.register(Box::new(ClientClosedCollector(client_closed.clone())))?;

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
                process,
                client_closed,
            },
            http,
        ))
    }

    /// Registers one component's metric and hands it back, for the component to keep.
    pub(crate) fn register<C: Collector + Clone + 'static>(
        &self,
        metric: C,
    ) -> Result<C, prometheus::Error> {
        self.registry.register(Box::new(metric.clone()))?;
        Ok(metric)
    }

    /// Counts a request whose client went away before it was answered.
    fn client_closed(&self, method: &str, path: &str) {
        self.client_closed
            .with_label_values(&[method, path, "499"])
            .inc();
    }

    /// The service's own families, as a scrape reads them, without the process metrics (the status
    /// page's sampler).
    pub(crate) fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.registry.gather()
    }

    /// Every family, the process metrics included, in Prometheus text format (sorted by name, as
    /// one registry would).
    fn encode(&self) -> Result<String, prometheus::Error> {
        let mut families = self.registry.gather();
        families.extend(self.process.gather());
        families.sort_by(|a, b| a.name().cmp(b.name()));
        TextEncoder::new().encode_to_string(&families)
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
pub(crate) struct ClientClosedGuard<'a> {
    metrics: &'a Metrics,
    method: &'static str,
    path: &'static str,
    answered: bool,
}

impl<'a> ClientClosedGuard<'a> {
    pub(crate) fn new(metrics: &'a Metrics, method: &'static str, path: &'static str) -> Self {
        Self {
            metrics,
            method,
            path,
            answered: false,
        }
    }

    pub(crate) fn answered(mut self) {
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
pub(crate) async fn serve(metrics: actix_web::web::Data<Metrics>) -> impl Responder {
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
