//! `[retry]`: retries with a budget, backoff and hedging: [`RetryConfig`], handed whole to the api's
//! retries (`crate::retry`, which holds its behaviour). Off by default (`max_attempts = 1`,
//! `hedge_after_ms = 0`).

use std::time::Duration;

use serde::Deserialize;

use super::rules::{check, in_range, ConfigError};

/// Which outcomes of an attempt may be retried (`retry.on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct RetryOn {
    /// Refused, reset, invalid HTTP, body too large or cut short.
    pub transport: bool,
    /// The dependency answered 5xx.
    pub status_5xx: bool,
    /// The attempt's own timeout passed (useful with `retry.per_try_timeout_ms`).
    pub timeout: bool,
}

/// `[retry]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RetryConfig {
    /// Attempts per request, the first included (1 = no retries).
    pub max_attempts: u32,
    pub budget: BudgetConfig,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub on: RetryOn,
    /// Each attempt's timeout; `None`: an attempt may use all the time the request has left.
    pub per_try_timeout: Option<Duration>,
    /// Send a second attempt when the first has not answered after this long; `None` = off.
    pub hedge_after: Option<Duration>,
}

/// The budget's parameters (`retry.budget_ratio`, `min_per_second`, `budget_ttl_seconds`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct BudgetConfig {
    /// Retries allowed per request, e.g. 0.2: one retry for every five requests.
    pub ratio: f64,
    /// Retries allowed per second whatever the traffic.
    pub min_per_second: u32,
    /// How long a deposit or a withdrawal counts.
    pub ttl: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetry {
    max_attempts: u32,
    budget_ratio: f64,
    min_per_second: u32,
    budget_ttl_seconds: u64,
    backoff_base_ms: u64,
    backoff_max_ms: u64,
    on: String,
    per_try_timeout_ms: u64,
    hedge_after_ms: u64,
}

impl TryFrom<RawRetry> for RetryConfig {
    type Error = ConfigError;

    fn try_from(r: RawRetry) -> Result<Self, ConfigError> {
        in_range("retry.max_attempts", r.max_attempts.into(), 1, 10)?;
        check(
            r.budget_ratio.is_finite() && (0.0..=1000.0).contains(&r.budget_ratio),
            "retry.budget_ratio",
            || {
                format!(
                    "must be a number between 0 and 1000, got {}",
                    r.budget_ratio
                )
            },
        )?;
        in_range("retry.min_per_second", r.min_per_second.into(), 0, 100_000)?;
        in_range("retry.budget_ttl_seconds", r.budget_ttl_seconds, 1, 60)?;
        in_range("retry.backoff_base_ms", r.backoff_base_ms, 0, 10_000)?;
        in_range(
            "retry.backoff_max_ms",
            r.backoff_max_ms,
            r.backoff_base_ms,
            60_000,
        )?;
        let on = retry_on(&r.on)?;
        in_range("retry.per_try_timeout_ms", r.per_try_timeout_ms, 0, 10_000)?;
        in_range("retry.hedge_after_ms", r.hedge_after_ms, 0, 10_000)?;
        let millis = |ms: u64| (ms > 0).then(|| Duration::from_millis(ms));
        Ok(RetryConfig {
            max_attempts: r.max_attempts,
            budget: BudgetConfig {
                ratio: r.budget_ratio,
                min_per_second: r.min_per_second,
                ttl: Duration::from_secs(r.budget_ttl_seconds),
            },
            backoff_base: Duration::from_millis(r.backoff_base_ms),
            backoff_max: Duration::from_millis(r.backoff_max_ms),
            on,
            per_try_timeout: millis(r.per_try_timeout_ms),
            hedge_after: millis(r.hedge_after_ms),
        })
    }
}

/// `transport`, `5xx` and `timeout`, comma-separated, in any order; empty retries nothing.
fn retry_on(value: &str) -> Result<RetryOn, ConfigError> {
    let mut on = RetryOn::default();
    for word in value.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        match word {
            "transport" => on.transport = true,
            "5xx" => on.status_5xx = true,
            "timeout" => on.timeout = true,
            other => {
                return Err(ConfigError::at(
                    "retry.on",
                    format!("must list transport, 5xx or timeout (comma-separated), got {other:?}"),
                ))
            }
        }
    }
    Ok(on)
}
