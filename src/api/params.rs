//! Parsing and validation of `/client` and `/work` parameters. Values are case-sensitive; an
//! unknown or repeated parameter is an error; every error names its parameter (as a
//! [`BadParam`], the 400 both roles answer with).

use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::HttpRequest;

use crate::admission::Priority;
use crate::settings::{Timeouts, MAX_TENANT_LEN};
use crate::wire::{integer_in, BadParam, Overrides, Query, BUDGET_HEADER, PRIORITY_HEADER};

/// A validated `/client` request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ClientParams {
    /// `ms` and `fail_rate`: passed to the upstream only when given; otherwise the upstream's own
    /// defaults apply.
    pub overrides: Overrides,
    /// The timeout in force: `timeout_ms` (or the default), capped by the caller's budget header.
    pub timeout: Duration,
    /// Whether `timeout` is at least the configured default, so that a timeout may count
    /// against the breaker.
    pub full_timeout: bool,
    pub priority: Priority,
    /// The caller's remaining budget (`X-Request-Timeout-Ms`), when it sent one.
    pub budget: Option<Duration>,
}

/// A validated `/work` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WorkParams {
    pub ms: u64,
    pub priority: Priority,
}

/// One value of header `name` at most (a repeated header is a 400 naming it as `shown`).
fn one_value<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
    shown: &str,
) -> Result<Option<&'h HeaderValue>, BadParam> {
    let mut values = headers.get_all(name);
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(BadParam::new(shown, "repeated header"));
    }
    Ok(Some(first))
}

/// One header value at most, as visible ASCII.
fn single_header(headers: &HeaderMap, name: HeaderName) -> Result<Option<&str>, BadParam> {
    let shown = name_of(&name);
    one_value(headers, &name, shown)?
        .map(|v| {
            v.to_str()
                .map_err(|_| BadParam::new(shown, "must be visible ASCII"))
        })
        .transpose()
}

/// The header's conventional spelling for error messages.
fn name_of(header: &HeaderName) -> &'static str {
    if *header == PRIORITY_HEADER {
        "X-Priority"
    } else {
        "X-Request-Timeout-Ms"
    }
}

/// The tenant named by `header` (`admission.tenant_header`): `None` without the header; one
/// value of 1 to 64 printable ASCII characters (space included), else a 400 naming the header.
pub(crate) fn tenant<'h>(
    headers: &'h HeaderMap,
    header: &HeaderName,
) -> Result<Option<&'h str>, BadParam> {
    let shown = header.as_str();
    let Some(first) = one_value(headers, header, shown)? else {
        return Ok(None);
    };
    let bytes = first.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_TENANT_LEN {
        return Err(BadParam::new(
            shown,
            format!("must be 1 to {MAX_TENANT_LEN} characters"),
        ));
    }
    if !bytes.iter().all(|b| (0x20..0x7f).contains(b)) {
        return Err(BadParam::new(shown, "must be printable ASCII"));
    }
    Ok(first.to_str().ok())
}

/// `priority` from the query, else `X-Priority`, else normal.
fn priority(query: &Query<'_>, headers: &HeaderMap) -> Result<Priority, BadParam> {
    let (name, value) = match query.get("priority") {
        Some(v) => ("priority", Some(v)),
        None => ("X-Priority", single_header(headers, PRIORITY_HEADER)?),
    };
    match value {
        None => Ok(Priority::Normal),
        Some(v) => Priority::parse(v)
            .ok_or_else(|| BadParam::new(name, "must be one of high, normal, low")),
    }
}

const CLIENT_PARAMS: &[&str] = &["ms", "fail_rate", "timeout_ms", "priority"];
const WORK_PARAMS: &[&str] = &["ms", "priority"];

/// Longest budget accepted in `X-Request-Timeout-Ms` (one day).
const MAX_BUDGET_MS: u64 = 86_400_000;

impl ClientParams {
    pub(crate) fn from_request(req: &HttpRequest, defaults: Timeouts) -> Result<Self, BadParam> {
        Self::parse(req.query_string(), req.headers(), defaults)
    }

    pub(crate) fn parse(
        query: &str,
        headers: &HeaderMap,
        defaults: Timeouts,
    ) -> Result<Self, BadParam> {
        let q = Query::parse(query, CLIENT_PARAMS)?;
        let overrides = Overrides::from_query(&q)?;
        let asked = q
            .integer("timeout_ms", 1, 10_000)?
            .map(Duration::from_millis)
            .unwrap_or(defaults.upstream);
        let budget = single_header(headers, BUDGET_HEADER)?
            .map(|v| integer_in("X-Request-Timeout-Ms", v, 0, MAX_BUDGET_MS))
            .transpose()?
            .map(Duration::from_millis);
        let priority = priority(&q, headers)?;
        let mut params = Self {
            overrides,
            timeout: asked,
            full_timeout: asked >= defaults.upstream,
            priority,
            budget,
        };
        // The budget caps the timeout from the start.
        params.spend(Duration::ZERO, defaults);
        Ok(params)
    }

