//! Typed configuration: embedded defaults < `config/default.toml` < `LOAD_SHED_CONFIG` file <
//! `LOAD_SHED__SECTION__KEY` environment, then validated. Any mistake is one [`ConfigError`] line.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use config::{Config, Environment, File, FileFormat, Map, Value, ValueKind};
use serde::Deserialize;

use crate::admission::{Fractions, GradientConfig, Limits};
use crate::breaker::{BreakerConfig, RateWindow, TripRule};

/// The defaults, compiled in: the very file users read, so the two cannot disagree.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Prefix of every configuration variable, e.g. `LOAD_SHED__API__LISTEN` for `api.listen`.
pub const ENV_PREFIX: &str = "LOAD_SHED__";

/// Names an extra configuration file, layered over `config/default.toml`.
pub const CONFIG_FILE_VAR: &str = "LOAD_SHED_CONFIG";

/// What one process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Api,
    Upstream,
    All,
}

impl Role {
    pub fn serves_api(self) -> bool {
        matches!(self, Role::Api | Role::All)
    }

    pub fn serves_upstream(self) -> bool {
        matches!(self, Role::Upstream | Role::All)
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub role: Role,
    pub api: ApiSettings,
    pub upstream: UpstreamSettings,
    pub timeouts: TimeoutSettings,
    pub breaker: BreakerSettings,
    pub admission: AdmissionSettings,
    pub server: ServerSettings,
    pub shutdown: ShutdownSettings,
}

/// The raw shape of the files and environment; [`Settings::validate`] turns it into [`Settings`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    role: String,
    api: RawApi,
    upstream: RawUpstream,
    timeouts: TimeoutSettings,
    breaker: BreakerSettings,
    admission: AdmissionSettings,
    server: ServerSettings,
    shutdown: ShutdownSettings,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    listen: String,
    upstream_url: String,
    max_upstream_body_bytes: u64,
    workers: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    listen: String,
    latency_ms: u64,
    fail_rate: f64,
    workers: u64,
    concurrency: u64,
    degrade_after_seconds: u64,
    degraded_concurrency: u64,
    jitter_ms: u64,
    tail_rate: f64,
    tail_ms: u64,
    fail_status: u16,
    hang_rate: f64,
    reset_rate: f64,
    allow_request_overrides: bool,
}

