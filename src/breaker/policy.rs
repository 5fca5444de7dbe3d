//! What a trip policy is: the rule that decides when a Closed breaker opens, from the verdicts of
//! the calls it lets through. Each policy is a type of its own file holding its parameters and
//! its window ([`Consecutive`](super::consecutive::Consecutive),
//! [`FailureRate`](super::failure_rate::FailureRate)); the breaker owns the states, the probes and
//! the generations, the same for every policy.

use std::fmt::Debug;
use std::time::Duration;

/// A trip policy, as the breaker uses it. It sees only Closed's non-neutral verdicts, and is
/// [`reset`](TripPolicy::reset) on every transition.
pub trait TripPolicy: Debug + Send {
    /// Takes one verdict of a call that ran `elapsed`; returns whether the breaker must open.
    fn record(&mut self, failed: bool, elapsed: Duration) -> bool;

    /// Whether a probe that succeeded after `elapsed` still shows a dependency not recovered.
    fn fails_probe(&self, _elapsed: Duration) -> bool {
        false
    }

    /// Whether a success recorded now would change nothing (handlers then need not send it).
    fn success_changes_nothing(&self) -> bool;

    /// The shares of failed and slow calls the policy judges by, for the gauges (0 if none).
    fn rates(&self) -> (f64, f64) {
        (0.0, 0.0)
    }

    /// Forgets every verdict.
    fn reset(&mut self);

    /// A copy, for the tests that replay a breaker's messages on a copy of it.
    fn boxed_clone(&self) -> Box<dyn TripPolicy>;
}

impl Clone for Box<dyn TripPolicy> {
    fn clone(&self) -> Self {
        self.boxed_clone()
    }
}
