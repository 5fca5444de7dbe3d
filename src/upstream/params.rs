//! The parameters of `GET /upstream`: `ms` and `fail_rate`, each falling back to the
//! simulator's configured default when the caller names none.

use crate::wire::{BadParam, Overrides, Query};

/// What one request asks of the simulator, defaults applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct UpstreamParams {
    pub ms: u64,
    pub fail_rate: f64,
}

impl UpstreamParams {
    pub(crate) fn parse(
        query: &str,
        default_ms: u64,
        default_fail_rate: f64,
    ) -> Result<Self, BadParam> {
        let given = Overrides::from_query(&Query::parse(query, &Overrides::NAMES)?)?;
        Ok(Self {
            ms: given.ms.unwrap_or(default_ms),
            fail_rate: given.fail_rate.unwrap_or(default_fail_rate),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(q: &str) -> Result<(u64, f64), BadParam> {
        UpstreamParams::parse(q, 50, 0.1).map(|p| (p.ms, p.fail_rate))
    }

    #[test]
    fn upstream_parameters_fall_back_to_configuration() {
        assert_eq!(parse("").unwrap(), (50, 0.1));
        assert_eq!(parse("ms=0&fail_rate=1").unwrap(), (0, 1.0));
        assert_eq!(parse("fail_rate=inf").unwrap_err().param, "fail_rate");
    }
}

/// Property tests: arbitrary input never panics; what parses is in range.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Queries of known and unknown names with values near every boundary, and arbitrary text.
    fn query() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            prop::sample::select(vec!["ms", "fail_rate", "MS", ""]).prop_map(str::to_string),
            any::<String>(),
        ];
        let value = prop_oneof![
            "-?[0-9]{1,25}",
            "-?[0-9]{0,5}\\.[0-9]{0,5}",
            prop::sample::select(vec!["nan", "inf", "-0", "1e0", "%00", "&", "="])
                .prop_map(str::to_string),
            any::<String>(),
        ];
        prop_oneof![
            prop::collection::vec((key, value), 0..4).prop_map(|pairs| {
                pairs
                    .into_iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("&")
            }),
            any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 5000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn upstream_parameters_never_panic_and_stay_in_range(q in query()) {
            if let Ok(p) = UpstreamParams::parse(&q, 50, 0.0) {
                prop_assert!(p.ms <= 5000);
                prop_assert!(p.fail_rate.is_finite() && (0.0..=1.0).contains(&p.fail_rate));
            }
        }
    }
}
