//! The throttling policy (`breaker.mode = "throttle"`): client-side adaptive throttling, as in the
//! SRE book ("Handling Overload") and Envoy's `admission_control` filter. The breaker never opens;
//! instead each call is refused locally with the probability
//!
//! ```text
//! P = min(max_probability, max(0, (requests - accepts / success_rate) / (requests + 1)) ^ (1 / aggression))
//! ```
//!
//! over the last `window`, kept in [`BUCKETS`] buckets, and 0 while the window's attempts average
//! less than `min_rps` per second. An attempt is counted when it is made, in the bucket of that
//! moment, and its verdict goes to the same bucket, so a slow call cannot skew the window
//! (go-zero 5011). Failures are judged as by the other policies: transport, 5xx and full-length
//! timeouts fail; a neutral verdict (a caller's own short timeout) or an abandoned call takes its
//! attempt back out.
//!
//! **What counts as a request.** The SRE book counts every attempt, refused locally or not; Envoy
//! counts only the calls it lets through. The first holds a partly failing dependency at what it
//! accepts (about 1/success_rate of it) but recovers slowly after a blackout: its own refusals
//! look like failures, so the throttle can only grow by about 5 % a window (go-zero 5551 is that
//! feedback loop). The second recovers at once but sends a half-saturated dependency about
//! sqrt(offered × accepted / success_rate), 1.45 × what it accepts at 2 × overload. Here a bucket
//! counts its refusals only while the calls it sent in that bucket were failing (a success share
//! below `success_rate`): the SRE book's count while the dependency is refusing work, Envoy's once
//! everything sent succeeds. `loadtest/breaker_policies.py` measures both halves.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::machine::Verdict;
use super::policy::TripPolicy;
use crate::settings::ThrottleParams;

/// Buckets in the window: a 30 s window ages out by the second.
pub(crate) const BUCKETS: u32 = 30;

/// One bucket's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Bucket {
    /// Which bucket of time this is, in bucket widths since the policy's first attempt; a slot
    /// holding an older number is stale.
    index: u64,
    /// Calls attempted here, refused or sent (neutral and abandoned ones taken back out).
    attempts: u32,
    /// Of those, refused locally.
    refused: u32,
    accepts: u32,
    failures: u32,
}

impl Bucket {
    /// The requests the formula counts here: every attempt while the calls sent in this bucket
    /// failed more than `success_rate` allows, else only the calls sent.
    fn requests(&self, success_rate: f64) -> u32 {
        let judged = f64::from(self.accepts) + f64::from(self.failures);
        if f64::from(self.failures) > (1.0 - success_rate) * judged {
            self.attempts
        } else {
            self.attempts.saturating_sub(self.refused)
        }
    }
}

#[derive(Debug, Clone)]
pub struct Throttle {
    params: ThrottleParams,
    /// The window over [`BUCKETS`].
    width: Duration,
    /// Bucket 0 starts here (the first attempt).
    epoch: Option<Instant>,
    buckets: [Bucket; BUCKETS as usize],
    /// The draws [`TripPolicy::refuse`] compares with the probability.
    rng: StdRng,
}

impl Throttle {
    pub fn new(params: ThrottleParams) -> Self {
        Self::seeded(params, rand::random())
    }

    /// With the draws of a given seed (tests).
    pub fn seeded(params: ThrottleParams, seed: u64) -> Self {
        Self {
            params,
            width: (params.window / BUCKETS).max(Duration::from_millis(1)),
            epoch: None,
            buckets: [Bucket::default(); BUCKETS as usize],
            rng: StdRng::seed_from_u64(seed),
        }
    }

    fn index(&self, at: Instant) -> u64 {
        let since = self
            .epoch
            .map_or(Duration::ZERO, |e| at.saturating_duration_since(e));
        u64::try_from(since.as_nanos() / self.width.as_nanos()).unwrap_or(u64::MAX)
    }

    /// The bucket of `now`, emptied first if it held an older one.
    fn current(&mut self, now: Instant) -> &mut Bucket {
        self.epoch.get_or_insert(now);
        let index = self.index(now);
        let slot = &mut self.buckets[(index % u64::from(BUCKETS)) as usize];
        if slot.index != index {
            *slot = Bucket {
                index,
                ..Bucket::default()
            };
        }
        slot
    }

