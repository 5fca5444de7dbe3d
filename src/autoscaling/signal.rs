//! The load signal, pure: no actix, no metrics; the clock and the counters are passed in, so every
//! test steps time by hand. The formula and why: `docs/design.md` ("The autoscaling signal").
//!
//! ```text
//! ratio = offered rate · healthy latency / capacity
//! ```
//!
//! - **offered rate**: `/client` arrivals per second at admission (admitted + shed; a request
//!   that waits in the backlog is counted when it is decided), over the last [`WINDOW`].
//! - **healthy latency**: the lowest mean latency of successful upstream calls in any [`WINDOW`]
//!   with at least [`MIN_CALLS`] of them in the last [`REFERENCE`]: what a call costs this replica
//!   when the dependency is well (a fast failure says nothing about that).
//! - **capacity**: the in-flight ceiling this replica allows itself (static: `max_inflight`;
//!   adaptive: `max_limit`, since a live limit below it is set by the dependency, not this replica).
//!
//! By Little's law, rate · latency is the concurrency the offered load needs; at the healthy
//! latency it is the concurrency it would need *from this replica*, so at k × its capacity the
//! ratio reads k whatever the dependency does. A naive rate · *current* latency would read 5 × when
//! the dependency slows 5 ×, and scale the callers out into it.
//!
//! **Dependency slow.** While the window's mean latency of calls that succeeded or timed out is
//! above [`SLOW_FACTOR`] × the healthy one, or calls were offered but fewer than [`MIN_CALLS`]
//! succeeded or timed out (the breaker refuses them, they fail, or they all hang), the ratio
//! never rises above what it read when the dependency was last well: it may fall, it does not ask
//! for more replicas.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The arrival rate and the recent latency are measured over this trailing window.
pub const WINDOW: Duration = Duration::from_secs(3);
/// How long a healthy latency is remembered: a dependency slower than that for longer is taken as
/// it is (a replica started since has never seen it faster).
pub const REFERENCE: Duration = Duration::from_secs(30 * 60);
/// A window needs this many finished calls for its mean latency to count.
pub const MIN_CALLS: u64 = 20;
/// Mean latency above this many times the healthy one: the dependency, not this replica, binds.
pub const SLOW_FACTOR: f64 = 1.5;
/// The healthy latency is kept as one minimum per this much time.
const BUCKET: Duration = Duration::from_secs(60);

/// The counters the signal reads, cumulative since start-up.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    /// `/client` requests decided by admission (admitted + shed).
    pub arrivals: u64,
    /// Upstream calls that succeeded, and their total seconds.
    pub ok_calls: u64,
    pub ok_seconds: f64,
    /// Upstream calls that timed out, and the seconds they were given.
    pub timeouts: u64,
    pub timeout_seconds: f64,
}

/// What one tick read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// The signal: times this replica's capacity being asked for.
    pub ratio: f64,
    /// Whether the dependency was judged slow (the ratio is held).
    pub dependency_slow: bool,
}

#[derive(Debug, Clone)]
pub struct LoadSignal {
    capacity: f64,
    /// Totals at each tick within the last [`WINDOW`] (and the one just before it).
    history: VecDeque<(Instant, Totals)>,
    /// The lowest window mean latency of successful calls, per [`BUCKET`], over the last
    /// [`REFERENCE`].
    healthy: VecDeque<(Instant, f64)>,
    /// The ratio at the last tick the dependency was well.
    held: f64,
}

impl LoadSignal {
    /// `capacity`: the in-flight ceiling this replica allows itself (at least 1).
    pub fn new(capacity: u32) -> Self {
        Self {
            capacity: f64::from(capacity.max(1)),
            history: VecDeque::new(),
            healthy: VecDeque::new(),
            held: 0.0,
        }
    }

    /// The healthy latency in seconds, once a window has had enough calls.
    pub fn healthy_latency(&self) -> Option<f64> {
        self.healthy.iter().map(|(_, s)| *s).reduce(f64::min)
    }