#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub listen: SocketAddr,
    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:8081`.
    pub upstream_url: String,
    pub max_upstream_body_bytes: usize,
    /// 0 = one worker per core.
    pub workers: usize,
}

#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub listen: SocketAddr,
    pub latency_ms: u64,
    pub fail_rate: f64,
    /// 0 = one worker per core.
    pub workers: usize,
    /// Requests served at once (0 = unlimited); the rest wait in FIFO order.
    pub concurrency: usize,
    /// After this long (from start-up), `concurrency` drops to `degraded_concurrency`.
    pub degrade_after: Option<Duration>,
    pub degraded_concurrency: usize,
    pub jitter_ms: u64,
    pub tail_rate: f64,
    pub tail_ms: u64,
    pub fail_status: u16,
    pub hang_rate: f64,
    pub reset_rate: f64,
    /// Read by both roles: whether callers may set `ms` and `fail_rate`.
    pub allow_request_overrides: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutSettings {
    pub upstream_ms: u64,
    pub connect_ms: u64,
    pub min_budget_ms: u64,
}

impl TimeoutSettings {
    pub fn upstream(&self) -> Duration {
        Duration::from_millis(self.upstream_ms)
    }

    pub fn connect(&self) -> Duration {
        Duration::from_millis(self.connect_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSettings {
    pub failure_threshold: u32,
    pub open_seconds: u64,
    pub half_open_probes: u32,
    /// "consecutive" or "failure_rate" (validated at start-up).
    pub mode: String,
    pub window_size: u32,
    pub minimum_calls: u32,
    pub failure_rate_threshold: f64,
    pub slow_call_ms: u64,
    pub slow_call_rate_threshold: f64,
}

impl BreakerSettings {
    pub fn machine_config(&self) -> BreakerConfig {
        BreakerConfig {
            trip: if self.mode == "failure_rate" {
                TripRule::FailureRate(RateWindow {
                    size: self.window_size,
                    minimum_calls: self.minimum_calls,
                    failure_rate_threshold: self.failure_rate_threshold,
                    slow_call: Duration::from_millis(self.slow_call_ms),
                    slow_call_rate_threshold: self.slow_call_rate_threshold,
                })
            } else {
                TripRule::Consecutive
            },
            failure_threshold: self.failure_threshold,
            open_for: Duration::from_secs(self.open_seconds),
            half_open_probes: self.half_open_probes,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionSettings {
    pub max_inflight: u32,
    pub normal_max_inflight: u32,
    pub low_max_inflight: u32,
    /// "static" or "adaptive" (validated at start-up).
    pub mode: String,
    pub min_limit: u32,
    pub max_limit: u32,
    pub normal_fraction: f64,
    pub low_fraction: f64,
    /// Requests that may wait for a slot instead of being shed at once (0 = none).
    pub queue_size: u32,
    pub queue_timeout_ms: u64,
}

impl AdmissionSettings {
    pub fn limits(&self) -> Limits {
        Limits {
            high: self.max_inflight,
            normal: self.normal_max_inflight,
            low: self.low_max_inflight,
        }
    }

    /// The backlog: how many may wait, and for how long.
    pub fn backlog(&self) -> (usize, Duration) {
        (
            self.queue_size as usize,
            Duration::from_millis(self.queue_timeout_ms),
        )
    }

    /// The adaptive limiter, when `mode = "adaptive"`, with the class fractions.
    pub fn adaptive(&self) -> Option<(GradientConfig, Fractions)> {
        (self.mode == "adaptive").then_some((
            GradientConfig::new(self.min_limit, self.max_limit),
            Fractions {
                normal: self.normal_fraction,
                low: self.low_fraction,
            },
        ))
    }
}

/// Connection limits of both listeners, against slow, idle and too many clients.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub client_request_timeout_ms: u64,
    pub keep_alive_seconds: u64,
    /// Per worker thread.
    pub max_connections: u64,
}

impl ServerSettings {
    pub fn client_request_timeout(&self) -> Duration {
        Duration::from_millis(self.client_request_timeout_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownSettings {
    pub grace_seconds: u64,
}

impl ShutdownSettings {
    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.grace_seconds)
    }
}

/// Why start-up refused the configuration: printed as one line, exit code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// `section.key`, or the offending variable or file.
    pub key: String,
    pub rule: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, rule: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            rule: rule.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line, whatever the source said.
        let rule = self.rule.replace(['\n', '\r'], " ");
        write!(f, "configuration error: {}: {}", self.key, rule)
    }
}

impl std::error::Error for ConfigError {}

impl Settings {
    /// Loads from `./config/default.toml`, `$LOAD_SHED_CONFIG` and the process environment.
    pub fn load() -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        let file = env
            .iter()
            .find(|(k, _)| k == CONFIG_FILE_VAR)
            .map(|(_, v)| v.clone());
        Self::from_sources(Path::new("config/default.toml"), file.as_deref(), &env)
    }

    /// The embedded defaults with environment-style overrides only: what tests start from.
    pub fn from_env_pairs(env: &[(&str, &str)]) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::from_sources(Path::new("/nonexistent/load-shed-api.toml"), None, &env)
    }

    /// Layers the sources in contract order. `env` is every variable of the environment; only
    /// those starting with [`ENV_PREFIX`] are read, and an unknown one is an error.
    pub fn from_sources(
        default_file: &Path,
        extra_file: Option<&str>,
        env: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        let known = known_keys()?;
        let mut overrides = Map::new();
        for (name, value) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let key = rest.to_ascii_lowercase().replace("__", ".");
            if !known.contains(&key) {
                return Err(ConfigError::new(
                    name.as_str(),
                    format!(
                        "unknown configuration variable (known: {})",
                        known
                            .iter()
                            .map(|k| env_name(k))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            overrides.insert(rest.to_string(), value.clone());
        }

        let mut builder = Config::builder()
            .add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml))
            .add_source(File::from(default_file).required(false));
        if let Some(path) = extra_file.filter(|p| !p.is_empty()) {
            if !Path::new(path).is_file() {
                return Err(ConfigError::new(
                    CONFIG_FILE_VAR,
                    format!("{path} is not a readable file"),
                ));
            }
            builder = builder.add_source(File::new(path, FileFormat::Toml));
        }
        builder = builder.add_source(
            Environment::default()
                .separator("__")
                .source(Some(overrides)),
        );
        let raw: RawSettings = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(from_config_error)?;
        validate(raw)
    }
}

/// `section.key` → `LOAD_SHED__SECTION__KEY`.
pub fn env_name(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.to_ascii_uppercase().replace('.', "__")
    )
}

/// Every `section.key` the embedded defaults define: the set of valid keys.
fn known_keys() -> Result<BTreeSet<String>, ConfigError> {
    let defaults = Config::builder()
        .add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize::<Map<String, Value>>())
        .map_err(from_config_error)?;
    let mut keys = BTreeSet::new();
    collect_keys("", &defaults, &mut keys);
    Ok(keys)
}

fn collect_keys(prefix: &str, map: &Map<String, Value>, out: &mut BTreeSet<String>) {
    for (name, value) in map {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match &value.kind {
            ValueKind::Table(inner) => collect_keys(&key, inner, out),
            _ => {
                out.insert(key);
            }
        }
    }
}

fn from_config_error(err: config::ConfigError) -> ConfigError {
    let text = err.to_string();
    // The config crate names the key as "for key `a.b`" where it knows it.
    let key = text
        .split("for key `")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .map(str::to_string);
    match key {
        Some(key) => {
            let env = env_name(&key);
            ConfigError::new(format!("{key} ({env})"), text)
        }
        None => ConfigError::new("configuration", text),
    }
}