    /// The bucket `sent` was counted in, if it is still in the window.
    fn of(&mut self, sent: Instant) -> Option<&mut Bucket> {
        self.epoch?;
        let index = self.index(sent);
        let slot = &mut self.buckets[(index % u64::from(BUCKETS)) as usize];
        (slot.index == index).then_some(slot)
    }

    /// The probability that a call at `now` is refused, from the window as it stands.
    pub fn probability(&self, now: Instant) -> f64 {
        let ThrottleParams {
            window,
            success_rate,
            aggression,
            min_rps,
            max_probability,
        } = self.params;
        let current = self.index(now);
        let live = self.buckets.iter().filter(|b| {
            self.epoch.is_some() && b.index <= current && b.index + u64::from(BUCKETS) > current
        });
        let (mut requests, mut accepts, mut attempts) = (0u64, 0u64, 0u64);
        for b in live {
            requests += u64::from(b.requests(success_rate));
            accepts += u64::from(b.accepts);
            attempts += u64::from(b.attempts);
        }
        if requests == 0 || (attempts as f64) < min_rps * window.as_secs_f64() {
            return 0.0;
        }
        let requests = requests as f64;
        let shortfall = (requests - accepts as f64 / success_rate) / (requests + 1.0);
        shortfall
            .max(0.0)
            .powf(1.0 / aggression)
            .min(max_probability)
    }

    /// Counts an attempt at `now` and says whether it is refused: `draw`, uniform in [0, 1), falls
    /// below the probability the window gave before this attempt.
    pub fn refuse_with(&mut self, now: Instant, draw: f64) -> bool {
        let refused = draw < self.probability(now);
        let bucket = self.current(now);
        bucket.attempts = bucket.attempts.saturating_add(1);
        if refused {
            bucket.refused = bucket.refused.saturating_add(1);
        }
        refused
    }
}

impl TripPolicy for Throttle {
    /// Verdicts come through [`TripPolicy::settle`]; this policy never opens the breaker.
    fn record(&mut self, _failed: bool, _elapsed: Duration) -> bool {
        false
    }

    fn success_changes_nothing(&self) -> bool {
        false
    }

    fn reset(&mut self) {
        self.epoch = None;
        self.buckets = [Bucket::default(); BUCKETS as usize];
    }

    fn boxed_clone(&self) -> Box<dyn TripPolicy> {
        Box::new(self.clone())
    }

    fn decides_each_call(&self) -> bool {
        true
    }

    fn refuse(&mut self, now: Instant) -> bool {
        let draw = self.rng.random::<f64>();
        self.refuse_with(now, draw)
    }

    fn settle(&mut self, sent: Instant, verdict: Verdict) {
        let Some(bucket) = self.of(sent) else {
            return; // aged out of the window
        };
        match verdict {
            Verdict::Success => bucket.accepts = bucket.accepts.saturating_add(1),
            Verdict::Failure => bucket.failures = bucket.failures.saturating_add(1),
            Verdict::Neutral => bucket.attempts = bucket.attempts.saturating_sub(1),
        }
    }

