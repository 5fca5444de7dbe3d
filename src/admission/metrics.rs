//! Admission's metrics: decisions by path, priority and decision; permits in flight and given
//! back; the ceilings in force; the backlog's length; the adaptive limiter's latency averages.
//! Label values come from [`Priority`] and [`Decision`]. The counters a request touches are
//! resolved once, at start-up, so counting needs no label lookup.
//!
//! Every shed is also counted by reason (`admission_shed_total{reason}`).
//!
//! In shadow mode (`admission.enforce = false`) a shed is not counted as one: it goes to
//! `admission_shadow_total{reason}`, and the requests that run only because of shadow mode are
//! `admission_shadow_inflight` (neither series exists otherwise).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};

use super::machine::{Limits, Priority, Reason};
use crate::metrics::Metrics;
use crate::shadow::Switch;

/// The `decision` label of `admission_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
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
    /// Shadow mode (`admission.enforce = false`, or `POST /admin/shadow`) and its counts.
    shadow: Arc<Switch<Shadow>>,
}

/// What shadow mode counts instead of sheds.
pub(crate) struct Shadow {
    /// `admission_shadow_total{reason}`, in the order of [`Reason::ALL`].
    reasons: [IntCounter; 4],
    /// `admission_shadow_inflight`.
    pub(crate) inflight: IntGauge,
    /// Would-be sheds per path (for the offered load), as `resolved.decisions`' paths.
    by_path: Vec<(&'static str, AtomicU64)>,
}

/// `admission_requests_total` per path, priority and decision (in the order of `ALL`), and
/// `admission_released_total` per priority.
struct Resolved {
    decisions: Vec<(&'static str, [[IntCounter; 2]; 3])>,
    released: [IntCounter; 3],
    /// `admission_shed_total{reason}`, in the order of [`Reason::ALL`].
    shed: [IntCounter; 4],
}

impl AdmissionMetrics {
    /// Registers them, with a zero series for every decision on each of `paths`.
    /// `enforce: false` (shadow mode) registers the shadow series too.
    pub(crate) fn register(
        metrics: &Metrics,
        paths: &[&'static str],
        enforce: bool,
    ) -> Result<Self, prometheus::Error> {
        let (registry, owned_paths) = (metrics.clone(), paths.to_vec());
        let shadow = Switch::new(
            !enforce,
            Box::new(move || {
                let reasons = registry.register(IntCounterVec::new(
                    Opts::new(
                        "admission_shadow_total",
                        "Shadow mode (admission.enforce = false): requests admission would have shed, by reason; they ran",
                    ),
                    &["reason"],
                )?)?;
                Ok(Shadow {
                    reasons: Reason::ALL.map(|r| reasons.with_label_values(&[r.as_str()])),
                    inflight: registry.register(IntGauge::new(
                        "admission_shadow_inflight",
                        "Shadow mode: requests in flight that admission would have shed (admission_inflight + this = all in flight)",
                    )?)?,
                    by_path: owned_paths.iter().map(|p| (*p, AtomicU64::new(0))).collect(),
                })
            }),
        )?;
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
        let shed = metrics.register(IntCounterVec::new(
            Opts::new(
                "admission_shed_total",
                "Requests admission shed (answered 429), by reason: capacity, tenant_share, tenant_quota, queue_timeout",
            ),
            &["reason"],
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
            shed: Reason::ALL.map(|r| shed.with_label_values(&[r.as_str()])),
        });
        Ok(Self {
            requests,
            resolved,
            shadow,
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

    /// Whether sheds are enforced (else shadow mode).
    pub(crate) fn enforced(&self) -> bool {
        !self.shadow.is_on()
    }

    /// Shadow mode's switch (for `POST /admin/shadow` and the shadow permits).
    pub(crate) fn shadow_switch(&self) -> Arc<Switch<Shadow>> {
        self.shadow.clone()
    }

    /// Counts one admission.
    pub(crate) fn admitted(&self, path: &str, priority: Priority) {
        self.count(path, priority, Decision::Admitted);
    }

    /// Counts one refusal, with its reason; in shadow mode as a would-be shed.
    pub(crate) fn refused(&self, path: &str, priority: Priority, reason: Reason) {
        if self.shadow.is_on() {
            if let Some(shadow) = self.shadow.series() {
                shadow.reasons[reason.index()].inc();
                if let Some((_, n)) = shadow.by_path.iter().find(|(p, _)| *p == path) {
                    n.fetch_add(1, Ordering::Relaxed);
                }
            }
            return;
        }
        self.resolved.shed[reason.index()].inc();
        self.count(path, priority, Decision::Shed);
    }

    /// `admission_requests_total{path,priority,decision}` + 1.
    fn count(&self, path: &str, priority: Priority, decision: Decision) {
        match self.resolved.decisions.iter().find(|(p, _)| *p == path) {
            Some((_, by)) => by[priority.index()][decision.index()].inc(),
            None => self
                .requests
                .with_label_values(&[path, priority.as_str(), decision.label()])
                .inc(),
        }
    }

    /// Requests to `path` decided so far (admitted + shed, every priority, and in shadow mode the
    /// would-be sheds): the offered load.
    pub(crate) fn decided_total(&self, path: &str) -> u64 {
        let shadow = self.shadow.series().map_or(0, |s| {
            s.by_path
                .iter()
                .filter(|(p, _)| *p == path)
                .map(|(_, n)| n.load(Ordering::Relaxed))
                .sum()
        });
        shadow
            + self
                .resolved
                .decisions
                .iter()
                .filter(|(p, _)| *p == path)
                .flat_map(|(_, by)| by.iter().flatten())
                .map(IntCounter::get)
                .sum::<u64>()
    }

    pub(crate) fn released(&self, priority: Priority) {
        self.resolved.released[priority.index()].inc();
    }

    /// Requests waiting in the backlog now.
    pub(crate) fn queued_now(&self) -> i64 {
        self.queued.get()
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
