//! Typed configuration. Sources are layered (see [`loader`]); each section's raw form is turned
//! into the domain type it configures, with its rules beside it, so a value that is here is valid
//! and a mode is an enum. Any mistake is one [`ConfigError`] line, and the binary exits 2. The
//! typed sections are declared here, in their section's file, and handed whole to the components
//! (which keep their behaviour): a new key touches one Rust file besides the code that reads it.
//!
//! - [`loader`]: the layered sources and the check for unknown variables.
//! - [`rules`]: [`ConfigError`] and the range, probability and choice rules.
//! - one file per section: [`api`], [`upstream`], [`timeouts`], [`breaker`], [`admission`],
//!   [`retry`], [`server`], [`shutdown`], [`admin`].

mod admin;
mod admission;
mod api;
mod breaker;
mod loader;
mod retry;
mod rules;
mod server;
mod shutdown;
mod timeouts;
mod upstream;

use serde::Deserialize;

pub use rules::ConfigError;

pub(crate) use admin::AdminSettings;
pub(crate) use admission::{
    AdmissionConfig, AdmissionMode, FairConfig, GradientConfig, Quota, MAX_TENANT_LEN,
};
pub(crate) use api::ApiSettings;
pub use breaker::{BreakerConfig, RateWindow, ThrottleParams, TripRule};
pub(crate) use retry::{BudgetConfig, RetryConfig, RetryOn};
pub(crate) use server::ServerSettings;
pub(crate) use shutdown::ShutdownSettings;
pub(crate) use timeouts::Timeouts;
pub(crate) use upstream::UpstreamSettings;
pub use upstream::{Faults, SimulatorConfig};

use crate::wire::OverridePolicy;

/// What one process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Api,
    Upstream,
    All,
}

impl Role {
    pub(crate) fn serves_api(self) -> bool {
        matches!(self, Role::Api | Role::All)
    }

    pub(crate) fn serves_upstream(self) -> bool {
        matches!(self, Role::Upstream | Role::All)
    }

    /// As `role` spells it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Role::Api => "api",
            Role::Upstream => "upstream",
            Role::All => "all",
        }
    }
}

/// The whole configuration of a process, valid by construction.
#[derive(Debug, Clone)]
pub struct Settings {
    pub(crate) role: Role,
    pub(crate) api: ApiSettings,
    pub(crate) upstream: UpstreamSettings,
    /// `upstream.allow_request_overrides`, enforced by both roles.
    pub(crate) overrides: OverridePolicy,
    pub(crate) timeouts: Timeouts,
    pub(crate) breaker: BreakerConfig,
    pub(crate) admission: AdmissionConfig,
    pub(crate) retry: RetryConfig,
    pub(crate) server: ServerSettings,
    pub(crate) shutdown: ShutdownSettings,
    pub(crate) admin: AdminSettings,
}

/// The raw shape of the files and environment, before any rule is checked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    role: String,
    api: api::RawApi,
    upstream: upstream::RawUpstream,
    timeouts: timeouts::RawTimeouts,
    breaker: breaker::RawBreaker,
    admission: admission::RawAdmission,
    retry: retry::RawRetry,
    server: server::RawServer,
    shutdown: shutdown::RawShutdown,
    admin: admin::RawAdmin,
}

impl TryFrom<RawSettings> for Settings {
    type Error = ConfigError;