    fn rejection_probability(&self, now: Instant) -> Option<(f64, f64)> {
        Some((self.probability(now), self.params.max_probability))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Envoy's defaults but the cap, which the worked examples leave out of the way.
    fn params() -> ThrottleParams {
        ThrottleParams {
            window: Duration::from_secs(30),
            success_rate: 0.95,
            aggression: 1.0,
            min_rps: 0.0,
            max_probability: 1.0,
        }
    }

    /// `sent` calls at `at`, `accepted` of them succeeding and the rest failing; none refused
    /// (draws of 1.0 never fall below a probability).
    fn calls(t: &mut Throttle, at: Instant, sent: u32, accepted: u32) {
        for i in 0..sent {
            assert!(!t.refuse_with(at, 1.0));
            let verdict = if i < accepted {
                Verdict::Success
            } else {
                Verdict::Failure
            };
            t.settle(at, verdict);
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    /// Worked by hand from Envoy's documented formula,
    /// P = ((n_total - n_success / threshold) / (n_total + 1)) ^ (1 / aggression).
    #[test]
    fn the_probability_matches_envoys_formula_on_worked_examples() {
        let t0 = Instant::now();
        for (sent, accepted, success_rate, aggression, expected) in [
            // 100 calls, 50 succeed, threshold 95 %: (100 - 52.6316) / 101 = 0.468994.
            (100, 50, 0.95, 1.0, 0.468_994),
            // The same with aggression 2: its square root, 0.684832.
            (100, 50, 0.95, 2.0, 0.684_832),
            // Threshold 100 %: (100 - 50) / 101 = 0.495050.
            (100, 50, 1.0, 1.0, 0.495_050),
            // Every call fails: 10 / 11 = 0.909091.
            (10, 0, 0.95, 1.0, 0.909_091),
            // 96 of 100 succeed, above the threshold: (100 - 101.05) / 101 < 0, so 0.
            (100, 96, 0.95, 1.0, 0.0),
            // Exactly at the threshold: 95 of 100, (100 - 100) / 101 = 0.
            (100, 95, 0.95, 1.0, 0.0),
            // Threshold 50 %, 20 of 100: (100 - 40) / 101 = 0.594059.
            (100, 20, 0.5, 1.0, 0.594_059),
            // Aggression 0.5 squares it: 0.594059^2 = 0.352907.
            (100, 20, 0.5, 0.5, 0.352_907),
        ] {
            let mut t = Throttle::seeded(
                ThrottleParams {
                    success_rate,
                    aggression,
                    ..params()
                },
                1,
            );
            calls(&mut t, t0, sent, accepted);
            let p = t.probability(t0);
            assert!(
                (p - expected).abs() < 1e-6,
                "{accepted}/{sent} at {success_rate}, aggression {aggression}: {p} != {expected}"
            );
        }
    }

    #[test]
    fn the_cap_and_the_minimum_rate_bound_the_probability() {
        let t0 = Instant::now();
        let mut t = Throttle::seeded(
            ThrottleParams {
                max_probability: 0.8,
                ..params()
            },
            1,
        );
        calls(&mut t, t0, 100, 0);
        assert!(close(t.probability(t0), 0.8), "100/101 capped at 0.8");

        // 100 attempts over a 30 s window is 3.3/s: under a 5/s minimum nothing is refused.
        let mut t = Throttle::seeded(
            ThrottleParams {
                min_rps: 5.0,
                ..params()
            },
            1,
        );
        calls(&mut t, t0, 100, 0);
        assert_eq!(t.probability(t0), 0.0);
        calls(&mut t, t0, 60, 0);
        assert!(
            close(t.probability(t0), 160.0 / 161.0),
            "160 attempts: 5.3/s"
        );
    }

    #[test]
    fn a_draw_below_the_probability_refuses_and_counts_the_attempt() {
        let t0 = Instant::now();
        let mut t = Throttle::seeded(params(), 1);
        calls(&mut t, t0, 100, 50);
        let p = t.probability(t0);
        assert!(t.refuse_with(t0, p - 0.01));
        assert!(!t.refuse_with(t0, p + 0.01));
        let b = t.buckets[0];
        assert_eq!((b.attempts, b.refused), (102, 1));
    }

    #[test]
    fn refusals_count_as_requests_only_while_the_calls_sent_are_failing() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let refusing = 0.0; // a draw below any probability above 0
                            // 100 failures at t0 make the probability positive; at t1, 50 calls are refused and 50
                            // sent, of which `accepted` succeed.
        let window = |accepted: u32| {
            let mut t = Throttle::seeded(params(), 1);
            calls(&mut t, t0, 100, 0);
            for _ in 0..50 {
                assert!(t.refuse_with(t1, refusing));
            }
            calls(&mut t, t1, 50, accepted);
            t.probability(t1)
        };
        // At t1 half the calls sent fail: the SRE book's count, the 50 refusals included:
        // (200 - 25/0.95) / 201.
        assert!((window(25) - 0.864_101).abs() < 1e-6, "{}", window(25));
        // Every call sent at t1 succeeds: its refusals say nothing about the dependency and are
        // left out, as Envoy counts: (150 - 50/0.95) / 151.
        assert!((window(50) - 0.644_824).abs() < 1e-6, "{}", window(50));
    }

    #[test]
    fn old_buckets_age_out_and_late_verdicts_go_to_the_bucket_of_their_attempt() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let mut t = Throttle::seeded(params(), 1);
        calls(&mut t, t0, 10, 0);
        assert!(close(t.probability(t0), 10.0 / 11.0));
        // 29 s later the failures are still in the 30 s window; at 30 s they are gone.
        assert!(close(t.probability(t0 + 29 * second), 10.0 / 11.0));
        assert_eq!(t.probability(t0 + 30 * second), 0.0);

        // A call attempted at t0 whose success arrives 5 s later counts at t0's bucket.
        let mut t = Throttle::seeded(params(), 1);
        assert!(!t.refuse_with(t0, 1.0));
        calls(&mut t, t0 + 5 * second, 1, 0);
        t.settle(t0, Verdict::Success);
        assert_eq!(t.buckets[0].accepts, 1);
        assert_eq!(t.buckets[5].failures, 1);
        // A verdict on an attempt already aged out is dropped, not put in a newer bucket.
        let late = t0 + 40 * second;
        t.refuse_with(late, 1.0);
        t.settle(t0 + 2 * second, Verdict::Failure);
        assert!(t.buckets.iter().all(|b| b.failures <= 1));
    }

    #[test]
    fn a_neutral_verdict_takes_its_attempt_back_out() {
        let t0 = Instant::now();
        let mut t = Throttle::seeded(params(), 1);
        calls(&mut t, t0, 10, 0);
        for _ in 0..10 {
            assert!(!t.refuse_with(t0, 1.0));
            t.settle(t0, Verdict::Neutral);
        }
        assert!(
            close(t.probability(t0), 10.0 / 11.0),
            "as if they never ran"
        );
    }

    #[test]
    fn the_seeded_draws_refuse_about_the_probability_s_share() {
        let t0 = Instant::now();
        let mut t = Throttle::seeded(
            ThrottleParams {
                window: Duration::from_secs(3600),
                ..params()
            },
            7,
        );
        calls(&mut t, t0, 1000, 500);
        let p = t.probability(t0);
        let mut refused = 0;
        for _ in 0..2000 {
            if TripPolicy::refuse(&mut t, t0) {
                refused += 1;
            } else {
                t.settle(t0, Verdict::Failure);
            }
        }
        // The probability only rises as refusals and failures come in; at least p of them.
        assert!(
            f64::from(refused) / 2000.0 >= p - 0.05,
            "{refused} refused at p {p}"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 500, failure_persistence: None, ..Default::default() })]

