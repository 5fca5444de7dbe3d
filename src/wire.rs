//! What the api and the simulated dependency agree on over HTTP, and nothing else: the header
//! names, the two parameters a caller may pass through to the dependency (`ms`, `fail_rate`) and
//! whether it may, how a query string is read, and the 400 error both answer with. Both roles
//! depend on this module; neither imports the other.

use std::borrow::Cow;

use actix_web::http::header::HeaderName;

use crate::bounds;

// The header names are `HeaderName`s, not text: a lookup by `&str` parses (and, for a name that
// is not a standard one, copies) the name on every call.

/// The caller's priority class, as a header (the `priority` parameter wins over it).
pub(crate) const PRIORITY_HEADER: HeaderName = HeaderName::from_static("x-priority");
/// The caller's remaining budget in milliseconds (deadline propagation). The api sends its
/// timeout in force to the dependency under this name, which stops work nobody will read.
pub(crate) const BUDGET_HEADER: HeaderName = HeaderName::from_static("x-request-timeout-ms");

/// Longest parameter name echoed back in an error.
pub(crate) const MAX_ECHOED_NAME: usize = 64;

/// A rejected parameter or header: 400 `{"error": …, "param": …}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {error}")]
pub struct BadParam {
    /// The parameter's (or header's) name, cut to [`MAX_ECHOED_NAME`] characters.
    pub param: String,
    pub error: String,
}

impl BadParam {
    pub(crate) fn new(param: &str, error: impl Into<String>) -> Self {
        let param = match param.char_indices().nth(MAX_ECHOED_NAME) {
            Some((cut, _)) => format!("{}…", &param[..cut]),
            None => param.to_string(),
        };
        Self {
            param,
            error: error.into(),
        }
    }
}

/// A query string as name → value, for the names a route accepts. Names and values are
/// case-sensitive; an unknown or repeated name is an error.
/// Values are borrowed from the query string unless they had to be decoded.
pub(crate) struct Query<'q> {
    pairs: Vec<(&'static str, Cow<'q, str>)>,
}

impl<'q> Query<'q> {
    pub(crate) fn parse(query: &'q str, names: &[&'static str]) -> Result<Self, BadParam> {
        let mut pairs: Vec<(&'static str, Cow<'q, str>)> = Vec::new();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let Some(known) = names.iter().find(|n| **n == name) else {
                return Err(BadParam::new(&name, "unknown parameter"));
            };
            if pairs.iter().any(|(n, _)| n == known) {
                return Err(BadParam::new(known, "repeated parameter"));
            }
            pairs.push((known, value));
        }
        Ok(Self { pairs })
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_ref())
    }

    /// `name` as an integer in `min..=max`, if given.
    pub(crate) fn integer(
        &self,
        name: &'static str,
        min: u64,
        max: u64,
    ) -> Result<Option<u64>, BadParam> {
        self.get(name)
            .map(|v| integer_in(name, v, min, max))
            .transpose()
    }

    /// `name` as a probability (a finite number in [0, 1]), if given.
    pub(crate) fn probability(&self, name: &'static str) -> Result<Option<f64>, BadParam> {
        self.get(name)
            .map(|v| match v.parse::<f64>() {
                Ok(r) if bounds::is_probability(r) => Ok(r),
                _ => Err(BadParam::new(name, "must be a number between 0 and 1")),
            })
            .transpose()
    }
}

/// `value` as an integer in `min..=max`, or an error naming `name`.
pub(crate) fn integer_in(name: &str, value: &str, min: u64, max: u64) -> Result<u64, BadParam> {
    let rule = || BadParam::new(name, format!("must be an integer between {min} and {max}"));
    let n: u64 = value.parse().map_err(|_| rule())?;
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(rule())
    }
}

/// The parameters a caller may pass through to the dependency: its latency and its failure
/// probability for this one call. `None` leaves the dependency's configured default.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Overrides {
    pub ms: Option<u64>,
    pub fail_rate: Option<f64>,
}

impl Overrides {
    /// Their names, as they appear in a query string.
    pub(crate) const NAMES: [&'static str; 2] = ["ms", "fail_rate"];

    /// Reads them from a parsed query: `ms` in 0–5000, `fail_rate` a probability.
    pub(crate) fn from_query(q: &Query<'_>) -> Result<Self, BadParam> {
        Ok(Self {
            ms: q.integer("ms", 0, 5000)?,
            fail_rate: q.probability("fail_rate")?,
        })
    }

    /// Appends the query string that passes them on (nothing, or starting with `?`) to `out`.
    pub(crate) fn write_query(self, out: &mut String) {
        use std::fmt::Write;
        let mut sep = '?';
        // Writing to a String cannot fail.
        if let Some(ms) = self.ms {
            let _ = write!(out, "{sep}ms={ms}");
            sep = '&';
        }
        if let Some(rate) = self.fail_rate {
            let _ = write!(out, "{sep}fail_rate={rate}");
        }
    }
}

/// Whether callers may pass [`Overrides`] at all (`upstream.allow_request_overrides`). Both roles
/// enforce it: the api so no caller can make the dependency fail through it, the dependency for
/// callers that reach it directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverridePolicy {
    Allowed,
    Refused,
}

impl OverridePolicy {
    /// Under [`OverridePolicy::Refused`], a query naming `ms` or `fail_rate` is a 400.
    pub(crate) fn check(self, query: &str) -> Result<(), BadParam> {
        if self == OverridePolicy::Allowed {
            return Ok(());
        }
        for (name, _) in form_urlencoded::parse(query.as_bytes()) {
            if Overrides::NAMES.contains(&name.as_ref()) {
                return Err(BadParam {
                    param: name.into_owned(),
                    error: "request overrides are disabled (upstream.allow_request_overrides)"
                        .into(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_the_overrides_the_caller_gave_are_passed_on() {
        let o = |ms, fail_rate| {
            let mut query = String::new();
            Overrides { ms, fail_rate }.write_query(&mut query);
            query
        };
        assert_eq!(o(None, None), "");
        assert_eq!(o(Some(5), None), "?ms=5");
        assert_eq!(o(None, Some(0.25)), "?fail_rate=0.25");
        assert_eq!(o(Some(0), Some(1.0)), "?ms=0&fail_rate=1");
    }

    #[test]
    fn a_refused_policy_names_the_override_it_found() {
        assert!(OverridePolicy::Allowed.check("ms=1&fail_rate=1").is_ok());
        assert!(OverridePolicy::Refused.check("priority=low").is_ok());
        let bad = OverridePolicy::Refused
            .check("priority=low&fail_rate=1")
            .unwrap_err();
        assert_eq!(bad.param, "fail_rate");
        assert!(bad.to_string().contains("overrides are disabled"), "{bad}");
    }

    #[test]
    fn long_unknown_names_are_cut_when_echoed() {
        let name = "x".repeat(10_000);
        let e = Query::parse(&format!("{name}=1"), &["ms"]).err().unwrap();
        assert!(e.param.chars().count() <= MAX_ECHOED_NAME + 1);
    }
}