    /// Takes `spent` (time already used, e.g. waiting for admission) out of the caller's budget:
    /// the timeout in force becomes at most what is left, and full only if that is still at
    /// least the default. Returns what is left, or `None` when the caller sent no budget.
    pub(crate) fn spend(&mut self, spent: Duration, defaults: Timeouts) -> Option<Duration> {
        let left = self.budget?.saturating_sub(spent);
        self.budget = Some(left);
        if left < self.timeout {
            self.timeout = left;
            self.full_timeout = left >= defaults.upstream;
        }
        Some(left)
    }
}

impl WorkParams {
    pub(crate) const DEFAULT_MS: u64 = 50;

    pub(crate) fn from_request(req: &HttpRequest) -> Result<Self, BadParam> {
        Self::parse(req.query_string(), req.headers())
    }

    pub(crate) fn parse(query: &str, headers: &HeaderMap) -> Result<Self, BadParam> {
        let q = Query::parse(query, WORK_PARAMS)?;
        Ok(Self {
            ms: q.integer("ms", 1, 2000)?.unwrap_or(Self::DEFAULT_MS),
            priority: priority(&q, headers)?,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    const DEFAULTS: Timeouts = Timeouts {
        upstream: Duration::from_millis(200),
        connect: Duration::from_millis(100),
        min_budget: Duration::ZERO,
    };

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn client(query: &str) -> Result<ClientParams, BadParam> {
        ClientParams::parse(query, &HeaderMap::new(), DEFAULTS)
    }

    #[test]
    fn an_empty_query_takes_every_default() {
        let p = client("").unwrap();
        assert_eq!(p.overrides, Overrides::default());
        assert_eq!(p.timeout, Duration::from_millis(200));
        assert!(p.full_timeout);
        assert_eq!(p.priority, Priority::Normal);
    }

    #[test]
    fn given_values_are_kept() {
        let p = client("ms=10&fail_rate=0.5&timeout_ms=50&priority=low").unwrap();
        assert_eq!(p.overrides.ms, Some(10));
        assert_eq!(p.overrides.fail_rate, Some(0.5));
        assert_eq!(p.timeout, Duration::from_millis(50));
        assert!(!p.full_timeout);
        assert_eq!(p.priority, Priority::Low);
    }

    #[test]
    fn each_bad_value_names_its_parameter() {
        let cases = [
            ("ms=-1", "ms"),
            ("ms=5001", "ms"),
            ("ms=abc", "ms"),
            ("ms=1.5", "ms"),
            ("ms=", "ms"),
            ("fail_rate=nan", "fail_rate"),
            ("fail_rate=NaN", "fail_rate"),
            ("fail_rate=inf", "fail_rate"),
            ("fail_rate=-inf", "fail_rate"),
            ("fail_rate=1.01", "fail_rate"),
            ("fail_rate=-0.1", "fail_rate"),
            ("fail_rate=x", "fail_rate"),
            ("timeout_ms=0", "timeout_ms"),
            ("timeout_ms=10001", "timeout_ms"),
            ("timeout_ms=99999999999999999999999", "timeout_ms"),
            ("priority=urgent", "priority"),
            ("priority=HIGH", "priority"),
            ("ms=1&ms=2", "ms"),
            ("bogus=1", "bogus"),
            ("MS=1", "MS"),
        ];
        for (query, param) in cases {
            let e = client(query).unwrap_err();
            assert_eq!(e.param, param, "{query}: {e:?}");
        }
    }

    #[test]
    fn the_priority_header_is_used_unless_the_query_names_one() {
        let h = headers(&[("X-Priority", "high")]);
        assert_eq!(
            ClientParams::parse("", &h, DEFAULTS).unwrap().priority,
            Priority::High
        );
        let p = ClientParams::parse("priority=low", &h, DEFAULTS).unwrap();
        assert_eq!(p.priority, Priority::Low);
        let bad = headers(&[("X-Priority", "High")]);
        assert_eq!(
            ClientParams::parse("", &bad, DEFAULTS).unwrap_err().param,
            "X-Priority"
        );
        let twice = headers(&[("X-Priority", "low"), ("X-Priority", "high")]);
        assert_eq!(
            ClientParams::parse("", &twice, DEFAULTS).unwrap_err().param,
            "X-Priority"
        );
    }

    #[test]
    fn the_budget_header_caps_the_timeout_and_marks_it_short() {
        let h = headers(&[("X-Request-Timeout-Ms", "80")]);
        let p = ClientParams::parse("timeout_ms=1000", &h, DEFAULTS).unwrap();
        assert_eq!(p.timeout, Duration::from_millis(80));
        assert!(!p.full_timeout);
        let generous = headers(&[("X-Request-Timeout-Ms", "5000")]);
        let p = ClientParams::parse("", &generous, DEFAULTS).unwrap();
        assert_eq!(p.timeout, Duration::from_millis(200));
        assert!(p.full_timeout);
        let bad = headers(&[("X-Request-Timeout-Ms", "soon")]);
        assert_eq!(
            ClientParams::parse("", &bad, DEFAULTS).unwrap_err().param,
            "X-Request-Timeout-Ms"
        );
    }

    #[test]
    fn time_spent_comes_out_of_the_budget_and_the_timeout() {
        let h = headers(&[("X-Request-Timeout-Ms", "500")]);
        let mut p = ClientParams::parse("timeout_ms=400", &h, DEFAULTS).unwrap();
        assert_eq!(p.timeout, Duration::from_millis(400));
        // 150 ms waited: 350 ms left, still above the 200 ms default.
        assert_eq!(
            p.spend(Duration::from_millis(150), DEFAULTS),
            Some(Duration::from_millis(350))
        );
        assert_eq!(p.timeout, Duration::from_millis(350));
        assert!(p.full_timeout);
        // 250 ms more: 100 ms left, a short timeout now.
        assert_eq!(
            p.spend(Duration::from_millis(250), DEFAULTS),
            Some(Duration::from_millis(100))
        );
        assert_eq!(p.timeout, Duration::from_millis(100));
        assert!(!p.full_timeout);
        // Without a budget nothing changes.
        let mut p = ClientParams::parse("", &HeaderMap::new(), DEFAULTS).unwrap();
        assert_eq!(p.spend(Duration::from_secs(9), DEFAULTS), None);
        assert_eq!(p.timeout, Duration::from_millis(200));
    }

    #[test]
    fn work_takes_ms_within_its_range() {
        let h = HeaderMap::new();
        assert_eq!(WorkParams::parse("", &h).unwrap().ms, 50);
        assert_eq!(WorkParams::parse("ms=2000", &h).unwrap().ms, 2000);
        assert_eq!(WorkParams::parse("ms=0", &h).unwrap_err().param, "ms");
        assert_eq!(WorkParams::parse("ms=2001", &h).unwrap_err().param, "ms");
        assert_eq!(
            WorkParams::parse("timeout_ms=1", &h).unwrap_err().param,
            "timeout_ms"
        );
    }
}

/// Property tests: arbitrary input never panics, and what parses is within the documented ranges.
/// Each property runs 5000 cases per `cargo test` (PROPTEST_CASES overrides).
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod properties {
    use super::*;
    use crate::wire::MAX_ECHOED_NAME;
    use actix_web::http::header::HeaderValue;
    use proptest::prelude::*;

    const DEFAULTS: Timeouts = Timeouts {
        upstream: Duration::from_millis(200),
        connect: Duration::from_millis(100),
        min_budget: Duration::ZERO,
    };

    /// Values near every boundary and every trick a number parser meets.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "-?[0-9]{1,25}",
            "-?[0-9]{0,5}\\.[0-9]{0,5}",
            "[0-9]e[+-]?[0-9]{1,3}",
            prop::sample::select(vec![
                "nan", "NaN", "inf", "-inf", "infinity", "+1", "-0", "0x10", "1_000", "high",
                "normal", "low", "HIGH", " low", "%00", "%ff", "%", "%%", "+", "&", "=",
            ])
            .prop_map(str::to_string),
            any::<String>(),
        ]
    }

    fn query() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            prop::sample::select(vec!["ms", "fail_rate", "timeout_ms", "priority", "MS", ""])
                .prop_map(str::to_string),
            "[a-z_]{1,12}",
            any::<String>(),
        ];
        prop::collection::vec((key, value()), 0..6).prop_map(|pairs| {
            pairs
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&")
        })
    }

    fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            value().prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 0..40),
        ]
    }

    fn headers(priority: Option<Vec<u8>>, budget: Option<Vec<u8>>) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, bytes) in [(PRIORITY_HEADER, priority), (BUDGET_HEADER, budget)] {
            // Bytes that cannot be a header value never reach the handler (actix rejects them).
            if let Some(v) = bytes.and_then(|b| HeaderValue::from_bytes(&b).ok()) {
                h.insert(name, v);
            }
        }
        h
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 5000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn client_parameters_never_panic_and_stay_in_range(
            q in query(),
            priority in proptest::option::of(header_bytes()),
            budget in proptest::option::of(header_bytes()),
        ) {
            match ClientParams::parse(&q, &headers(priority, budget), DEFAULTS) {
                Ok(p) => {
                    prop_assert!(p.overrides.ms.is_none_or(|ms| ms <= 5000));
                    prop_assert!(p.overrides.fail_rate.is_none_or(|r| r.is_finite() && (0.0..=1.0).contains(&r)));
                    prop_assert!(p.timeout <= Duration::from_millis(10_000));
                    prop_assert_eq!(p.full_timeout, p.timeout >= DEFAULTS.upstream);
                }
                Err(bad) => {
                    prop_assert!(!bad.error.is_empty());
                    prop_assert!(bad.param.chars().count() <= MAX_ECHOED_NAME + 1);
                }
            }
        }

        #[test]
        fn arbitrary_query_strings_never_panic(q in any::<String>()) {
            let _ = ClientParams::parse(&q, &HeaderMap::new(), DEFAULTS);
            let _ = WorkParams::parse(&q, &HeaderMap::new());
        }

        #[test]
        fn work_parameters_stay_in_range(q in query()) {
            if let Ok(p) = WorkParams::parse(&q, &HeaderMap::new()) {
                prop_assert!((1..=2000).contains(&p.ms));
            }
        }
    }
}
