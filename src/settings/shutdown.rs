//! `[shutdown]`: how long the listeners keep serving, unready, after SIGTERM, and how long
//! in-flight requests may then run.

use std::time::Duration;

use serde::Deserialize;

use super::rules::{in_range, ConfigError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShutdown {
    grace_seconds: u64,
    drain_delay_seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ShutdownSettings {
    /// In-flight requests run for at most this long once draining starts; then they are cut off.
    pub grace: Duration,
    /// After SIGTERM, how long the listeners keep serving while `/readyz` already answers 503.
    pub drain_delay: Duration,
}

impl TryFrom<RawShutdown> for ShutdownSettings {
    type Error = ConfigError;

    fn try_from(raw: RawShutdown) -> Result<Self, ConfigError> {
        in_range("shutdown.grace_seconds", raw.grace_seconds, 0, 3600)?;
        in_range(
            "shutdown.drain_delay_seconds",
            raw.drain_delay_seconds,
            0,
            300,
        )?;
        Ok(Self {
            grace: Duration::from_secs(raw.grace_seconds),
            drain_delay: Duration::from_secs(raw.drain_delay_seconds),
        })
    }
}
