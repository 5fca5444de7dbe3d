//! The breaker's metrics: `circuit_breaker_state`, `circuit_breaker_transitions_total{to}`, for
//! the failure-rate rule the window's failure and slow-call shares, and for the throttling policy
//! `circuit_breaker_rejection_probability`. Here, and only here, a
//! [`State`] becomes the gauge's value and the `to` label.

use std::time::Instant;

use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, Opts};

use super::machine::State;
use crate::metrics::Metrics;

/// Handles to the breaker's metrics, written only by the `BreakerActor`.
pub(crate) struct BreakerMetrics {
    state: IntGauge,
    /// Failure share of the sliding window (`breaker.mode = failure_rate`; 0 otherwise).
    failure_rate: Gauge,
    /// Slow-call share of the sliding window.
    slow_call_rate: Gauge,
    transitions: IntCounterVec,
    /// `circuit_breaker_rejection_probability`, registered only under the throttling policy.
    rejection_probability: Option<Gauge>,
}

impl BreakerMetrics {
    pub(crate) fn register(metrics: &Metrics, throttling: bool) -> Result<Self, prometheus::Error> {
        let rejection_probability = if throttling {
            Some(metrics.register(Gauge::new(
                "circuit_breaker_rejection_probability",
                "Probability that the throttling policy refuses a call now (breaker.mode throttle)",
            )?)?)
        } else {
            None
        };
        let this = Self {
            state: metrics.register(IntGauge::new(
                "circuit_breaker_state",
                "Circuit breaker state: 0 closed, 1 open, 2 half-open",
            )?)?,
            failure_rate: metrics.register(Gauge::new(
                "circuit_breaker_failure_rate",
                "Share of failed calls in the breaker's sliding window (breaker.mode failure_rate; 0 otherwise)",
            )?)?,
            slow_call_rate: metrics.register(Gauge::new(
                "circuit_breaker_slow_call_rate",
                "Share of slow calls in the breaker's sliding window (breaker.mode failure_rate; 0 otherwise)",
            )?)?,
            transitions: metrics.register(IntCounterVec::new(
                Opts::new(
                    "circuit_breaker_transitions_total",
                    "Circuit breaker transitions, by the state entered",
                ),
                &["to"],
            )?)?,
            rejection_probability,
        };
        // Series exist from the first scrape, so dashboards and rate() see zeros, not gaps.
        let open = State::Open {
            probe_at: Instant::now(),
        };
        for state in [open, State::HalfOpen, State::Closed] {
            this.transitions.with_label_values(&[label(state)]);
        }
        Ok(this)
    }

    /// The state now in force (gauge only).
    pub(crate) fn show(&self, state: State) {
        self.state.set(gauge(state));
    }

    /// A transition into `state`: gauge and counter.
    pub(crate) fn entered(&self, state: State) {
        self.show(state);
        self.transition(state).inc();
    }

    fn transition(&self, state: State) -> IntCounter {
        self.transitions.with_label_values(&[label(state)])
    }

    /// The throttling policy's probability of refusing a call.
    pub(crate) fn rejection_probability(&self, p: f64) {
        if let Some(gauge) = &self.rejection_probability {
            gauge.set(p);
        }
    }

    /// The trip policy's failure and slow-call shares.
    pub(crate) fn rates(&self, (failure_rate, slow_call_rate): (f64, f64)) {
        self.failure_rate.set(failure_rate);
        self.slow_call_rate.set(slow_call_rate);
    }
}

/// The value of the `circuit_breaker_state` gauge.
fn gauge(state: State) -> i64 {
    match state {
        State::Closed => 0,
        State::Open { .. } => 1,
        State::HalfOpen => 2,
    }
}

/// The `to` label of `circuit_breaker_transitions_total` (and the word the log uses).
pub(crate) fn label(state: State) -> &'static str {
    match state {
        State::Closed => "closed",
        State::Open { .. } => "open",
        State::HalfOpen => "half_open",
    }
}
