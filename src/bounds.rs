//! The one meaning of "a probability", shared by configuration (`upstream.fail_rate`, …) and
//! request parsing (`fail_rate=`), so a value accepted in one place is accepted in the other.

/// A finite number in [0, 1]: NaN and the infinities are not probabilities.
pub(crate) fn is_probability(x: f64) -> bool {
    x.is_finite() && (0.0..=1.0).contains(&x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_finite_numbers_from_zero_to_one_are_probabilities() {
        for ok in [0.0, 0.5, 1.0, -0.0] {
            assert!(is_probability(ok), "{ok}");
        }
        for bad in [f64::NAN, f64::INFINITY, -f64::INFINITY, -0.1, 1.01] {
            assert!(!is_probability(bad), "{bad}");
        }
    }
}