        /// Whatever the calls, verdicts, draws and parameters, P stays within [0, max_probability].
        #[test]
        fn the_probability_stays_within_zero_and_the_cap(
            success_rate in 0.01f64..=1.0,
            aggression in 0.05f64..=10.0,
            max_probability in 0.0f64..=1.0,
            min_rps in 0.0f64..=20.0,
            ops in proptest::collection::vec((0u64..3000, 0u8..4, 0.0f64..1.0), 1..400),
        ) {
            let t0 = Instant::now();
            let mut t = Throttle::seeded(
                ThrottleParams { window: Duration::from_secs(5), success_rate, aggression, min_rps, max_probability },
                3,
            );
            let mut now = t0;
            let mut sent = Vec::new();
            for (step_ms, kind, draw) in ops {
                now += Duration::from_millis(step_ms % 400);
                match kind {
                    0 => if !t.refuse_with(now, draw) { sent.push(now) },
                    k => if let Some(at) = sent.pop() {
                        let verdict = [Verdict::Success, Verdict::Failure, Verdict::Neutral][usize::from(k - 1)];
                        t.settle(at, verdict);
                    },
                }
                let p = t.probability(now);
                proptest::prop_assert!((0.0..=max_probability).contains(&p), "P {} outside [0, {}]", p, max_probability);
            }
        }
    }
}
