//! `[breaker]`: the trip rule (`mode`) with its parameters, the open pause and the probes:
//! [`BreakerConfig`], handed whole to the breaker (`crate::breaker`, which holds its behaviour).

use std::time::Duration;

use serde::Deserialize;

use super::rules::{check, in_range, one_of, positive_share, probability, ConfigError};

/// `[breaker]`, as the breaker's state machine runs by it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// What opens the breaker while Closed.
    pub trip: TripRule,
    /// How long Open lasts before the first probe may go through.
    pub open_for: Duration,
    /// Probe calls let through at once in HalfOpen; that many successes close the breaker.
    pub half_open_probes: u32,
    /// The longest a dependency's `Retry-After` may stretch `open_for` (zero: never).
    pub max_open: Duration,
    /// Whether refusals are enforced (`breaker.enforce`); `false` is shadow mode: the breaker
    /// decides as ever, counts what it would refuse, and lets the call go on.
    pub enforce: bool,
}

/// What opens a Closed breaker, with its parameters (`breaker.mode`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TripRule {
    /// `threshold` consecutive failures.
    Consecutive { threshold: u32 },
    /// A failure or slow-call rate over a sliding window of calls.
    FailureRate(RateWindow),
    /// Client-side adaptive throttling: each call is refused locally with a probability that
    /// tracks how much the dependency accepts (never opens; see `breaker::throttle`).
    Throttle(ThrottleParams),
}

/// The throttling policy's parameters (`breaker.throttle_*`), as Envoy's `admission_control`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThrottleParams {
    /// The sampling window, kept in buckets.
    pub window: Duration,
    /// The success rate (0-1] at or above which nothing is refused (Envoy's `sr_threshold`).
    pub success_rate: f64,
    /// The probability is raised to 1/aggression (1.0: linear in the shortfall).
    pub aggression: f64,
    /// Below this many calls per second over the window, nothing is refused.
    pub min_rps: f64,
    /// The probability never goes above this (0-1).
    pub max_probability: f64,
}

/// The failure-rate policy's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateWindow {
    /// Calls the window holds (the last `size` verdicts).
    pub size: u32,
    /// Below this many calls in the window, rates are not judged.
    pub minimum_calls: u32,
    /// Failure share (0-1] at or above which the breaker opens.
    pub failure_rate_threshold: f64,
    /// A call at least this long is slow; zero turns the slow-call rule off.
    pub slow_call: Duration,
    /// Slow share (0-1] at or above which the breaker opens.
    pub slow_call_rate_threshold: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBreaker {
    failure_threshold: u32,
    open_seconds: u64,
    half_open_probes: u32,
    max_open_seconds: u64,
    enforce: bool,
    mode: String,
    window_size: u32,
    minimum_calls: u32,
    failure_rate_threshold: f64,
    slow_call_ms: u64,
    slow_call_rate_threshold: f64,
    throttle_window_seconds: u64,
    throttle_success_rate: f64,
    throttle_aggression: f64,
    throttle_min_rps: f64,
    throttle_max_probability: f64,
}

/// `breaker.mode`, before its parameters are attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Consecutive,
    FailureRate,
    Throttle,
}

impl TryFrom<RawBreaker> for BreakerConfig {
    type Error = ConfigError;

    fn try_from(b: RawBreaker) -> Result<Self, ConfigError> {
        in_range(
            "breaker.failure_threshold",
            b.failure_threshold.into(),
            1,
            10_000,
        )?;
        in_range("breaker.open_seconds", b.open_seconds, 1, 3600)?;
        in_range(
            "breaker.half_open_probes",
            b.half_open_probes.into(),
            1,
            1000,
        )?;
        in_range("breaker.max_open_seconds", b.max_open_seconds, 0, 86_400)?;
        let mode = one_of(
            "breaker.mode",
            &b.mode,
            &[
                ("consecutive", Mode::Consecutive),
                ("failure_rate", Mode::FailureRate),
                ("throttle", Mode::Throttle),
            ],
        )?;
        in_range("breaker.window_size", b.window_size.into(), 1, 10_000)?;
        in_range(
            "breaker.minimum_calls",
            b.minimum_calls.into(),
            1,
            b.window_size.into(),
        )?;
        in_range("breaker.slow_call_ms", b.slow_call_ms, 0, 60_000)?;
        let window = RateWindow {
            size: b.window_size,
            minimum_calls: b.minimum_calls,
            failure_rate_threshold: positive_share(
                "breaker.failure_rate_threshold",
                b.failure_rate_threshold,
            )?,
            slow_call: Duration::from_millis(b.slow_call_ms),
            slow_call_rate_threshold: positive_share(
                "breaker.slow_call_rate_threshold",
                b.slow_call_rate_threshold,
            )?,
        };
        let throttle = throttle_params(&b)?;
        Ok(BreakerConfig {
            trip: match mode {
                Mode::Consecutive => TripRule::Consecutive {
                    threshold: b.failure_threshold,
                },
                Mode::FailureRate => TripRule::FailureRate(window),
                Mode::Throttle => TripRule::Throttle(throttle),
            },
            open_for: Duration::from_secs(b.open_seconds),
            half_open_probes: b.half_open_probes,
            max_open: Duration::from_secs(b.max_open_seconds),
            enforce: b.enforce,
        })
    }
}

/// The `throttle_*` keys, each checked whatever the mode (a typo fails before it matters).
fn throttle_params(b: &RawBreaker) -> Result<ThrottleParams, ConfigError> {
    in_range(
        "breaker.throttle_window_seconds",
        b.throttle_window_seconds,
        1,
        3600,
    )?;
    let aggression = b.throttle_aggression;
    check(
        aggression.is_finite() && aggression > 0.0 && aggression <= 100.0,
        "breaker.throttle_aggression",
        || format!("must be a number above 0 and at most 100, got {aggression}"),
    )?;
    let min_rps = b.throttle_min_rps;
    check(
        min_rps.is_finite() && (0.0..=1_000_000.0).contains(&min_rps),
        "breaker.throttle_min_rps",
        || format!("must be a number between 0 and 1000000, got {min_rps}"),
    )?;
    Ok(ThrottleParams {
        window: Duration::from_secs(b.throttle_window_seconds),
        success_rate: positive_share("breaker.throttle_success_rate", b.throttle_success_rate)?,
        aggression,
        min_rps,
        max_probability: probability(
            "breaker.throttle_max_probability",
            b.throttle_max_probability,
        )?,
    })
}
