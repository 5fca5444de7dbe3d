//! `[admission]`: static ceilings or the adaptive limiter's bounds and fractions, and the
//! backlog: [`AdmissionConfig`], handed whole to admission (`crate::admission`, which holds its
//! behaviour).

use std::time::Duration;

use serde::Deserialize;

use super::rules::{check, count, in_range, one_of, ConfigError};
use crate::admission::{Fractions, Limits};

/// How admission decides (`[admission]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct AdmissionConfig {
    pub mode: AdmissionMode,
    pub backlog: BacklogConfig,
    /// Whether sheds are enforced (`admission.enforce`); `false` is shadow mode: a request that
    /// would be shed goes on, counted, outside the in-flight count enforcing would have.
    pub enforce: bool,
    /// Tenant fairness and quotas (`admission.tenant_header` set), else `None`.
    pub fair: Option<FairConfig>,
}

/// Tenant fairness's configuration (`[admission]`'s tenant keys, when `tenant_header` is set);
/// its behaviour is in `crate::admission`'s fairness rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct FairConfig {
    /// The header naming the tenant, lowercase (validated as a header name).
    pub header: &'static str,
    /// Named tenants tracked at most; beyond, new tenants share the overflow tenant.
    pub max_tenants: usize,
    pub quota: Option<Quota>,
}

/// The per-tenant token bucket: `rate` tokens per second, at most `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Quota {
    pub rate: f64,
    pub burst: f64,
}

/// Longest tenant header value accepted (a longer one is a 400).
pub(crate) const MAX_TENANT_LEN: usize = 64;

impl AdmissionConfig {
    /// The in-flight ceiling this replica allows itself: the fixed one, or the adaptive limit's
    /// bound (a live limit below it is set by the dependency's latency, not by this replica).
    pub(crate) fn own_capacity(&self) -> u32 {
        match self.mode {
            AdmissionMode::Static(limits) => limits.high,
            AdmissionMode::Adaptive { limiter, .. } => limiter.max_limit,
        }
    }
}

/// Where the ceilings come from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum AdmissionMode {
    /// Fixed ceilings per class.
    Static(Limits),
    /// A gradient limiter sets the live limit; the lower classes get their fractions of it.
    Adaptive {
        limiter: GradientConfig,
        fractions: Fractions,
    },
}

/// The gradient limiter's parameters (`admission.min_limit`, `max_limit`; the rest are its tuned
/// constants, see `crate::admission`'s adaptive limit).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct GradientConfig {
    pub min_limit: u32,
    pub max_limit: u32,
    /// Shortest sampling window; the limit changes at most once per window.
    pub interval: Duration,
    /// Fewest samples a window needs (a window is extended until it has them).
    pub min_samples: usize,
    /// Latency accepted above the baseline before the limit shrinks, as a share of it.
    pub buffer: f64,
    /// Calls added to the limit at every update (room to find capacity that comes back).
    pub headroom: f64,
    /// How often the baseline is measured again.
    pub probe_interval: Duration,
    /// Calls at `min_limit` whose median is the baseline.
    pub probe_samples: usize,
}

impl GradientConfig {
    /// The defaults for everything but the bounds.
    pub(crate) fn new(min_limit: u32, max_limit: u32) -> Self {
        Self {
            min_limit,
            max_limit,
            interval: Duration::from_millis(50),
            min_samples: 10,
            buffer: 0.1,
            headroom: 1.0,
            probe_interval: Duration::from_secs(30),
            probe_samples: 25,
        }
    }
}

/// The optional backlog: how many may wait (0 = none), and for how long at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BacklogConfig {
    pub size: usize,
    pub timeout: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmission {
    max_inflight: u32,
    normal_max_inflight: u32,
    low_max_inflight: u32,
    mode: String,
    min_limit: u32,
    max_limit: u32,
    normal_fraction: f64,
    low_fraction: f64,
    queue_size: u32,
    queue_timeout_ms: u64,
    enforce: bool,
    tenant_header: String,
    tenant_rate_per_second: f64,
    tenant_burst: u32,
    max_tenants: u32,
}

/// `admission.mode`, before its parameters are attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Static,
    Adaptive,
}

impl TryFrom<RawAdmission> for AdmissionConfig {
    type Error = ConfigError;

    fn try_from(a: RawAdmission) -> Result<Self, ConfigError> {
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
        let mode = one_of(
            "admission.mode",
            &a.mode,
            &[("static", Mode::Static), ("adaptive", Mode::Adaptive)],
        )?;
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
        let fair = fairness(&a)?;
        Ok(AdmissionConfig {
            fair,
            mode: match mode {
                Mode::Static => AdmissionMode::Static(Limits {
                    high: a.max_inflight,
                    normal: a.normal_max_inflight,
                    low: a.low_max_inflight,
                }),
                Mode::Adaptive => AdmissionMode::Adaptive {
                    limiter: GradientConfig::new(a.min_limit, a.max_limit),
                    fractions: Fractions {
                        normal: a.normal_fraction,
                        low: a.low_fraction,
                    },
                },
            },
            backlog: BacklogConfig {
                size: count(a.queue_size.into()),
                timeout: Duration::from_millis(a.queue_timeout_ms),
            },
            enforce: a.enforce,
        })
    }
}

/// The tenant keys: `None` when `tenant_header` is empty (and then no quota may be asked for).
fn fairness(a: &RawAdmission) -> Result<Option<FairConfig>, ConfigError> {
    let rate = a.tenant_rate_per_second;
    check(
        rate.is_finite() && (0.0..=1_000_000.0).contains(&rate),
        "admission.tenant_rate_per_second",
        || format!("must be a number between 0 and 1000000 (0 = no quota), got {rate}"),
    )?;
    in_range(
        "admission.tenant_burst",
        a.tenant_burst.into(),
        0,
        1_000_000,
    )?;
    check(
        (rate > 0.0) == (a.tenant_burst > 0),
        "admission.tenant_burst",
        || {
            format!(
                "a quota needs both tenant_rate_per_second and tenant_burst above 0 (or both 0 = none), got {rate} and {}",
                a.tenant_burst
            )
        },
    )?;
    in_range("admission.max_tenants", a.max_tenants.into(), 1, 1_000_000)?;
    let header = a.tenant_header.trim();
    if header.is_empty() {
        check(rate == 0.0, "admission.tenant_rate_per_second", || {
            "a per-tenant quota needs admission.tenant_header".to_string()
        })?;
        return Ok(None);
    }
    let name = actix_web::http::header::HeaderName::try_from(header).map_err(|_| {
        ConfigError::at(
            "admission.tenant_header",
            format!("must be an HTTP header name (letters, digits, '-'), got {header:?}"),
        )
    })?;
    // Configured once per process: a few bytes kept for its lifetime.
    let header: &'static str = Box::leak(name.as_str().to_string().into_boxed_str());
    Ok(Some(FairConfig {
        header,
        max_tenants: count(a.max_tenants.into()),
        quota: (rate > 0.0).then(|| Quota {
            rate,
            burst: f64::from(a.tenant_burst),
        }),
    }))
}
