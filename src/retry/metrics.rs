//! The metrics of retries and hedging: `upstream_attempts_total{kind,result}` (every call to the
//! dependency, first attempts included, so amplification = attempts / first attempts),
//! `retry_budget_exhausted_total` (a retry or hedge wanted but refused by the budget) and
//! `retry_budget_remaining` (tokens left). Handles are resolved once, at start-up.

use prometheus::{Gauge, IntCounter, IntCounterVec, Opts};

use crate::metrics::Metrics;

/// The `kind` label: why an attempt was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttemptKind {
    First,
    Retry,
    Hedge,
}

impl AttemptKind {
    const ALL: [AttemptKind; 3] = [AttemptKind::First, AttemptKind::Retry, AttemptKind::Hedge];

    fn label(self) -> &'static str {
        match self {
            AttemptKind::First => "first",
            AttemptKind::Retry => "retry",
            AttemptKind::Hedge => "hedge",
        }
    }
}

/// The `result` label of an attempt: how the call ended, or `Cancelled` for the loser of a hedge
/// race (and an attempt whose caller went away).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttemptResult {
    Ok,
    Error,
    Timeout,
    Transport,
    Cancelled,
}

impl AttemptResult {
    const ALL: [AttemptResult; 5] = [
        AttemptResult::Ok,
        AttemptResult::Error,
        AttemptResult::Timeout,
        AttemptResult::Transport,
        AttemptResult::Cancelled,
    ];

    fn label(self) -> &'static str {
        match self {
            AttemptResult::Ok => "ok",
            AttemptResult::Error => "error",
            AttemptResult::Timeout => "timeout",
            AttemptResult::Transport => "transport",
            AttemptResult::Cancelled => "cancelled",
        }
    }
}

pub(crate) struct RetryMetrics {
    /// [kind][result], in `AttemptKind::ALL` and `AttemptResult::ALL` order.
    attempts: [[IntCounter; 5]; 3],
    exhausted: IntCounter,
    remaining: Gauge,
}

impl RetryMetrics {
    pub(crate) fn register(metrics: &Metrics) -> Result<Self, prometheus::Error> {
        let attempts = metrics.register(IntCounterVec::new(
            Opts::new(
                "upstream_attempts_total",
                "Calls to the upstream by kind (first, retry, hedge) and result (cancelled: a hedge race's loser)",
            ),
            &["kind", "result"],
        )?)?;
        let attempts = AttemptKind::ALL.map(|kind| {
            AttemptResult::ALL
                .map(|result| attempts.with_label_values(&[kind.label(), result.label()]))
        });
        Ok(Self {
            attempts,
            exhausted: metrics.register(IntCounter::new(
                "retry_budget_exhausted_total",
                "Retries and hedges wanted but refused because the retry budget was spent",
            )?)?,
            remaining: metrics.register(Gauge::new(
                "retry_budget_remaining",
                "Retry tokens left in the budget (retries or hedges allowed now)",
            )?)?,
        })
    }

    /// Counts one attempt.
    pub(crate) fn attempt(&self, kind: AttemptKind, result: AttemptResult) {
        self.attempts[kind as usize][result as usize].inc();
    }

    pub(crate) fn exhausted(&self) {
        self.exhausted.inc();
    }

    pub(crate) fn remaining(&self, tokens: f64) {
        self.remaining.set(tokens);
    }
}
