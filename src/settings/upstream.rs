//! `[upstream]`: the simulated dependency's listener, workers, defaults, fault modes and
//! capacity; [`SimulatorConfig`] is handed whole to the simulator (`crate::upstream`, which holds
//! its behaviour).

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::http::StatusCode;
use serde::Deserialize;

use super::rules::{check, count, in_range, listen_addr, probability, ConfigError};
use crate::upstream::Degrade;

/// The simulator's configuration (`[upstream]` but its listener and workers).
#[derive(Debug, Clone, PartialEq)]
pub struct SimulatorConfig {
    /// Latency when the caller names none (ms).
    pub latency_ms: u64,
    /// Failure probability when the caller names none.
    pub fail_rate: f64,
    pub faults: Faults,
    /// Requests served at once (0 = unlimited).
    pub concurrency: usize,
    /// Requests that may wait for a slot; beyond, a request is answered 503 at once (`None`: no
    /// limit, the default).
    pub max_waiting: Option<usize>,
    pub degrade: Option<Degrade>,
}

/// The fault modes (`upstream.jitter_ms`, `tail_rate`, `tail_ms`, `fail_status`, `hang_rate`,
/// `reset_rate`); all zero means a well-behaved dependency.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// Latency varies uniformly by up to this many ms either way.
    pub jitter_ms: u64,
    /// Probability that a request takes `tail_ms` longer.
    pub tail_rate: f64,
    pub tail_ms: u64,
    /// Status of injected failures.
    pub fail_status: StatusCode,
    /// `Retry-After` sent with injected failures; `None` = none.
    pub retry_after: Option<Duration>,
    /// Probability that a request is accepted and never answered.
    pub hang_rate: f64,
    /// Probability that the connection is closed mid-response.
    pub reset_rate: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    listen: String,
    latency_ms: u64,
    fail_rate: f64,
    workers: u64,
    concurrency: u64,
    max_waiting: u64,
    degrade_after_seconds: u64,
    degraded_concurrency: u64,
    jitter_ms: u64,
    tail_rate: f64,
    tail_ms: u64,
    fail_status: u16,
    retry_after_seconds: u64,
    hang_rate: f64,
    reset_rate: f64,
    /// Read by both roles; [`super::Settings`] keeps it as an `OverridePolicy`.
    pub(super) allow_request_overrides: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct UpstreamSettings {
    pub listen: SocketAddr,
    /// 0 = one worker per core.
    pub workers: usize,
    pub simulator: SimulatorConfig,
}

impl TryFrom<RawUpstream> for UpstreamSettings {
    type Error = ConfigError;

    fn try_from(up: RawUpstream) -> Result<Self, ConfigError> {
        in_range("upstream.workers", up.workers, 0, 256)?;
        in_range("upstream.latency_ms", up.latency_ms, 0, 5000)?;
        let fail_rate = probability("upstream.fail_rate", up.fail_rate)?;
        in_range("upstream.concurrency", up.concurrency, 0, 100_000)?;
        in_range("upstream.max_waiting", up.max_waiting, 0, 100_000)?;
        check(
            up.max_waiting == 0 || up.concurrency > 0,
            "upstream.max_waiting",
            || {
                format!(
                    "limits the wait for a slot of upstream.concurrency, which is 0 (unlimited); got {}",
                    up.max_waiting
                )
            },
        )?;
        in_range(
            "upstream.degrade_after_seconds",
            up.degrade_after_seconds,
            0,
            86_400,
        )?;
        let degrade = if up.degrade_after_seconds > 0 {
            check(
                up.concurrency >= 2,
                "upstream.degrade_after_seconds",
                || {
                    format!(
                        "needs an upstream.concurrency of at least 2 to degrade from, got {}",
                        up.concurrency
                    )
                },
            )?;
            in_range(
                "upstream.degraded_concurrency",
                up.degraded_concurrency,
                1,
                up.concurrency.saturating_sub(1),
            )?;
            Some(Degrade {
                after: Duration::from_secs(up.degrade_after_seconds),
                to: count(up.degraded_concurrency),
            })
        } else {
            None
        };
        in_range("upstream.jitter_ms", up.jitter_ms, 0, 5000)?;
        in_range("upstream.tail_ms", up.tail_ms, 0, 60_000)?;
        in_range("upstream.fail_status", up.fail_status.into(), 400, 599)?;
        let fail_status = StatusCode::from_u16(up.fail_status)
            .map_err(|e| ConfigError::at("upstream.fail_status", e.to_string()))?;
        in_range(
            "upstream.retry_after_seconds",
            up.retry_after_seconds,
            0,
            3600,
        )?;
        let faults = Faults {
            jitter_ms: up.jitter_ms,
            tail_rate: probability("upstream.tail_rate", up.tail_rate)?,
            tail_ms: up.tail_ms,
            fail_status,
            retry_after: (up.retry_after_seconds > 0)
                .then(|| Duration::from_secs(up.retry_after_seconds)),
            hang_rate: probability("upstream.hang_rate", up.hang_rate)?,
            reset_rate: probability("upstream.reset_rate", up.reset_rate)?,
        };
        Ok(Self {
            listen: listen_addr("upstream.listen", &up.listen)?,
            workers: count(up.workers),
            simulator: SimulatorConfig {
                latency_ms: up.latency_ms,
                fail_rate,
                faults,
                concurrency: count(up.concurrency),
                max_waiting: (up.max_waiting > 0).then(|| count(up.max_waiting)),
                degrade,
            },
        })
    }
}
