//! Where the ceilings come from, behind one interface (after Netflix concurrency-limits' `Limit`):
//! [`Limit::current`] says the ceilings in force, [`Limit::on_sample`] learns from a finished
//! upstream call. [`FixedLimit`] (`admission.mode = "static"`) is here; the gradient limit
//! (`"adaptive"`) is in [`super::adaptive`]. The limiter ([`super::Admission`]) admits against
//! whatever the limit says; a new algorithm is one new file implementing [`Limit`].

use std::time::{Duration, Instant};

use super::adaptive::CallSample;
use super::machine::Limits;

pub(crate) trait Limit: Send {
    /// The ceilings in force, per class.
    fn current(&self) -> Limits;

    /// Learns from one finished call at `now`; returns whether [`Limit::current`] changed.
    fn on_sample(&mut self, now: Instant, sample: CallSample) -> bool;

    /// Whether it learns from samples at all (handlers send none otherwise).
    fn learns(&self) -> bool;

    /// The recent and the baseline latency it judges by, for the gauges (`None`: it has none).
    fn latencies(&self) -> Option<(Duration, Duration)> {
        None
    }
}

/// Ceilings fixed by configuration.
pub(crate) struct FixedLimit(pub Limits);

impl Limit for FixedLimit {
    fn current(&self) -> Limits {
        self.0
    }

    fn on_sample(&mut self, _: Instant, _: CallSample) -> bool {
        false
    }

    fn learns(&self) -> bool {
        false
    }
}
