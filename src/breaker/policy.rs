//! What a trip policy is: the rule that decides when a Closed breaker opens, from the verdicts of
//! the calls it lets through. Each policy is a type of its own file holding its parameters and
//! its window ([`Consecutive`](super::consecutive::Consecutive),
//! [`FailureRate`](super::failure_rate::FailureRate), [`Throttle`](super::throttle::Throttle));
//! the breaker owns the states, the probes and the generations, the same for every policy.
//!
//! A policy may instead decide each call itself ([`TripPolicy::decides_each_call`], throttling):
//! then the breaker asks it before every call while Closed, and hands it every verdict.

use std::fmt::Debug;
use std::time::{Duration, Instant};

use super::machine::Verdict;

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

    /// Failures in a row now, for a policy that counts them (the admin state and status page).
    fn consecutive_failures(&self) -> Option<u32> {
        None
    }

    /// Forgets every verdict.
    fn reset(&mut self);

    /// A copy, for the tests that replay a breaker's messages on a copy of it.
    fn boxed_clone(&self) -> Box<dyn TripPolicy>;

    /// Whether the policy decides each call (throttling): every call then asks the breaker, which
    /// asks [`TripPolicy::refuse`], and every verdict goes to [`TripPolicy::settle`].
    fn decides_each_call(&self) -> bool {
        false
    }

    /// Counts a call attempted at `now` and says whether to refuse it locally.
    fn refuse(&mut self, _now: Instant) -> bool {
        false
    }

    /// The verdict of a call let through at `sent` (neutral, or abandoned: take the attempt back).
    fn settle(&mut self, _sent: Instant, _verdict: Verdict) {}

    /// For a policy that refuses by probability: the probability now, and its cap.
    fn rejection_probability(&self, _now: Instant) -> Option<(f64, f64)> {
        None
    }
}

impl Clone for Box<dyn TripPolicy> {
    fn clone(&self) -> Self {
        self.boxed_clone()
    }
}
