//! The api's own metrics: `upstream_requests_total{result}` and
//! `upstream_request_duration_seconds{result}`, one sample per `/client` that reached the breaker.
//! The counters are resolved once, at start-up, so counting needs no label lookup.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};

use crate::metrics::{Metrics, LATENCY_BUCKETS};

/// The `result` label: how a call that reached the breaker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpstreamResult {
    Ok,
    /// The dependency answered a non-2xx status.
    Error,
    Timeout,
    /// Refused, reset, invalid HTTP, body too large or cut short.
    Transport,
    /// Refused by the breaker; no call was made.
    BreakerOpen,
    /// Refused by the throttling policy's draw; no call was made (`breaker.mode = "throttle"`).
    Throttled,
}

impl UpstreamResult {
    /// The results whose series exist from the first scrape, whatever the policy.
    const ALWAYS: [UpstreamResult; 5] = [
        UpstreamResult::Ok,
        UpstreamResult::Error,
        UpstreamResult::Timeout,
        UpstreamResult::Transport,
        UpstreamResult::BreakerOpen,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            UpstreamResult::Ok => "ok",
            UpstreamResult::Error => "error",
            UpstreamResult::Timeout => "timeout",
            UpstreamResult::Transport => "transport",
            UpstreamResult::BreakerOpen => "breaker_open",
            UpstreamResult::Throttled => "throttled",
        }
    }
}

/// The counters, resolved once per [`UpstreamResult`] (in declaration order); the histogram's
/// series are resolved at their first sample, and appear then, as they always have.
pub(crate) struct UpstreamMetrics {
    requests: [IntCounter; 6],
    duration: HistogramVec,
    /// Shared with the autoscaling signal, which reads their counts and sums.
    durations: Arc<[OnceLock<Histogram>; 6]>,
}

impl UpstreamMetrics {
    /// `throttling`: the `throttled` series exists (from the first scrape) only under the
    /// throttling policy; otherwise its counter is registered nowhere and never counts.
    pub(crate) fn register(metrics: &Metrics, throttling: bool) -> Result<Self, prometheus::Error> {
        let requests = metrics.register(IntCounterVec::new(
            Opts::new(
                "upstream_requests_total",
                "Calls from /client to the upstream, by result (breaker_open: refused by the breaker)",
            ),
            &["result"],
        )?)?;
        let duration = metrics.register(HistogramVec::new(
            HistogramOpts::new(
                "upstream_request_duration_seconds",
                "Time spent on the upstream call, by result",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["result"],
        )?)?;
        // Every counter series exists from the first scrape: zeros, not gaps.
        let [ok, error, timeout, transport, breaker_open] =
            UpstreamResult::ALWAYS.map(|r| requests.with_label_values(&[r.label()]));
        let throttled = if throttling {
            requests.with_label_values(&[UpstreamResult::Throttled.label()])
        } else {
            IntCounter::new("upstream_requests_throttled_unused", "not registered")?
        };
        let requests = [ok, error, timeout, transport, breaker_open, throttled];
        Ok(Self {
            requests,
            duration,
            durations: Default::default(),
        })
    }

    /// Reads the calls that ended with a result so far and their total seconds (zeros before
    /// the first): the histogram's own count and sum, shared, not a copy.
    pub(crate) fn durations(&self) -> impl Fn(UpstreamResult) -> (u64, f64) + Send + 'static {
        let durations = self.durations.clone();
        move |result| {
            durations[result as usize]
                .get()
                .map_or((0, 0.0), |h| (h.get_sample_count(), h.get_sample_sum()))
        }
    }

    /// Counts one call; `elapsed` is the time spent on it (none when the breaker refused it).
    pub(crate) fn record(&self, result: UpstreamResult, elapsed: Option<Duration>) {
        self.requests[result as usize].inc();
        if let Some(elapsed) = elapsed {
            self.durations[result as usize]
                .get_or_init(|| self.duration.with_label_values(&[result.label()]))
                .observe(elapsed.as_secs_f64());
        }
    }
}
