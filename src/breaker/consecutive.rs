//! The consecutive-failures policy (`breaker.mode = "consecutive"`): `threshold` failures in a
//! row open the breaker; a success resets the count.

use std::time::Duration;

use super::policy::TripPolicy;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consecutive {
    threshold: u32,
    /// Failures since the last success or transition.
    failures: u32,
}

impl Consecutive {
    pub fn new(threshold: u32) -> Self {
        Self {
            threshold,
            failures: 0,
        }
    }
}

impl TripPolicy for Consecutive {
    fn record(&mut self, failed: bool, _elapsed: Duration) -> bool {
        if !failed {
            self.failures = 0;
            return false;
        }
        self.failures += 1;
        self.failures >= self.threshold
    }

    fn success_changes_nothing(&self) -> bool {
        self.failures == 0
    }

    fn consecutive_failures(&self) -> Option<u32> {
        Some(self.failures)
    }

    fn reset(&mut self) {
        self.failures = 0;
    }

    fn boxed_clone(&self) -> Box<dyn TripPolicy> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_of_failures_in_a_row_trips_and_a_success_resets_the_count() {
        let mut c = Consecutive::new(3);
        assert!(!c.record(true, Duration::ZERO));
        assert!(!c.record(true, Duration::ZERO));
        assert!(!c.success_changes_nothing());
        assert!(!c.record(false, Duration::ZERO));
        assert!(c.success_changes_nothing());
        assert!(!c.record(true, Duration::ZERO));
        assert!(!c.record(true, Duration::ZERO));
        assert!(c.record(true, Duration::ZERO));
        c.reset();
        assert!(c.success_changes_nothing());
    }
}
