//! The status page's data: a ring of per-second samples of the counters the service already keeps
//! ([`History`], five minutes), taken by [`sample_every_second`] off the request path, and the
//! page itself (`GET /`, its script and style, embedded; [`page`]).
//!
//! A sample is the difference of the registry's cumulative series over one second, so the page's
//! rates are exactly what `/metrics` counted over the same second; latency percentiles come from
//! the histogram's buckets over that second, as `histogram_quantile` would compute them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::proto::{MetricFamily, MetricType};
use serde::Serialize;

use crate::metrics::Metrics;

/// Seconds of history kept.
pub(crate) const HISTORY_SECONDS: usize = 300;

/// One second of the service, as the page draws it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub(crate) struct Sample {
    /// Unix time (seconds) at the end of the second.
    pub t: f64,
    /// `/client` requests answered in that second, by outcome (from `http_requests_total`):
    /// 200, 429, 503 (breaker open, throttled or shutting down), 504, 502, anything else.
    pub ok: f64,
    pub shed: f64,
    pub breaker_open: f64,
    pub timeout: f64,
    pub error: f64,
    pub other: f64,
    /// Calls to the dependency (`upstream_attempts_total` by kind).
    pub calls_first: f64,
    pub calls_retry: f64,
    pub calls_hedge: f64,
    /// The dependency's latency over the second, ms (`None`: no call finished).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Retries and hedges refused by the budget; tokens left.
    pub budget_exhausted: f64,
    pub budget_left: Option<f64>,
    /// In flight and the ceiling of high priority (the whole pool), at the end of the second.
    pub inflight: f64,
    pub limit: f64,
    /// 0 closed, 1 open, 2 half-open (`circuit_breaker_state`).
    pub breaker: f64,
    /// Adaptive admission: the recent and the baseline latency it judges by, ms.
    pub latency_short_ms: Option<f64>,
    pub latency_long_ms: Option<f64>,
}

/// The ring of samples, newest last.
#[derive(Debug, Default)]
pub(crate) struct History {
    ring: Mutex<VecDeque<Sample>>,
}

impl History {
    fn push(&self, sample: Sample) {
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        if ring.len() == HISTORY_SECONDS {
            ring.pop_front();
        }
        ring.push_back(sample);
    }

    /// The samples after unix time `since` (all with 0).
    pub(crate) fn since(&self, since: f64) -> Vec<Sample> {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.iter().filter(|s| s.t > since).cloned().collect()
    }
}

/// The cumulative values a sample is the difference of.
#[derive(Debug, Clone, Default, PartialEq)]
struct Totals {
    by_status: [f64; 6],
    calls: [f64; 3],
    exhausted: f64,
    /// `upstream_request_duration_seconds` summed over results: (upper bound, cumulative count).
    buckets: Vec<(f64, f64)>,
}

/// Reads what a sample needs from the registry's families: the totals, and the gauges as they are.
fn read(families: &[MetricFamily]) -> (Totals, Sample) {
    let mut totals = Totals::default();
    let mut now = Sample::default();
    let label = |m: &prometheus::proto::Metric, name: &str| -> String {
        m.get_label()
            .iter()
            .find(|l| l.name() == name)
            .map(|l| l.value().to_string())
            .unwrap_or_default()
    };
    for family in families {
        let metrics = family.get_metric();
        match family.name() {
            "http_requests_total" => {
                for m in metrics.iter().filter(|m| label(m, "path") == "/client") {
                    let i = match label(m, "status").as_str() {
                        "200" => 0,
                        "429" => 1,
                        "503" => 2,
                        "504" => 3,
                        "502" => 4,
                        _ => 5,
                    };
                    totals.by_status[i] += m.get_counter().get_value();
                }
            }
            "upstream_attempts_total" => {
                for m in metrics {
                    let i = match label(m, "kind").as_str() {
                        "first" => 0,
                        "retry" => 1,
                        _ => 2,
                    };
                    totals.calls[i] += m.get_counter().get_value();
                }
            }
            "retry_budget_exhausted_total" => {
                totals.exhausted = metrics.iter().map(|m| m.get_counter().get_value()).sum();
            }
            "retry_budget_remaining" => {
                now.budget_left = metrics.first().map(|m| m.get_gauge().get_value());
            }
            "upstream_request_duration_seconds"
                if family.get_field_type() == MetricType::HISTOGRAM =>
            {
                for m in metrics {
                    for (i, b) in m.get_histogram().get_bucket().iter().enumerate() {
                        let count = b.cumulative_count() as f64;
                        match totals.buckets.get_mut(i) {
                            Some(slot) => slot.1 += count,
                            None => totals.buckets.push((b.upper_bound(), count)),
                        }
                    }
                }
            }
            "admission_inflight" => {
                now.inflight = metrics.first().map_or(0.0, |m| m.get_gauge().get_value());
            }
            "admission_limit" => {
                for m in metrics.iter().filter(|m| label(m, "priority") == "high") {
                    now.limit = m.get_gauge().get_value();
                }
            }
            "admission_latency_seconds" => {
                for m in metrics {
                    let ms = Some(m.get_gauge().get_value() * 1000.0);
                    match label(m, "window").as_str() {
                        "short" => now.latency_short_ms = ms,
                        "long" => now.latency_long_ms = ms,
                        _ => {}
                    }
                }
            }
            "circuit_breaker_state" => {
                now.breaker = metrics.first().map_or(0.0, |m| m.get_gauge().get_value());
            }
            _ => {}
        }
    }
    (totals, now)
}

