//! Retries with a budget, backoff with full jitter, and hedged requests for `/client`'s calls to
//! the dependency. Off by default: `retry.max_attempts = 1` and `retry.hedge_after_ms = 0`.
//!
//! A retry is made only if every one of these holds: the attempt's outcome is one `retry.on`
//! names; the budget has a token; the breaker is not open (the retry goes through it like any call,
//! and its outcome counts); the caller's remaining deadline covers the backoff and still leaves at
//! least `timeouts.min_budget_ms` (and 1 ms); and the request still holds its admission slot
//! (retries never take a second one). A hedge is a second attempt sent when the first has not
//! answered after `retry.hedge_after_ms`; the first success wins and the other is cancelled. Hedges
//! spend from the same budget.
//!
//! - [`budget`]: the pure retry budget (Finagle's and linkerd's algorithm); time is an argument.
//! - [`backoff`]: full-jitter exponential backoff, pure.
//! - [`metrics`]: attempts by kind and result, budget exhaustion and balance.
//!
//! The attempts themselves are made by the api (`api::attempts`), which owns the upstream call.

mod backoff;
mod budget;
mod metrics;

use std::sync::Mutex;
use std::time::Instant;

pub(crate) use backoff::full_jitter;
pub(crate) use metrics::{AttemptKind, AttemptResult, RetryMetrics};

pub(crate) use crate::settings::{RetryConfig, RetryOn};

use budget::RetryBudget;

impl RetryConfig {
    /// Whether any attempt beyond the first can happen.
    pub(crate) fn enabled(&self) -> bool {
        self.max_attempts > 1 || self.hedge_after.is_some()
    }
}

/// What the request path holds: the configuration, the budget all workers share, the metrics.
pub(crate) struct Retries {
    pub config: RetryConfig,
    /// A plain mutex: every request deposits, so it must be cheap; the critical section is a few
    /// additions (retries are off by default, and then nothing takes it).
    budget: Mutex<RetryBudget>,
    pub metrics: RetryMetrics,
}

impl Retries {
    /// Retry tokens left now (for `GET /admin/state`).
    pub(crate) fn budget_left(&self) -> f64 {
        let mut budget = self
            .budget
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        budget.expire(Instant::now());
        budget.balance()
    }

    pub(crate) fn new(config: RetryConfig, metrics: RetryMetrics) -> Self {
        let budget = RetryBudget::new(config.budget, Instant::now());
        metrics.remaining(budget.balance());
        Self {
            config,
            budget: Mutex::new(budget),
            metrics,
        }
    }

    /// A request is about to make its first attempt.
    pub(crate) fn deposit(&self) {
        let mut budget = self.budget.lock().unwrap_or_else(|e| e.into_inner());
        budget.deposit(Instant::now());
        self.metrics.remaining(budget.balance());
    }

    /// Takes a token for a retry or a hedge; counts the refusal when there is none.
    pub(crate) fn withdraw(&self) -> bool {
        let mut budget = self.budget.lock().unwrap_or_else(|e| e.into_inner());
        let granted = budget.try_withdraw(Instant::now());
        self.metrics.remaining(budget.balance());
        drop(budget);
        if !granted {
            self.metrics.exhausted();
        }
        granted
    }
}
