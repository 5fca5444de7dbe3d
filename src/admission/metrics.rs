//! Admission's metrics: decisions by path, priority and decision; permits in flight and given
//! back; the ceilings in force; the backlog's length; the adaptive limiter's latency averages.
//! Label values come from [`Priority`] and [`Decision`].

use prometheus::{GaugeVec, IntCounterVec, IntGauge, IntGaugeVec, Opts};

use super::machine::{Limits, Priority};
use crate::metrics::Metrics;

/// The `decision` label of `admission_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    Admitted,
    Shed,
}

impl Decision {
    const ALL: [Decision; 2] = [Decision::Admitted, Decision::Shed];

    fn label(self) -> &'static str {
        match self {
            Decision::Admitted => "admitted",
            Decision::Shed => "shed",
        }
    }
}

/// Handles to admission's metrics, shared by the actor and the handles routes hold.
#[derive(Clone)]
pub(crate) struct AdmissionMetrics {
    requests: IntCounterVec,
    inflight: IntGauge,
    /// Requests waiting in the backlog (`admission.queue_size`).
    queued: IntGauge,
    limit: IntGaugeVec,
    /// The adaptive limiter's latency averages: `window` = short (recent) or long (baseline).
    latency: GaugeVec,
    /// Permits given back, by priority: admitted = released + in flight, always.
    released: IntCounterVec,
}

impl AdmissionMetrics {
    /// Registers them, with a zero series for every decision on each of `paths`.
    pub(crate) fn register(
        metrics: &Metrics,
        paths: &[&'static str],
    ) -> Result<Self, prometheus::Error> {
        let this = Self {
            requests: metrics.register(IntCounterVec::new(
                Opts::new(
                    "admission_requests_total",
                    "Admission decisions, by path, priority and decision (admitted or shed)",
                ),
                &["path", "priority", "decision"],
            )?)?,
            inflight: metrics.register(IntGauge::new(
                "admission_inflight",
                "Admitted requests now in flight",
            )?)?,
            queued: metrics.register(IntGauge::new(
                "admission_queued",
                "Requests waiting in the admission backlog for a slot",
            )?)?,
            limit: metrics.register(IntGaugeVec::new(
                Opts::new(
                    "admission_limit",
                    "In-flight ceiling now in force, by priority",
                ),
                &["priority"],
            )?)?,
            released: metrics.register(IntCounterVec::new(
                Opts::new(
                    "admission_released_total",
                    "Admission permits given back (request finished, failed, timed out or abandoned), by priority",
                ),
                &["priority"],
            )?)?,
            latency: metrics.register(GaugeVec::new(
                Opts::new(
                    "admission_latency_seconds",
                    "Upstream latency as the adaptive limiter sees it: short (recent) and long (baseline) averages",
                ),
                &["window"],
            )?)?,
        };
        // Series exist from the first scrape, so dashboards and rate() see zeros, not gaps.
        for p in Priority::ALL {
            this.released.with_label_values(&[p.as_str()]);
            for path in paths {
                for decision in Decision::ALL {
                    this.requests
                        .with_label_values(&[path, p.as_str(), decision.label()]);
                }
            }
        }
        Ok(this)
    }

    /// Counts one admission decision.
    pub(crate) fn decided(&self, path: &str, priority: Priority, decision: Decision) {
        self.requests
            .with_label_values(&[path, priority.as_str(), decision.label()])
            .inc();
    }

    pub(crate) fn released(&self, priority: Priority) {
        self.released.with_label_values(&[priority.as_str()]).inc();
    }

    /// The counts now: admitted and in flight, waiting in the backlog.
    pub(crate) fn counts(&self, inflight: u32, queued: usize) {
        self.inflight.set(i64::from(inflight));
        self.queued.set(i64::try_from(queued).unwrap_or(i64::MAX));
    }

    pub(crate) fn limits(&self, limits: Limits) {
        for p in Priority::ALL {
            self.limit
                .with_label_values(&[p.as_str()])
                .set(i64::from(limits.ceiling(p)));
        }
    }

    /// The adaptive limiter's short (recent) and long (baseline) latency averages, in seconds.
    pub(crate) fn latencies(&self, short: f64, long: f64) {
        for (window, value) in [("short", short), ("long", long)] {
            self.latency.with_label_values(&[window]).set(value);
        }
    }
}