    /// Takes the counters at `now` (ticks about once a second) and returns the signal.
    pub fn tick(&mut self, now: Instant, totals: Totals) -> Reading {
        self.history.push_back((now, totals));
        // Keep the newest tick at or before the window's start, as the base of the differences.
        while self
            .history
            .get(1)
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= WINDOW)
        {
            self.history.pop_front();
        }
        let Some(&(since, base)) = self.history.front() else {
            return self.reading(0.0, false);
        };
        let span = now.saturating_duration_since(since).as_secs_f64();
        if span <= 0.0 {
            return self.reading(0.0, false);
        }
        let arrivals = totals.arrivals.saturating_sub(base.arrivals);
        let ok = totals.ok_calls.saturating_sub(base.ok_calls);
        let ok_seconds = (totals.ok_seconds - base.ok_seconds).max(0.0);
        if ok >= MIN_CALLS {
            self.remember(now, ok_seconds / ok as f64);
        }
        let calls = ok + totals.timeouts.saturating_sub(base.timeouts);
        let seconds = ok_seconds + (totals.timeout_seconds - base.timeout_seconds).max(0.0);
        let recent = (calls >= MIN_CALLS).then(|| seconds / calls as f64);
        let healthy = self.healthy_latency();
        let rate = arrivals as f64 / span;
        let ratio = healthy.map_or(0.0, |healthy| rate * healthy / self.capacity);
        let slow = match (recent, healthy) {
            (Some(mean), Some(healthy)) => mean > SLOW_FACTOR * healthy,
            // Offered, and too little came back to judge: a healthy dependency answers within the
            // window what it is sent, so this is a dependency that holds its calls (or refuses or
            // fails them all). Judged slow until enough calls finish to say otherwise, so a load
            // that arrives together with a slowdown cannot pass itself off as demand.
            _ => calls < MIN_CALLS && arrivals >= MIN_CALLS,
        };
        self.reading(ratio, slow)
    }

    fn reading(&mut self, ratio: f64, dependency_slow: bool) -> Reading {
        let ratio = if dependency_slow {
            ratio.min(self.held)
        } else {
            self.held = ratio;
            ratio
        };
        Reading {
            ratio,
            dependency_slow,
        }
    }

    /// Keeps `mean` in the current bucket's minimum; forgets buckets older than [`REFERENCE`].
    fn remember(&mut self, now: Instant, mean: f64) {
        match self.healthy.back_mut() {
            Some((start, min)) if now.saturating_duration_since(*start) < BUCKET => {
                *min = min.min(mean);
            }
            _ => self.healthy.push_back((now, mean)),
        }
        while self
            .healthy
            .front()
            .is_some_and(|(start, _)| now.saturating_duration_since(*start) > REFERENCE)
        {
            self.healthy.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Drives the signal for `seconds` ticks of one second with `rate` arrivals per second, of
    /// which `served` per second finish a call of `latency` seconds. Returns the last reading.
    struct Bench {
        signal: LoadSignal,
        now: Instant,
        totals: Totals,
    }

    impl Bench {
        fn new(capacity: u32) -> Self {
            Self {
                signal: LoadSignal::new(capacity),
                now: Instant::now(),
                totals: Totals::default(),
            }
        }

        fn run(&mut self, seconds: u32, rate: u64, served: u64, latency: f64) -> Reading {
            self.run_with(seconds, rate, served, latency, 0, 0.0)
        }

        /// As [`Bench::run`], with `timeouts` calls a second timing out after `given` seconds.
        fn run_with(
            &mut self,
            seconds: u32,
            rate: u64,
            served: u64,
            latency: f64,
            timeouts: u64,
            given: f64,
        ) -> Reading {
            let mut last = self.signal.tick(self.now, self.totals);
            for _ in 0..seconds {
                self.now += Duration::from_secs(1);
                self.totals.arrivals += rate;
                self.totals.ok_calls += served;
                self.totals.ok_seconds += served as f64 * latency;
                self.totals.timeouts += timeouts;
                self.totals.timeout_seconds += timeouts as f64 * given;
                last = self.signal.tick(self.now, self.totals);
            }
            last
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6 * b.max(1.0)
    }

    #[test]
    fn idle_reads_zero() {
        let mut b = Bench::new(50);
        let r = b.run(10, 0, 0, 0.0);
        assert_eq!(r.ratio, 0.0);
        assert!(!r.dependency_slow);
    }

    #[test]
    fn reads_demand_in_units_of_capacity() {
        // 50 slots of 50 ms: 1000 calls a second. 500/s is half of it, 3000/s three times it
        // (of which only 1000/s are served; the rest are shed at once).
        let mut b = Bench::new(50);
        assert!(close(b.run(10, 500, 500, 0.05).ratio, 0.5));
        let r = b.run(10, 3000, 1000, 0.05);
        assert!(close(r.ratio, 3.0), "{r:?}");
        assert!(!r.dependency_slow);
        assert!(close(b.run(10, 500, 500, 0.05).ratio, 0.5));
    }

    #[test]
    fn a_slow_dependency_does_not_raise_it() {
        let mut b = Bench::new(50);
        let before = b.run(30, 800, 800, 0.05).ratio;
        assert!(close(before, 0.8));
        // 5 × slower: the 50 slots now serve 200/s, the rest are shed, but the demand is the same.
        for _ in 0..60 {
            let r = b.run(1, 800, 200, 0.25);
            assert!(r.ratio <= before + 1e-9, "{r:?}");
        }
        assert!(b.run(1, 800, 200, 0.25).dependency_slow);
        // Even more demand while it is slow does not ask for more replicas.
        let r = b.run(20, 2000, 200, 0.25);
        assert!(r.dependency_slow);
        assert!(r.ratio <= before + 1e-9, "{r:?}");
        // Less demand lowers it.
        let r = b.run(20, 400, 200, 0.25);
        assert!(close(r.ratio, 0.4), "{r:?}");
        // Well again: the demand counts again.
        let r = b.run(20, 2000, 1000, 0.05);
        assert!(!r.dependency_slow);
        assert!(close(r.ratio, 2.0), "{r:?}");
    }

    #[test]
    fn calls_offered_and_none_finished_count_as_a_slow_dependency() {
        let mut b = Bench::new(50);
        let before = b.run(10, 500, 500, 0.05).ratio;
        // The breaker refuses everything: no call finishes. Then more demand comes.
        assert!(b.run(10, 500, 0, 0.0).dependency_slow);
        let r = b.run(10, 1500, 0, 0.0);
        assert!(r.dependency_slow);
        assert!(r.ratio <= before + 1e-9);
    }

    #[test]
    fn timeouts_make_it_slow_and_fast_failures_do_not_lower_the_healthy_latency() {
        let mut b = Bench::new(50);
        let before = b.run(10, 500, 500, 0.05).ratio;
        // Half the calls time out after 200 ms, the others still take 50 ms: slow.
        let r = b.run_with(10, 500, 250, 0.05, 250, 0.2);
        assert!(r.dependency_slow, "{r:?}");
        assert!(r.ratio <= before + 1e-9, "{r:?}");
        // Failures answered in 1 ms (not counted as calls here: the caller reads only ok and
        // timeout) leave the healthy latency where it was.
        b.run(10, 500, 0, 0.0);
        assert!(close(b.signal.healthy_latency().unwrap_or(0.0), 0.05));
    }

    #[test]
    fn a_load_that_arrives_with_a_slowdown_is_not_taken_for_demand() {
        let mut b = Bench::new(50);
        assert!(close(b.run(10, 500, 500, 0.05).ratio, 0.5));
        assert_eq!(b.run(10, 0, 0, 0.0).ratio, 0.0);
        // 2000/s arrive at once and the calls take 300 ms: none has come back after a second.
        let r = b.run(1, 2000, 0, 0.0);
        assert!(r.dependency_slow, "{r:?}");
        assert_eq!(r.ratio, 0.0);
        let r = b.run(10, 2000, 160, 0.3);
        assert!(r.dependency_slow, "{r:?}");
        assert_eq!(r.ratio, 0.0);
    }

    #[test]
    fn too_few_calls_judge_nothing() {
        let mut b = Bench::new(50);
        // 2 calls a second: fewer than MIN_CALLS in a window, no healthy latency yet, no reading.
        let r = b.run(10, 2, 2, 0.05);
        assert_eq!(r.ratio, 0.0);
        assert!(!r.dependency_slow);
        assert!(b.signal.healthy_latency().is_none());
    }

    #[test]
    fn a_slower_dependency_is_taken_as_it_is_after_the_reference() {
        let mut b = Bench::new(50);
        b.run(30, 500, 500, 0.05);
        let slow = b.run(REFERENCE.as_secs() as u32 + 120, 500, 200, 0.25);
        assert!(!slow.dependency_slow);
        assert!(close(b.signal.healthy_latency().unwrap_or(0.0), 0.25));
        assert!(close(slow.ratio, 500.0 * 0.25 / 50.0));
    }

    #[test]
    fn counters_that_go_back_read_nothing_negative() {
        let mut b = Bench::new(50);
        b.run(10, 500, 500, 0.05);
        let r = b
            .signal
            .tick(b.now + Duration::from_secs(1), Totals::default());
        assert!(r.ratio >= 0.0 && r.ratio.is_finite());
    }

    proptest! {
        /// Whatever the traffic, the reading is finite and not negative, and while the
        /// dependency is slow it never exceeds the last healthy reading.
        #[test]
        fn never_negative_and_held_while_slow(
            steps in proptest::collection::vec((0u64..5000, 0u64..2000, 1u32..2000), 1..120),
            capacity in 1u32..500,
        ) {
            let mut b = Bench::new(capacity);
            let mut healthy = 0.0;
            for (rate, served, latency_ms) in steps {
                let r = b.run(1, rate, served.min(rate), f64::from(latency_ms) / 1000.0);
                prop_assert!(r.ratio.is_finite() && r.ratio >= 0.0);
                if r.dependency_slow {
                    prop_assert!(r.ratio <= healthy + 1e-9);
                } else {
                    healthy = r.ratio;
                }
            }
        }
    }
}
