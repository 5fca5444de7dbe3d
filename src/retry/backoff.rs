//! Exponential backoff with full jitter (as the AWS SDKs do): before retry `n` (0 for the first),
//! sleep a uniform random time in [0, min(max, base · 2ⁿ)], so retries of many callers that failed
//! together do not arrive together. Pure: the random number is an argument.

use std::time::Duration;

/// The sleep before retry `n`, for `unit` uniform in [0, 1).
pub(crate) fn full_jitter(n: u32, base: Duration, max: Duration, unit: f64) -> Duration {
    let ceiling = base.saturating_mul(1u32 << n.min(20)).min(max);
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_ceiling_doubles_per_retry_up_to_the_max() {
        let (base, max) = (10 * MS, 100 * MS);
        // With unit just under 1, the sleep is just under the ceiling.
        let top = |n| full_jitter(n, base, max, 0.999_999);
        assert!(top(0) <= 10 * MS && top(0) > 9 * MS);
        assert!(top(1) <= 20 * MS && top(1) > 19 * MS);
        assert!(top(2) <= 40 * MS && top(2) > 39 * MS);
        assert!(top(4) <= 100 * MS && top(4) > 99 * MS);
        assert!(top(63) <= 100 * MS);
        assert_eq!(full_jitter(3, base, max, 0.0), Duration::ZERO);
        assert_eq!(full_jitter(1, base, max, 0.5), 10 * MS);
    }
}