fn check(ok: bool, key: &str, rule: impl FnOnce() -> String) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            format!("{key} ({})", env_name(key)),
            rule(),
        ))
    }
}

fn in_range(key: &str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    check((min..=max).contains(&value), key, || {
        format!("must be between {min} and {max}, got {value}")
    })
}

/// A probability: a finite number in [0, 1].
fn probability(key: &str, value: f64) -> Result<(), ConfigError> {
    check(
        value.is_finite() && (0.0..=1.0).contains(&value),
        key,
        || format!("must be a number between 0 and 1, got {value}"),
    )
}

fn one_of(key: &str, value: &str, allowed: &[&str]) -> Result<(), ConfigError> {
    check(allowed.contains(&value), key, || {
        format!("must be {}, got {value:?}", allowed.join(" or "))
    })
}

fn listen_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        ConfigError::new(
            format!("{key} ({})", env_name(key)),
            format!("must be an address like 0.0.0.0:8080, got {value:?}"),
        )
    })
}

fn upstream_url(value: &str) -> Result<String, ConfigError> {
    let key = "api.upstream_url";
    let bad = |why: &str| {
        ConfigError::new(
            format!("{key} ({})", env_name(key)),
            format!("must be an http:// URL with a host, like http://127.0.0.1:8081 ({why}), got {value:?}"),
        )
    };
    let uri: awc::http::Uri = value.parse().map_err(|_| bad("unparsable"))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad("scheme must be http"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if uri.query().is_some() {
        return Err(bad("no query string allowed"));
    }
    Ok(value.trim_end_matches('/').to_string())
}

fn validate(raw: RawSettings) -> Result<Settings, ConfigError> {
    let role = match raw.role.as_str() {
        "api" => Role::Api,
        "upstream" => Role::Upstream,
        "all" => Role::All,
        other => {
            return Err(ConfigError::new(
                format!("role ({})", env_name("role")),
                format!("must be one of api, upstream, all, got {other:?}"),
            ))
        }
    };

    in_range(
        "api.max_upstream_body_bytes",
        raw.api.max_upstream_body_bytes,
        1,
        1 << 30,
    )?;
    in_range("api.workers", raw.api.workers, 0, 256)?;
    in_range("upstream.workers", raw.upstream.workers, 0, 256)?;
    in_range("upstream.latency_ms", raw.upstream.latency_ms, 0, 5000)?;
    let fail_rate = raw.upstream.fail_rate;
    probability("upstream.fail_rate", fail_rate)?;
    let up = &raw.upstream;
    in_range("upstream.concurrency", up.concurrency, 0, 100_000)?;
    in_range(
        "upstream.degrade_after_seconds",
        up.degrade_after_seconds,
        0,
        86_400,
    )?;
    if up.degrade_after_seconds > 0 {
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
    }
    in_range("upstream.jitter_ms", up.jitter_ms, 0, 5000)?;
    in_range("upstream.tail_ms", up.tail_ms, 0, 60_000)?;
    in_range("upstream.fail_status", up.fail_status.into(), 400, 599)?;
    probability("upstream.tail_rate", up.tail_rate)?;
    probability("upstream.hang_rate", up.hang_rate)?;
    probability("upstream.reset_rate", up.reset_rate)?;
    in_range("timeouts.upstream_ms", raw.timeouts.upstream_ms, 1, 10_000)?;
    in_range(
        "timeouts.min_budget_ms",
        raw.timeouts.min_budget_ms,
        0,
        10_000,
    )?;
    in_range("timeouts.connect_ms", raw.timeouts.connect_ms, 1, 10_000)?;
    in_range(
        "breaker.failure_threshold",
        raw.breaker.failure_threshold.into(),
        1,
        10_000,
    )?;
    in_range("breaker.open_seconds", raw.breaker.open_seconds, 1, 3600)?;
    in_range(
        "breaker.half_open_probes",
        raw.breaker.half_open_probes.into(),
        1,
        1000,
    )?;
    let b = &raw.breaker;
    one_of("breaker.mode", &b.mode, &["consecutive", "failure_rate"])?;
    in_range("breaker.window_size", b.window_size.into(), 1, 10_000)?;
    in_range(
        "breaker.minimum_calls",
        b.minimum_calls.into(),
        1,
        b.window_size.into(),
    )?;
    in_range("breaker.slow_call_ms", b.slow_call_ms, 0, 60_000)?;
    for (key, rate) in [
        ("breaker.failure_rate_threshold", b.failure_rate_threshold),
        (
            "breaker.slow_call_rate_threshold",
            b.slow_call_rate_threshold,
        ),
    ] {
        check(rate.is_finite() && rate > 0.0 && rate <= 1.0, key, || {
            format!("must be a number above 0 and at most 1, got {rate}")
        })?;
    }
    let a = &raw.admission;
    in_range("admission.max_inflight", a.max_inflight.into(), 1, 100_000)?;
    in_range(
        "admission.low_max_inflight",
        a.low_max_inflight.into(),
        1,
        100_000,
    )?;
    check(
        a.low_max_inflight < a.normal_max_inflight,
        "admission.low_max_inflight",
        || {
            format!(
                "must be below admission.normal_max_inflight ({}), got {}",
                a.normal_max_inflight, a.low_max_inflight
            )
        },
    )?;
    check(
        a.normal_max_inflight < a.max_inflight,
        "admission.normal_max_inflight",
        || {
            format!(
                "must be below admission.max_inflight ({}), got {}",
                a.max_inflight, a.normal_max_inflight
            )
        },
    )?;
    one_of("admission.mode", &a.mode, &["static", "adaptive"])?;
    in_range("admission.min_limit", a.min_limit.into(), 3, 100_000)?;
    in_range(
        "admission.max_limit",
        a.max_limit.into(),
        a.min_limit.into(),
        100_000,
    )?;
    check(
        0.0 < a.low_fraction && a.low_fraction < a.normal_fraction && a.normal_fraction < 1.0,
        "admission.low_fraction",
        || {
            format!(
                "0 < low_fraction ({}) < normal_fraction ({}) < 1 is required",
                a.low_fraction, a.normal_fraction
            )
        },
    )?;
    in_range("admission.queue_size", a.queue_size.into(), 0, 100_000)?;
    in_range("admission.queue_timeout_ms", a.queue_timeout_ms, 1, 60_000)?;
    in_range(
        "shutdown.grace_seconds",
        raw.shutdown.grace_seconds,
        0,
        3600,
    )?;
    let srv = &raw.server;
    in_range(
        "server.client_request_timeout_ms",
        srv.client_request_timeout_ms,
        100,
        600_000,
    )?;
    in_range("server.keep_alive_seconds", srv.keep_alive_seconds, 0, 3600)?;
    in_range("server.max_connections", srv.max_connections, 1, 1_000_000)?;

    Ok(Settings {
        role,
        api: ApiSettings {
            listen: listen_addr("api.listen", &raw.api.listen)?,
            upstream_url: upstream_url(&raw.api.upstream_url)?,
            max_upstream_body_bytes: raw.api.max_upstream_body_bytes as usize,
            workers: raw.api.workers as usize,
        },
        upstream: UpstreamSettings {
            listen: listen_addr("upstream.listen", &raw.upstream.listen)?,
            latency_ms: raw.upstream.latency_ms,
            fail_rate,
            workers: raw.upstream.workers as usize,
            concurrency: raw.upstream.concurrency as usize,
            degrade_after: (raw.upstream.degrade_after_seconds > 0)
                .then(|| Duration::from_secs(raw.upstream.degrade_after_seconds)),
            degraded_concurrency: raw.upstream.degraded_concurrency as usize,
            jitter_ms: raw.upstream.jitter_ms,
            tail_rate: raw.upstream.tail_rate,
            tail_ms: raw.upstream.tail_ms,
            fail_status: raw.upstream.fail_status,
            hang_rate: raw.upstream.hang_rate,
            reset_rate: raw.upstream.reset_rate,
            allow_request_overrides: raw.upstream.allow_request_overrides,
        },
        timeouts: raw.timeouts,
        breaker: raw.breaker,
        admission: raw.admission,
        server: raw.server,
        shutdown: raw.shutdown,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn err(env: &[(&str, &str)]) -> ConfigError {
        Settings::from_env_pairs(env).unwrap_err()
    }

    #[test]
    fn the_embedded_defaults_are_the_contract_defaults() {
        let s = Settings::from_env_pairs(&[]).unwrap();
        assert_eq!(s.role, Role::All);
        assert_eq!(s.api.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(s.api.upstream_url, "http://127.0.0.1:8081");
        assert_eq!(s.upstream.listen.to_string(), "0.0.0.0:8081");
        assert_eq!(s.upstream.latency_ms, 50);
        assert_eq!(s.upstream.fail_rate, 0.0);
        assert_eq!(s.timeouts.upstream_ms, 200);
        assert_eq!(s.timeouts.connect_ms, 100);
        assert_eq!(s.breaker.failure_threshold, 5);
        assert_eq!(s.breaker.open_seconds, 10);
        assert_eq!(s.breaker.half_open_probes, 1);
        assert_eq!(s.api.max_upstream_body_bytes, 1_048_576);
        assert_eq!(s.admission.max_inflight, 50);
        assert_eq!(s.admission.normal_max_inflight, 45);
        assert_eq!(s.admission.low_max_inflight, 35);
        assert_eq!(s.shutdown.grace_seconds, 20);
    }

    #[test]
    fn every_key_is_settable_by_environment() {
        let s = Settings::from_env_pairs(&[
            ("LOAD_SHED__ROLE", "api"),
            ("LOAD_SHED__API__LISTEN", "127.0.0.1:9000"),
            ("LOAD_SHED__API__UPSTREAM_URL", "http://upstream:81/"),
            ("LOAD_SHED__API__MAX_UPSTREAM_BODY_BYTES", "2048"),
            ("LOAD_SHED__API__WORKERS", "1"),
            ("LOAD_SHED__UPSTREAM__LISTEN", "127.0.0.1:9001"),
            ("LOAD_SHED__UPSTREAM__LATENCY_MS", "7"),
            ("LOAD_SHED__UPSTREAM__FAIL_RATE", "0.25"),
            ("LOAD_SHED__UPSTREAM__WORKERS", "3"),
            ("LOAD_SHED__UPSTREAM__CONCURRENCY", "8"),
            ("LOAD_SHED__UPSTREAM__JITTER_MS", "5"),
            ("LOAD_SHED__UPSTREAM__TAIL_RATE", "0.01"),
            ("LOAD_SHED__UPSTREAM__TAIL_MS", "900"),
            ("LOAD_SHED__UPSTREAM__FAIL_STATUS", "500"),
            ("LOAD_SHED__UPSTREAM__HANG_RATE", "0.02"),
            ("LOAD_SHED__UPSTREAM__RESET_RATE", "0.03"),
            ("LOAD_SHED__UPSTREAM__ALLOW_REQUEST_OVERRIDES", "false"),
            ("LOAD_SHED__TIMEOUTS__UPSTREAM_MS", "300"),
            ("LOAD_SHED__TIMEOUTS__CONNECT_MS", "30"),
            ("LOAD_SHED__TIMEOUTS__MIN_BUDGET_MS", "15"),
            ("LOAD_SHED__BREAKER__FAILURE_THRESHOLD", "3"),
            ("LOAD_SHED__BREAKER__OPEN_SECONDS", "2"),
            ("LOAD_SHED__BREAKER__HALF_OPEN_PROBES", "4"),
            ("LOAD_SHED__BREAKER__MODE", "failure_rate"),
            ("LOAD_SHED__BREAKER__WINDOW_SIZE", "50"),
            ("LOAD_SHED__BREAKER__MINIMUM_CALLS", "10"),
            ("LOAD_SHED__BREAKER__FAILURE_RATE_THRESHOLD", "0.4"),
            ("LOAD_SHED__BREAKER__SLOW_CALL_MS", "150"),
            ("LOAD_SHED__BREAKER__SLOW_CALL_RATE_THRESHOLD", "0.8"),
            ("LOAD_SHED__ADMISSION__MAX_INFLIGHT", "10"),
            ("LOAD_SHED__ADMISSION__NORMAL_MAX_INFLIGHT", "8"),
            ("LOAD_SHED__ADMISSION__LOW_MAX_INFLIGHT", "5"),
            ("LOAD_SHED__ADMISSION__MODE", "adaptive"),
            ("LOAD_SHED__ADMISSION__MIN_LIMIT", "4"),
            ("LOAD_SHED__ADMISSION__MAX_LIMIT", "40"),
            ("LOAD_SHED__ADMISSION__NORMAL_FRACTION", "0.8"),
            ("LOAD_SHED__ADMISSION__LOW_FRACTION", "0.5"),
            ("LOAD_SHED__SHUTDOWN__GRACE_SECONDS", "0"),
            ("LOAD_SHED__SERVER__CLIENT_REQUEST_TIMEOUT_MS", "1500"),
            ("LOAD_SHED__SERVER__KEEP_ALIVE_SECONDS", "0"),
            ("LOAD_SHED__SERVER__MAX_CONNECTIONS", "100"),
            ("UNRELATED", "ignored"),
        ])
        .unwrap();
        assert_eq!(s.role, Role::Api);
        assert_eq!(s.api.listen.port(), 9000);
        assert_eq!(s.api.upstream_url, "http://upstream:81");
        assert_eq!(s.api.max_upstream_body_bytes, 2048);
        assert_eq!(s.api.workers, 1);
        assert_eq!(s.upstream.listen.port(), 9001);
        assert_eq!(s.upstream.latency_ms, 7);
        assert_eq!(s.upstream.fail_rate, 0.25);
        assert_eq!(s.upstream.workers, 3);
        assert_eq!(s.upstream.concurrency, 8);
        assert_eq!(s.upstream.jitter_ms, 5);
        assert_eq!(s.upstream.tail_rate, 0.01);
        assert_eq!(s.upstream.tail_ms, 900);
        assert_eq!(s.upstream.fail_status, 500);
        assert_eq!(s.upstream.hang_rate, 0.02);
        assert_eq!(s.upstream.reset_rate, 0.03);
        assert!(!s.upstream.allow_request_overrides);
        assert_eq!(s.timeouts.upstream_ms, 300);
        assert_eq!(s.timeouts.connect_ms, 30);
        assert_eq!(s.timeouts.min_budget_ms, 15);
        assert_eq!(s.breaker.failure_threshold, 3);
        assert_eq!(s.breaker.open_seconds, 2);
        assert_eq!(s.breaker.half_open_probes, 4);
        assert_eq!(
            s.breaker.machine_config().trip,
            TripRule::FailureRate(RateWindow {
                size: 50,
                minimum_calls: 10,
                failure_rate_threshold: 0.4,
                slow_call: Duration::from_millis(150),
                slow_call_rate_threshold: 0.8,
            })
        );
        assert_eq!(
            s.admission.limits(),
            Limits {
                high: 10,
                normal: 8,
                low: 5
            }
        );
        assert_eq!(s.shutdown.grace_seconds, 0);
        let (gradient, fractions) = s.admission.adaptive().unwrap();
        assert_eq!((gradient.min_limit, gradient.max_limit), (4, 40));
        assert_eq!((fractions.normal, fractions.low), (0.8, 0.5));
        assert_eq!(s.server.client_request_timeout_ms, 1500);
        assert_eq!(s.server.keep_alive_seconds, 0);
        assert_eq!(s.server.max_connections, 100);
    }

    #[test]
    fn an_unknown_variable_is_rejected_by_name() {
        let e = err(&[("LOAD_SHED__API__LISEN", "0.0.0.0:1")]);
        assert_eq!(e.key, "LOAD_SHED__API__LISEN");
        assert!(e.rule.contains("unknown"), "{e}");
    }

    #[test]
    fn broken_values_name_their_key_and_rule() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "LOAD_SHED__BREAKER__FAILURE_THRESHOLD",
                "abc",
                "breaker.failure_threshold",
            ),
            (
                "LOAD_SHED__BREAKER__FAILURE_THRESHOLD",
                "0",
                "breaker.failure_threshold",
            ),
            (
                "LOAD_SHED__BREAKER__OPEN_SECONDS",
                "1.5",
                "breaker.open_seconds",
            ),
            (
                "LOAD_SHED__UPSTREAM__FAIL_RATE",
                "1.5",
                "upstream.fail_rate",
            ),
            (
                "LOAD_SHED__UPSTREAM__FAIL_RATE",
                "NaN",
                "upstream.fail_rate",
            ),
            (
                "LOAD_SHED__UPSTREAM__LATENCY_MS",
                "-1",
                "upstream.latency_ms",
            ),
            ("LOAD_SHED__ROLE", "proxy", "role"),
            (
                "LOAD_SHED__API__UPSTREAM_URL",
                "ftp://x",
                "api.upstream_url",
            ),
            (
                "LOAD_SHED__API__UPSTREAM_URL",
                "not a url",
                "api.upstream_url",
            ),
            ("LOAD_SHED__API__LISTEN", "8080", "api.listen"),
            (
                "LOAD_SHED__TIMEOUTS__UPSTREAM_MS",
                "0",
                "timeouts.upstream_ms",
            ),
            (
                "LOAD_SHED__ADMISSION__LOW_MAX_INFLIGHT",
                "45",
                "admission.low_max_inflight",
            ),
            (
                "LOAD_SHED__ADMISSION__NORMAL_MAX_INFLIGHT",
                "50",
                "admission.normal_max_inflight",
            ),
            (
                "LOAD_SHED__SERVER__CLIENT_REQUEST_TIMEOUT_MS",
                "10",
                "server.client_request_timeout_ms",
            ),
            (
                "LOAD_SHED__SERVER__MAX_CONNECTIONS",
                "0",
                "server.max_connections",
            ),
            (
                "LOAD_SHED__UPSTREAM__FAIL_STATUS",
                "200",
                "upstream.fail_status",
            ),
            ("LOAD_SHED__BREAKER__MODE", "rate", "breaker.mode"),
            ("LOAD_SHED__ADMISSION__MODE", "auto", "admission.mode"),
            (
                "LOAD_SHED__ADMISSION__QUEUE_TIMEOUT_MS",
                "0",
                "admission.queue_timeout_ms",
            ),
            (
                "LOAD_SHED__ADMISSION__QUEUE_SIZE",
                "100001",
                "admission.queue_size",
            ),
            (
                "LOAD_SHED__ADMISSION__MIN_LIMIT",
                "2",
                "admission.min_limit",
            ),
            (
                "LOAD_SHED__ADMISSION__LOW_FRACTION",
                "0.95",
                "admission.low_fraction",
            ),
            (
                "LOAD_SHED__BREAKER__MINIMUM_CALLS",
                "101",
                "breaker.minimum_calls",
            ),
            (
                "LOAD_SHED__BREAKER__FAILURE_RATE_THRESHOLD",
                "0",
                "breaker.failure_rate_threshold",
            ),
            (
                "LOAD_SHED__UPSTREAM__RESET_RATE",
                "2",
                "upstream.reset_rate",
            ),
            (
                "LOAD_SHED__UPSTREAM__HANG_RATE",
                "-0.5",
                "upstream.hang_rate",
            ),
            (
                "LOAD_SHED__UPSTREAM__ALLOW_REQUEST_OVERRIDES",
                "maybe",
                "upstream.allow_request_overrides",
            ),
        ];
        for (var, value, key) in cases {
            let e = err(&[(var, value)]);
            check_one_line(&e, var, value, key);
        }
        // A capacity loss needs a limited concurrency to lose from, and must lose some.
        let degrade = [("LOAD_SHED__UPSTREAM__DEGRADE_AFTER_SECONDS", "10")];
        for (extra, key) in [
            (vec![], "upstream.degrade_after_seconds"),
            (
                vec![
                    ("LOAD_SHED__UPSTREAM__CONCURRENCY", "10"),
                    ("LOAD_SHED__UPSTREAM__DEGRADED_CONCURRENCY", "10"),
                ],
                "upstream.degraded_concurrency",
            ),
            (
                vec![("LOAD_SHED__UPSTREAM__CONCURRENCY", "10")],
                "upstream.degraded_concurrency",
            ),
        ] {
            let e = err(&[degrade.as_slice(), extra.as_slice()].concat());
            check_one_line(&e, "LOAD_SHED__UPSTREAM__DEGRADE_AFTER_SECONDS", "10", key);
        }
    }

    fn check_one_line(e: &ConfigError, var: &str, value: &str, key: &str) {
        assert!(e.key.starts_with(key), "{var}={value}: {e}");
        let line = e.to_string();
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains(key), "{line}");
    }

    #[test]
    fn a_named_config_file_must_exist() {
        let env = vec![];
        let e = Settings::from_sources(Path::new("nope"), Some("/no/such/file.toml"), &env)
            .unwrap_err();
        assert_eq!(e.key, CONFIG_FILE_VAR);
    }
}
