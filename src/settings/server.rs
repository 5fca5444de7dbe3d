//! `[server]`: connection limits of both listeners, against slow, idle and too many clients.

use std::time::Duration;

use serde::Deserialize;

use super::rules::{count, in_range, ConfigError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    client_request_timeout_ms: u64,
    keep_alive_seconds: u64,
    max_connections: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ServerSettings {
    /// A client must send its whole request head within this time, or get 408.
    pub client_request_timeout: Duration,
    /// How long an idle keep-alive connection stays open; `None` = no keep-alive.
    pub keep_alive: Option<Duration>,
    /// Per worker thread.
    pub max_connections: usize,
}

impl TryFrom<RawServer> for ServerSettings {
    type Error = ConfigError;

    fn try_from(raw: RawServer) -> Result<Self, ConfigError> {
        in_range(
            "server.client_request_timeout_ms",
            raw.client_request_timeout_ms,
            100,
            600_000,
        )?;
        in_range("server.keep_alive_seconds", raw.keep_alive_seconds, 0, 3600)?;
        in_range("server.max_connections", raw.max_connections, 1, 1_000_000)?;
        Ok(Self {
            client_request_timeout: Duration::from_millis(raw.client_request_timeout_ms),
            keep_alive: (raw.keep_alive_seconds > 0)
                .then(|| Duration::from_secs(raw.keep_alive_seconds)),
            max_connections: count(raw.max_connections),
        })
    }
}
