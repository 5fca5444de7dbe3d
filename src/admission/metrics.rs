//! Admission's metrics: decisions by path, priority and decision; permits in flight and given
//! back; the ceilings in force; the backlog's length; the adaptive limiter's latency averages.
//! Label values come from [`Priority`] and [`Decision`]. The counters a request touches are
//! resolved once, at start-up, so counting needs no label lookup.

use std::sync::Arc;

use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};

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

    fn index(self) -> usize {
        match self {
            Decision::Admitted => 0,
            Decision::Shed => 1,
        }
    }

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
    /// The series of `requests` the hot path counts, and `admission_released_total` (permits given
    /// back, by priority: admitted = released + in flight, always), resolved once.
    resolved: Arc<Resolved>,
}

/// `admission_requests_total` per path, priority and decision (in the order of `ALL`), and
/// `admission_released_total` per priority.
struct Resolved {
    decisions: Vec<(&'static str, [[IntCounter; 2]; 3])>,
    released: [IntCounter; 3],
}

impl AdmissionMetrics {
    /// Registers them, with a zero series for every decision on each of `paths`.
    pub(crate) fn register(
        metrics: &Metrics,
        paths: &[&'static str],
    ) -> Result<Self, prometheus::Error> {
        let requests = metrics.register(IntCounterVec::new(
            Opts::new(
                "admission_requests_total",
                "Admission decisions, by path, priority and decision (admitted or shed)",
            ),
            &["path", "priority", "decision"],
        )?)?;
        let released = metrics.register(IntCounterVec::new(
            Opts::new(
                "admission_released_total",
                "Admission permits given back (request finished, failed, timed out or abandoned), by priority",
            ),
            &["priority"],
        )?)?;
        // Every series exists from the first scrape, so dashboards and rate() see zeros, not gaps.
        let resolved = Arc::new(Resolved {
            decisions: paths
                .iter()
                .map(|path| {
                    let by = |p: Priority| {
                        Decision::ALL
                            .map(|d| requests.with_label_values(&[path, p.as_str(), d.label()]))
                    };
                    (*path, Priority::ALL.map(by))
                })
                .collect(),
            released: Priority::ALL.map(|p| released.with_label_values(&[p.as_str()])),
        });
        Ok(Self {
            requests,
            resolved,
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
            latency: metrics.register(GaugeVec::new(
                Opts::new(
                    "admission_latency_seconds",
                    "Upstream latency as the adaptive limiter sees it: short (recent) and long (baseline) averages",
                ),
                &["window"],
            )?)?,
        })
    }

    /// Counts one admission decision.
    pub(crate) fn decided(&self, path: &str, priority: Priority, decision: Decision) {
        match self.resolved.decisions.iter().find(|(p, _)| *p == path) {
            Some((_, by)) => by[priority.index()][decision.index()].inc(),
            None => self
                .requests
                .with_label_values(&[path, priority.as_str(), decision.label()])
                .inc(),
        }
    }

    /// Requests to `path` decided so far (admitted + shed, every priority): the offered load.
    pub(crate) fn decided_total(&self, path: &str) -> u64 {
        self.resolved
            .decisions
            .iter()
            .filter(|(p, _)| *p == path)
            .flat_map(|(_, by)| by.iter().flatten())
            .map(IntCounter::get)
            .sum()
    }

    pub(crate) fn released(&self, priority: Priority) {
        self.resolved.released[priority.index()].inc();
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