    /// Sections are checked in file order; the first broken value is the one reported.
    fn try_from(raw: RawSettings) -> Result<Self, ConfigError> {
        let role = match raw.role.as_str() {
            "api" => Role::Api,
            "upstream" => Role::Upstream,
            "all" => Role::All,
            other => {
                return Err(ConfigError::at(
                    "role",
                    format!("must be one of api, upstream, all, got {other:?}"),
                ))
            }
        };
        let overrides = if raw.upstream.allow_request_overrides {
            OverridePolicy::Allowed
        } else {
            OverridePolicy::Refused
        };
        Ok(Settings {
            role,
            api: raw.api.try_into()?,
            upstream: raw.upstream.try_into()?,
            overrides,
            timeouts: raw.timeouts.try_into()?,
            breaker: raw.breaker.try_into()?,
            admission: raw.admission.try_into()?,
            retry: raw.retry.try_into()?,
            shutdown: raw.shutdown.try_into()?,
            server: raw.server.try_into()?,
            admin: raw.admin.try_into()?,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::admission::{AdmissionMode, Limits};
    use crate::breaker::{RateWindow, TripRule};
    use actix_web::http::StatusCode;
    use std::path::Path;
    use std::time::Duration;

    fn err(env: &[(&str, &str)]) -> ConfigError {
        Settings::from_env_pairs(env).unwrap_err()
    }

    #[test]
    fn the_embedded_defaults_are_the_documented_defaults() {
        let s = Settings::from_env_pairs(&[]).unwrap();
        assert_eq!(s.role, Role::All);
        assert_eq!(s.api.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(s.api.upstream_url, "http://127.0.0.1:8081");
        assert_eq!(s.upstream.listen.to_string(), "0.0.0.0:8081");
        assert_eq!(s.upstream.simulator.latency_ms, 50);
        assert_eq!(s.upstream.simulator.fail_rate, 0.0);
        assert_eq!(s.timeouts.upstream, Duration::from_millis(200));
        assert_eq!(s.timeouts.connect, Duration::from_millis(100));
        assert_eq!(s.breaker.trip, TripRule::Consecutive { threshold: 5 });
        assert_eq!(s.breaker.open_for, Duration::from_secs(10));
        assert_eq!(s.breaker.half_open_probes, 1);
        assert_eq!(s.api.max_upstream_body_bytes, 1_048_576);
        assert_eq!(
            s.admission.mode,
            AdmissionMode::Static(Limits {
                high: 50,
                normal: 45,
                low: 35
            })
        );
        assert_eq!(s.admission.backlog.size, 0);
        assert_eq!(s.overrides, OverridePolicy::Allowed);
        assert_eq!(s.shutdown.grace, Duration::from_secs(20));
        assert_eq!(s.shutdown.drain_delay, Duration::from_secs(2));
        assert!(!s.retry.enabled(), "retries are off by default");
        assert_eq!(s.retry.max_attempts, 1);
        assert_eq!(s.retry.hedge_after, None);
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
            ("LOAD_SHED__ADMISSION__QUEUE_SIZE", "7"),
            ("LOAD_SHED__ADMISSION__QUEUE_TIMEOUT_MS", "80"),
            ("LOAD_SHED__UPSTREAM__DEGRADE_AFTER_SECONDS", "60"),
            ("LOAD_SHED__UPSTREAM__DEGRADED_CONCURRENCY", "2"),
            ("LOAD_SHED__SHUTDOWN__GRACE_SECONDS", "0"),
            ("LOAD_SHED__SHUTDOWN__DRAIN_DELAY_SECONDS", "7"),
            ("LOAD_SHED__RETRY__MAX_ATTEMPTS", "3"),
            ("LOAD_SHED__RETRY__BUDGET_RATIO", "0.5"),
            ("LOAD_SHED__RETRY__MIN_PER_SECOND", "4"),
            ("LOAD_SHED__RETRY__BUDGET_TTL_SECONDS", "20"),
            ("LOAD_SHED__RETRY__BACKOFF_BASE_MS", "10"),
            ("LOAD_SHED__RETRY__BACKOFF_MAX_MS", "90"),
            ("LOAD_SHED__RETRY__ON", "timeout, 5xx"),
            ("LOAD_SHED__RETRY__PER_TRY_TIMEOUT_MS", "70"),
            ("LOAD_SHED__RETRY__HEDGE_AFTER_MS", "40"),
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
        let sim = &s.upstream.simulator;
        assert_eq!(sim.latency_ms, 7);
        assert_eq!(sim.fail_rate, 0.25);
        assert_eq!(s.upstream.workers, 3);
        assert_eq!(sim.concurrency, 8);
        assert_eq!(sim.faults.jitter_ms, 5);
        assert_eq!(sim.faults.tail_rate, 0.01);
        assert_eq!(sim.faults.tail_ms, 900);
        assert_eq!(sim.faults.fail_status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(sim.faults.hang_rate, 0.02);
        assert_eq!(sim.faults.reset_rate, 0.03);
        assert_eq!(s.overrides, OverridePolicy::Refused);
        assert_eq!(s.timeouts.upstream, Duration::from_millis(300));
        assert_eq!(s.timeouts.connect, Duration::from_millis(30));
        assert_eq!(s.timeouts.min_budget, Duration::from_millis(15));
        // Read in every mode; the consecutive policy is the one that carries it.
        let consecutive =
            Settings::from_env_pairs(&[("LOAD_SHED__BREAKER__FAILURE_THRESHOLD", "3")]).unwrap();
        assert_eq!(
            consecutive.breaker.trip,
            TripRule::Consecutive { threshold: 3 }
        );
        assert_eq!(s.breaker.open_for, Duration::from_secs(2));
        assert_eq!(s.breaker.half_open_probes, 4);
        assert_eq!(
            s.breaker.trip,
            TripRule::FailureRate(RateWindow {
                size: 50,
                minimum_calls: 10,
                failure_rate_threshold: 0.4,
                slow_call: Duration::from_millis(150),
                slow_call_rate_threshold: 0.8,
            })
        );
        assert_eq!(s.shutdown.grace, Duration::ZERO);
        assert_eq!(s.shutdown.drain_delay, Duration::from_secs(7));
        let r = s.retry;
        assert_eq!(r.max_attempts, 3);
        assert_eq!(
            (r.budget.ratio, r.budget.min_per_second, r.budget.ttl),
            (0.5, 4, Duration::from_secs(20))
        );
        assert_eq!(
            (r.backoff_base, r.backoff_max),
            (Duration::from_millis(10), Duration::from_millis(90))
        );
        assert_eq!(
            (r.on.transport, r.on.status_5xx, r.on.timeout),
            (false, true, true)
        );
        assert_eq!(r.per_try_timeout, Some(Duration::from_millis(70)));
        assert_eq!(r.hedge_after, Some(Duration::from_millis(40)));
        let AdmissionMode::Adaptive { limiter, fractions } = s.admission.mode else {
            panic!("adaptive mode expected, got {:?}", s.admission.mode);
        };
        assert_eq!((limiter.min_limit, limiter.max_limit), (4, 40));
        assert_eq!((fractions.normal, fractions.low), (0.8, 0.5));
        assert_eq!(s.admission.backlog.size, 7);
        assert_eq!(s.admission.backlog.timeout, Duration::from_millis(80));
        assert_eq!(s.server.client_request_timeout, Duration::from_millis(1500));
        assert_eq!(s.server.keep_alive, None);
        assert_eq!(s.server.max_connections, 100);
        assert_eq!(
            s.upstream.simulator.degrade,
            Some(crate::upstream::Degrade {
                after: Duration::from_secs(60),
                to: 2
            })
        );
        // The static ceilings, which adaptive mode does not use, are settable too.
        let s = Settings::from_env_pairs(&[
            ("LOAD_SHED__ADMISSION__MAX_INFLIGHT", "10"),
            ("LOAD_SHED__ADMISSION__NORMAL_MAX_INFLIGHT", "8"),
            ("LOAD_SHED__ADMISSION__LOW_MAX_INFLIGHT", "5"),
        ])
        .unwrap();
        assert_eq!(
            s.admission.mode,
            AdmissionMode::Static(Limits {
                high: 10,
                normal: 8,
                low: 5
            })
        );
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
                "LOAD_SHED__ADMISSION__TENANT_HEADER",
                "X Tenant",
                "admission.tenant_header",
            ),
            (
                "LOAD_SHED__ADMISSION__TENANT_RATE_PER_SECOND",
                "5",
                "admission.tenant_burst",
            ),
            (
                "LOAD_SHED__ADMISSION__TENANT_RATE_PER_SECOND",
                "-1",
                "admission.tenant_rate_per_second",
            ),
            (
                "LOAD_SHED__ADMISSION__TENANT_BURST",
                "5",
                "admission.tenant_burst",
            ),
            (
                "LOAD_SHED__ADMISSION__MAX_TENANTS",
                "0",
                "admission.max_tenants",
            ),
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
            ("LOAD_SHED__RETRY__MAX_ATTEMPTS", "0", "retry.max_attempts"),
            ("LOAD_SHED__RETRY__ON", "5xx,4xx", "retry.on"),
            (
                "LOAD_SHED__RETRY__BUDGET_RATIO",
                "NaN",
                "retry.budget_ratio",
            ),
            (
                "LOAD_SHED__RETRY__BACKOFF_MAX_MS",
                "10",
                "retry.backoff_max_ms",
            ),
            (
                "LOAD_SHED__SHUTDOWN__DRAIN_DELAY_SECONDS",
                "301",
                "shutdown.drain_delay_seconds",
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

    #[test]
    fn tenant_fairness_is_off_by_default_and_a_quota_needs_its_header() {
        assert_eq!(Settings::from_env_pairs(&[]).unwrap().admission.fair, None);
        let e = err(&[
            ("LOAD_SHED__ADMISSION__TENANT_RATE_PER_SECOND", "5"),
            ("LOAD_SHED__ADMISSION__TENANT_BURST", "10"),
        ]);
        check_one_line(
            &e,
            "LOAD_SHED__ADMISSION__TENANT_RATE_PER_SECOND",
            "5",
            "admission.tenant_rate_per_second",
        );
        let s = Settings::from_env_pairs(&[
            ("LOAD_SHED__ADMISSION__TENANT_HEADER", "X-Tenant"),
            ("LOAD_SHED__ADMISSION__TENANT_RATE_PER_SECOND", "2.5"),
            ("LOAD_SHED__ADMISSION__TENANT_BURST", "10"),
            ("LOAD_SHED__ADMISSION__MAX_TENANTS", "7"),
        ])
        .unwrap();
        assert_eq!(
            s.admission.fair,
            Some(crate::settings::FairConfig {
                header: "x-tenant",
                max_tenants: 7,
                quota: Some(crate::settings::Quota {
                    rate: 2.5,
                    burst: 10.0
                }),
            })
        );
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
        assert_eq!(e.key, loader::CONFIG_FILE_VAR);
    }
}
