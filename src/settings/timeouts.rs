//! `[timeouts]`: the api's upstream timeout, connect timeout and the least budget worth a call.

use std::time::Duration;

use serde::Deserialize;

use super::rules::{in_range, ConfigError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTimeouts {
    upstream_ms: u64,
    connect_ms: u64,
    min_budget_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timeouts {
    /// The end-to-end timeout of an upstream call when the caller names none.
    pub upstream: Duration,
    pub connect: Duration,
    /// Below this remaining budget a call is not started (zero = off).
    pub min_budget: Duration,
}

impl TryFrom<RawTimeouts> for Timeouts {
    type Error = ConfigError;

    fn try_from(raw: RawTimeouts) -> Result<Self, ConfigError> {
        in_range("timeouts.upstream_ms", raw.upstream_ms, 1, 10_000)?;
        in_range("timeouts.min_budget_ms", raw.min_budget_ms, 0, 10_000)?;
        in_range("timeouts.connect_ms", raw.connect_ms, 1, 10_000)?;
        Ok(Self {
            upstream: Duration::from_millis(raw.upstream_ms),
            connect: Duration::from_millis(raw.connect_ms),
            min_budget: Duration::from_millis(raw.min_budget_ms),
        })
    }
}