/// The `q` quantile of the calls counted between two readings of cumulative buckets, interpolated
/// within its bucket as `histogram_quantile` does; `None` without calls.
fn quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let counts: Vec<(f64, f64)> = after
        .iter()
        .enumerate()
        .map(|(i, &(le, c))| (le, c - before.get(i).map_or(0.0, |b| b.1)))
        .collect();
    let total = counts.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, cumulative) in &counts {
        if cumulative >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let inside = cumulative - below;
            let share = if inside > 0.0 {
                (rank - below) / inside
            } else {
                1.0
            };
            return Some(lower + (le - lower) * share);
        }
        (lower, below) = (le, cumulative);
    }
    Some(lower)
}

/// The sample for the second between two readings.
fn sample(t: f64, before: &Totals, after: &Totals, now: Sample) -> Sample {
    let d = |a: f64, b: f64| (a - b).max(0.0);
    let ms = |q| quantile(&before.buckets, &after.buckets, q).map(|s| s * 1000.0);
    Sample {
        t,
        ok: d(after.by_status[0], before.by_status[0]),
        shed: d(after.by_status[1], before.by_status[1]),
        breaker_open: d(after.by_status[2], before.by_status[2]),
        timeout: d(after.by_status[3], before.by_status[3]),
        error: d(after.by_status[4], before.by_status[4]),
        other: d(after.by_status[5], before.by_status[5]),
        calls_first: d(after.calls[0], before.calls[0]),
        calls_retry: d(after.calls[1], before.calls[1]),
        calls_hedge: d(after.calls[2], before.calls[2]),
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        budget_exhausted: d(after.exhausted, before.exhausted),
        ..now
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Takes a sample every second, for as long as the runtime runs: one read of the registry per
/// second, nothing on the request path.
pub(crate) async fn sample_every_second(metrics: Metrics, history: Arc<History>) {
    let mut tick = actix_web::rt::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    // The counters start at zero with the process, so the first sample counts everything since
    // (a first reading would lose what was counted before it).
    let mut last = Totals::default();
    loop {
        tick.tick().await;
        let (totals, now) = read(&metrics.gather());
        history.push(sample(unix_now(), &last, &totals, now));
        last = totals;
    }
}

/// The page and its assets, embedded: (path, content type, body).
pub(crate) const PAGE: [(&str, &str, &str); 4] = [
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("page/index.html"),
    ),
    (
        "/status.js",
        "text/javascript; charset=utf-8",
        include_str!("page/status.js"),
    ),
    (
        "/status.css",
        "text/css; charset=utf-8",
        include_str!("page/status.css"),
    ),
    (
        "/favicon.svg",
        "image/svg+xml",
        include_str!("page/favicon.svg"),
    ),
];

/// The page's policy: its own script, style and data only; nothing inline, nothing from elsewhere.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quantile_is_interpolated_within_its_bucket_over_the_second_only() {
        let before = [
            (0.01, 10.0),
            (0.1, 10.0),
            (1.0, 10.0),
            (f64::INFINITY, 10.0),
        ];
        // In the second: 50 calls under 10 ms, 50 between 10 and 100 ms.
        let after = [
            (0.01, 60.0),
            (0.1, 110.0),
            (1.0, 110.0),
            (f64::INFINITY, 110.0),
        ];
        let p50 = quantile(&before, &after, 0.5).unwrap_or_default();
        assert!((p50 - 0.01).abs() < 1e-9, "{p50}");
        let p99 = quantile(&before, &after, 0.99).unwrap_or_default();
        assert!((p99 - (0.01 + 0.09 * 0.98)).abs() < 1e-9, "{p99}");
        assert_eq!(quantile(&after, &after, 0.5), None);
        assert_eq!(quantile(&[], &[], 0.5), None);
    }

    #[test]
    fn the_ring_keeps_five_minutes() {
        let h = History::default();
        for t in 0..400 {
            h.push(Sample {
                t: f64::from(t),
                ..Sample::default()
            });
        }
        let all = h.since(0.0);
        assert_eq!(all.len(), HISTORY_SECONDS);
        assert_eq!(all.first().map(|s| s.t), Some(100.0));
        assert_eq!(h.since(398.0).len(), 1);
    }
}
