//! The failure-rate policy (`breaker.mode = "failure_rate"`), as resilience4j's count-based
//! sliding window: over the last `size` calls, once at least `minimum_calls` are in, a failure
//! share or a slow-call share at or above its threshold opens the breaker. A slow probe fails.

use std::collections::VecDeque;
use std::time::Duration;

use super::policy::TripPolicy;
use crate::settings::RateWindow;

#[derive(Debug, Clone)]
pub struct FailureRate {
    params: RateWindow,
    /// The last calls' (failed, slow), with running counts of each.
    calls: VecDeque<(bool, bool)>,
    failures: u32,
    slow: u32,
}

impl FailureRate {
    pub fn new(params: RateWindow) -> Self {
        Self {
            params,
            calls: VecDeque::new(),
            failures: 0,
            slow: 0,
        }
    }

    fn is_slow(&self, elapsed: Duration) -> bool {
        !self.params.slow_call.is_zero() && elapsed >= self.params.slow_call
    }
}

impl TripPolicy for FailureRate {
    fn record(&mut self, failed: bool, elapsed: Duration) -> bool {
        let slow = self.is_slow(elapsed);
        self.calls.push_back((failed, slow));
        self.failures += u32::from(failed);
        self.slow += u32::from(slow);
        while self.calls.len() > self.params.size as usize {
            if let Some((f, s)) = self.calls.pop_front() {
                self.failures -= u32::from(f);
                self.slow -= u32::from(s);
            }
        }
        let w = self.params;
        let (failure_rate, slow_rate) = self.rates();
        self.calls.len() >= w.minimum_calls as usize
            && (failure_rate >= w.failure_rate_threshold
                || (!w.slow_call.is_zero() && slow_rate >= w.slow_call_rate_threshold))
    }

    fn fails_probe(&self, elapsed: Duration) -> bool {
        self.is_slow(elapsed)
    }

    /// Every verdict enters the window, so a success always counts.
    fn success_changes_nothing(&self) -> bool {
        false
    }

    fn rates(&self) -> (f64, f64) {
        let share = |count: u32| match self.calls.len() {
            0 => 0.0,
            n => f64::from(count) / n as f64,
        };
        (share(self.failures), share(self.slow))
    }

    fn reset(&mut self) {
        self.calls.clear();
        self.failures = 0;
        self.slow = 0;
    }

    fn boxed_clone(&self) -> Box<dyn TripPolicy> {
        Box::new(self.clone())
    }
}
