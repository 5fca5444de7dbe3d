//! The adaptive concurrency limit (`admission.mode = "adaptive"`): a gradient controller after
//! Envoy's adaptive concurrency filter (itself after Netflix's Gradient2). Pure: no actix, and the
//! clock is passed in, so every test steps time by hand.
//!
//! **Baseline (min RTT).** The limiter first pins the limit to `min_limit` and takes the median
//! latency of the next [`GradientConfig::probe_samples`] calls *started after the pin* (so few at
//! once cannot queue in the dependency: this is its latency without queueing). It then resumes
//! the limit it had (at start, the service passes `min_limit`: the limit grows from the bottom,
//! as it must for a dependency of unknown capacity). The measurement is repeated every
//! [`GradientConfig::probe_interval`], and early when [`FLOOR_WINDOWS`] windows in a row have
//! halved the limit or left it at `min_limit`, so a dependency that got slower for good is soon
//! taken as it is. Calls that timed out never enter the baseline.
//!
//! **Limit.** Between measurements, samples are gathered in windows of at least
//! [`GradientConfig::interval`] and [`GradientConfig::min_samples`] calls. At the end of each
//! window, with `recent` the window's *mean* latency (a timed-out call counts with the time it was
//! given, so timeouts push it up):
//!
//! ```text
//! gradient = (baseline · (1 + buffer)) / recent, clamped to [0.5, 2]
//! limit    = limit · gradient + headroom        bounded by [min_limit, max_limit]
//! ```
//!
//! The mean, because with `n` calls in a dependency that serves `c` at once it is the unloaded
//! latency times `n / c` (Little's law), while a median does not move until more than half of the
//! calls queue. Without queueing the gradient is 1 + buffer and the limit grows by a tenth and one
//! call per window; once calls queue, latency grows with the limit and the limit settles where
//! `recent` is about `baseline · (1 + buffer)`: a queue of about a tenth of the dependency's
//! capacity. A dependency that loses capacity raises `recent` within a window and the limit falls
//! by up to half per window, so the excess is shed with fast 429s instead of waiting in its queue.
//!
//! The limit only grows in a window whose peak in-flight count reached half of it (otherwise
//! nothing was learned about more concurrency), and in which at least `min_samples` calls started
//! after the last raise (otherwise the window still describes the old limit, and raising again
//! would compound a round trip's worth of raises before seeing any of them). It shrinks at once.
//!
//! Priority classes keep their meaning: they get fixed fractions of the live limit (see
//! [`super::Limits::from_limit`]).

use std::time::{Duration, Instant};

use super::limit::Limit;
use super::machine::{Fractions, Limits};
use crate::settings::GradientConfig;

/// Bounds of the gradient (Envoy's): at most halve, at most double per window.
const GRADIENT: (f64, f64) = (0.5, 2.0);
/// Windows in a row at `min_limit`, or halving the limit, after which the baseline is measured
/// again.
pub(crate) const FLOOR_WINDOWS: u32 = 5;

/// One finished upstream call, as the limiter sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallSample {
    /// When the call was sent.
    pub started: Instant,
    pub latency: Duration,
    /// Timed out: `latency` is the time it was given, a lower bound of the real one.
    pub timed_out: bool,
    /// Calls in flight when it ended.
    pub inflight: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct GradientLimiter {
    config: GradientConfig,
    /// The limit between measurements (what a measurement resumes).
    limit: f64,
    /// Seconds; `None` until first measured.
    baseline: Option<f64>,
    /// Mean latency of the last window, seconds (0 until the first).
    recent: f64,
    /// Latencies (seconds) of the window, or of the measurement, in progress.
    samples: Vec<f64>,
    window_start: Option<Instant>,
    peak_inflight: u32,
    /// Measuring the baseline since this instant: the limit is pinned to `min_limit`.
    measuring_since: Option<Instant>,
    next_measurement: Option<Instant>,
    /// When the limit last grew; samples of calls started before it say nothing about the new one.
    raised_at: Option<Instant>,
    /// Samples in the window of calls started after `raised_at`.
    fresh: usize,
    windows_at_floor: u32,
}

impl GradientLimiter {
    /// Starts by measuring the baseline (from `now`), then resumes `initial`.
    pub(crate) fn new(config: GradientConfig, initial: u32, now: Instant) -> Self {
        Self {
            config,
            limit: f64::from(initial.clamp(config.min_limit, config.max_limit)),
            baseline: None,
            recent: 0.0,
            samples: Vec::with_capacity(config.probe_samples.max(64)),
            window_start: None,
            peak_inflight: 0,
            measuring_since: Some(now),
            next_measurement: None,
            raised_at: None,
            fresh: 0,
            windows_at_floor: 0,
        }
    }

    /// The limit now in force.
    pub(crate) fn limit(&self) -> u32 {
        if self.measuring_since.is_some() {
            self.config.min_limit
        } else {
            self.limit.floor() as u32
        }
    }

    /// Whether the baseline is being measured (the limit pinned to `min_limit`).
    pub(crate) fn measuring(&self) -> bool {
        self.measuring_since.is_some()
    }

    /// The recent latency (last window's mean) and the baseline (zero until known).
    pub(crate) fn latencies(&self) -> (Duration, Duration) {
        (
            Duration::from_secs_f64(self.recent),
            Duration::from_secs_f64(self.baseline.unwrap_or(0.0)),
        )
    }

    /// Takes one finished call at `now`. Returns the limit now in force.
    pub(crate) fn on_sample(&mut self, now: Instant, call: CallSample) -> u32 {
        let latency = call.latency.as_secs_f64().max(1e-6);
        if let Some(since) = self.measuring_since {
            // Only calls admitted under the pinned limit, and only those that finished.
            if call.started >= since && !call.timed_out {
                self.samples.push(latency);
                if self.samples.len() >= self.config.probe_samples {
                    let baseline = median(&mut self.samples);
                    self.baseline = Some(baseline);
                    self.recent = baseline;
                    self.measuring_since = None;
                    self.next_measurement = Some(now + self.config.probe_interval);
                    self.start_window(now);
                }
            }
            return self.limit();
        }
        let window_start = *self.window_start.get_or_insert(now);
        self.samples.push(latency);
        self.fresh += usize::from(self.raised_at.is_none_or(|at| call.started >= at));
        self.peak_inflight = self.peak_inflight.max(call.inflight);
        if now.saturating_duration_since(window_start) >= self.config.interval
            && self.samples.len() >= self.config.min_samples
        {
            self.end_window(now);
        }
        self.limit()
    }

    fn start_window(&mut self, now: Instant) {
        self.samples.clear();
        self.window_start = Some(now);
        self.peak_inflight = 0;
        self.fresh = 0;
    }

    fn end_window(&mut self, now: Instant) {
        let Some(baseline) = self.baseline else {
            return;
        };
        // The mean, not a percentile: with n calls in a dependency that serves c at once, the
        // mean latency is the unloaded one times n / c (Little's law), while the median does not
        // move until more than half of the calls queue.
        self.recent = self.samples.iter().sum::<f64>() / self.samples.len() as f64;
        let gradient =
            (baseline * (1.0 + self.config.buffer) / self.recent).clamp(GRADIENT.0, GRADIENT.1);
        let mut new = self.limit * gradient + self.config.headroom;
        // Only shrink when too little was in use to learn anything about a higher limit, or
        // when too few calls have yet run under the last raise (growing again before seeing its
        // effect would compound one dependency round trip's worth of raises).
        if new > self.limit {
            if f64::from(self.peak_inflight) < self.limit / 2.0
                || self.fresh < self.config.min_samples
            {
                new = self.limit;
            } else {
                self.raised_at = Some(now);
            }
        }
        let (min, max) = (
            f64::from(self.config.min_limit),
            f64::from(self.config.max_limit),
        );
        self.limit = new.clamp(min, max);
        // Halving every window, or held at the minimum: the dependency is not merely queueing.
        self.windows_at_floor = if gradient <= GRADIENT.0 || self.limit <= min {
            self.windows_at_floor + 1
        } else {
            0
        };
        self.start_window(now);
        let due = self.next_measurement.is_some_and(|at| now >= at);
        if due || self.windows_at_floor >= FLOOR_WINDOWS {
            self.windows_at_floor = 0;
            self.measuring_since = Some(now);
        }
    }
}

/// The gradient limit as admission uses it: the live limit for high, the lower classes'
/// fractions of it.
pub(crate) struct GradientLimit {
    limiter: GradientLimiter,
    fractions: Fractions,
}

impl GradientLimit {
    /// Measures its baseline at `min_limit` and grows from there: starting high would send a
    /// dependency of unknown capacity a burst it may not survive.
    pub(crate) fn new(config: GradientConfig, fractions: Fractions, now: Instant) -> Self {
        Self {
            limiter: GradientLimiter::new(config, config.min_limit, now),
            fractions,
        }
    }
}

impl Limit for GradientLimit {
    fn current(&self) -> Limits {
        Limits::from_limit(self.limiter.limit(), self.fractions)
    }

    fn on_sample(&mut self, now: Instant, sample: CallSample) -> bool {
        let before = self.limiter.limit();
        let limit = self.limiter.on_sample(now, sample);
        if limit != before {
            let (short, long) = self.limiter.latencies();
            log::debug!(
                "adaptive limit {before} -> {limit} (recent {:.1} ms, baseline {:.1} ms{})",
                short.as_secs_f64() * 1000.0,
                long.as_secs_f64() * 1000.0,
                if self.limiter.measuring() {
                    ", measuring"
                } else {
                    ""
                }
            );
        }
        limit != before
    }

    fn learns(&self) -> bool {
        true
    }

    fn latencies(&self) -> Option<(Duration, Duration)> {
        Some(self.limiter.latencies())
    }
}

/// The median of `values` (not empty; reorders them).
fn median(values: &mut [f64]) -> f64 {
    let mid = values.len() / 2;
    *values.select_nth_unstable_by(mid, f64::total_cmp).1
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config() -> GradientConfig {
        GradientConfig::new(5, 200)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A dependency with `capacity` servers taking `base` each, FIFO, loaded up to the limit:
    /// with `n` calls in flight a call takes `base · max(1, n / capacity)`. Drives the limiter
    /// for `duration` of simulated time from `*now` (samples spread evenly) and returns the
    /// limits it set.
    fn drive(
        l: &mut GradientLimiter,
        now: &mut Instant,
        duration: Duration,
        base: Duration,
        capacity: u32,
        share: f64,
    ) -> Vec<u32> {
        let end = *now + duration;
        let mut limits = Vec::new();
        while *now < end {
            let inflight = ((f64::from(l.limit()) * share).floor() as u32).max(1);
            let latency = base.mul_f64((f64::from(inflight) / f64::from(capacity)).max(1.0));
            // Throughput = inflight / latency: one call ends every latency / inflight.
            *now += latency / inflight;
            let started = *now - latency;
            limits.push(l.on_sample(
                *now,
                CallSample {
                    started,
                    latency,
                    timed_out: false,
                    inflight,
                },
            ));
        }
        limits
    }

    fn call(started: Instant, latency: Duration, inflight: u32) -> CallSample {
        CallSample {
            started,
            latency,
            timed_out: false,
            inflight,
        }
    }

    /// A limiter that has measured a 50 ms baseline and resumed `initial`: (limiter, its start,
    /// the time now).
    fn measured(initial: u32) -> (GradientLimiter, Instant, Instant) {
        let t0 = Instant::now();
        let mut l = GradientLimiter::new(config(), initial, t0);
        let mut now = t0 + ms(50);
        for _ in 0..25 {
            now += ms(2);
            l.on_sample(now, call(now - ms(50), ms(50), 5));
        }
        assert!(!l.measuring());
        (l, t0, now)
    }

    #[test]
    fn it_measures_the_baseline_at_the_minimum_then_resumes_the_initial_limit() {
        let t0 = Instant::now();
        let mut l = GradientLimiter::new(config(), 50, t0);
        assert!(l.measuring());
        assert_eq!(l.limit(), 5, "pinned to min_limit while measuring");
        // A call started before the pin says nothing about the unloaded latency.
        l.on_sample(t0 + ms(10), call(t0 - ms(1), ms(500), 50));
        let mut now = t0 + ms(50);
        for i in 0..24 {
            now += ms(10);
            assert_eq!(l.on_sample(now, call(now - ms(50), ms(50 + i % 3), 5)), 5);
        }
        // A timed-out call never enters the baseline.
        l.on_sample(
            now,
            CallSample {
                timed_out: true,
                ..call(now - ms(200), ms(200), 5)
            },
        );
        assert!(l.measuring());
        now += ms(10);
        assert_eq!(l.on_sample(now, call(now - ms(50), ms(51), 5)), 50);
        assert!(!l.measuring());
        assert_eq!(l.latencies().1, ms(51), "the median of the 25 samples");
    }

    #[test]
    fn without_queueing_the_limit_grows_to_the_maximum() {
        let mut now = Instant::now();
        let mut l = GradientLimiter::new(config(), 20, now);
        // A dependency with more capacity than max_limit: latency never moves.
        let limits = drive(&mut l, &mut now, Duration::from_secs(3), ms(50), 1000, 1.0);
        assert_eq!(*limits.last().unwrap(), 200);
        let resumed = limits.iter().position(|&x| x == 20).unwrap();
        assert!(
            limits[resumed..].windows(2).all(|w| w[1] >= w[0]),
            "never shrinks on a steady latency"
        );
    }

    #[test]
    fn an_unused_limit_does_not_grow() {
        let (mut l, _, mut now) = measured(50);
        for _ in 0..500 {
            now += ms(10);
            assert_eq!(l.on_sample(now, call(now - ms(50), ms(50), 3)), 50);
        }
    }

    #[test]
    fn it_settles_just_above_the_dependencys_capacity_with_latency_near_the_baseline() {
        let mut now = Instant::now();
        let mut l = GradientLimiter::new(config(), 50, now);
        drive(&mut l, &mut now, Duration::from_secs(5), ms(50), 10, 0.9);
        // Over the last 2 s: the limit stays just above the 10 calls the dependency serves at once.
        let limits = drive(&mut l, &mut now, Duration::from_secs(2), ms(50), 10, 0.9);
        let (lo, hi) = (limits.iter().min().unwrap(), limits.iter().max().unwrap());
        assert!(*lo >= 11 && *hi <= 16, "limit moved within {lo}-{hi}");
        let (recent, baseline) = l.latencies();
        assert!(
            recent <= baseline.mul_f64(1.3),
            "{recent:?} vs {baseline:?}"
        );
    }

    #[test]
    fn a_queue_that_only_some_calls_wait_in_still_shrinks_the_limit() {
        let (mut l, _, mut now) = measured(40);
        assert_eq!(l.limit(), 40);
        // Seven calls in ten run at once, three wait one round: the median would not move.
        for i in 0..40 {
            now += ms(2);
            let latency = if i % 10 < 7 { ms(50) } else { ms(100) };
            l.on_sample(now, call(now - latency, latency, 40));
        }
        assert!(l.limit() < 40, "{}", l.limit());
    }

    #[test]
    fn it_raises_the_limit_again_only_after_calls_have_run_under_the_last_raise() {
        let (mut l, t0, mut now) = measured(40);
        // Calls that all started long ago (a slow dependency at the old limit): one raise, then
        // none while no call started after it has finished.
        let mut limits = Vec::new();
        for _ in 0..200 {
            now += ms(2);
            limits.push(l.on_sample(now, call(t0, ms(50), 40)));
        }
        limits.dedup();
        assert_eq!(limits.len(), 2, "{limits:?}");
        assert!(limits[1] > 40);
        // Calls started after it let it grow again.
        for _ in 0..100 {
            now += ms(2);
            l.on_sample(now, call(now - ms(50), ms(50), 60));
        }
        assert!(l.limit() > limits[1], "{} vs {}", l.limit(), limits[1]);
    }

    #[test]
    fn a_capacity_drop_is_followed_within_half_a_second() {
        let mut now = Instant::now();
        let mut l = GradientLimiter::new(config(), 50, now);
        drive(&mut l, &mut now, Duration::from_secs(5), ms(50), 50, 0.9);
        let before = l.limit();
        assert!((56..=120).contains(&before), "{before}");
        // The dependency now serves 10 at once.
        let limits = drive(&mut l, &mut now, ms(500), ms(50), 10, 0.9);
        let after = *limits.last().unwrap();
        assert!(after <= 30, "{before} -> {after} after 500 ms");
        assert!(after >= 11, "not far below the new capacity: {after}");
    }

    #[test]
    fn a_dependency_that_got_slower_for_good_is_taken_as_it_is_at_the_next_measurement() {
        let mut now = Instant::now();
        let mut l = GradientLimiter::new(config(), 50, now);
        drive(&mut l, &mut now, Duration::from_secs(5), ms(50), 20, 0.9);
        // Every call now takes four times as long, at any concurrency: at first it looks like
        // queueing, and the limit falls to the floor ...
        drive(&mut l, &mut now, Duration::from_secs(5), ms(200), 20, 0.9);
        let (_, baseline) = l.latencies();
        assert!(baseline >= ms(190), "measured again early: {baseline:?}");
        // ... and after the measurement it recovers to the dependency's capacity.
        let limits = drive(&mut l, &mut now, Duration::from_secs(5), ms(200), 20, 0.9);
        let last = *limits.last().unwrap();
        assert!((22..=45).contains(&last), "{last}");
    }

    #[test]
    fn the_baseline_is_measured_again_every_probe_interval() {
        let mut now = Instant::now();
        let mut l = GradientLimiter::new(config(), 50, now);
        drive(&mut l, &mut now, Duration::from_secs(1), ms(50), 1000, 1.0);
        assert!(!l.measuring());
        let limits = drive(&mut l, &mut now, Duration::from_secs(31), ms(50), 1000, 1.0);
        let pinned = limits.iter().filter(|&&x| x == 5).count();
        assert!(pinned >= 25, "pinned for one measurement: {pinned} samples");
        assert!(pinned <= 60, "and only for it: {pinned} samples");
        assert_eq!(*limits.last().unwrap(), 200, "resumed afterwards");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn class_ceilings_keep_their_order_for_every_live_limit(
            limit in 3u32..100_000,
            low in 0.01f64..0.98,
            gap in 0.001f64..0.5,
        ) {
            let normal = (low + gap).min(0.99);
            prop_assume!(low < normal);
            let l = crate::admission::Limits::from_limit(limit, crate::admission::Fractions { normal, low });
            prop_assert!(1 <= l.low && l.low < l.normal && l.normal < l.high, "{l:?}");
            prop_assert_eq!(l.high, limit);
        }

        #[test]
        fn the_limit_stays_within_its_bounds(
            initial in 0u32..1000,
            samples in prop::collection::vec((0u64..5000, 0u64..300, 0u32..400, any::<bool>()), 1..400),
        ) {
            let t0 = Instant::now();
            let mut l = GradientLimiter::new(config(), initial, t0);
            prop_assert!((5..=200).contains(&l.limit()));
            let mut now = t0;
            for (latency, gap, inflight, timed_out) in samples {
                now += ms(gap);
                let latency = ms(latency);
                let started = now.checked_sub(latency).unwrap_or(t0);
                let limit = l.on_sample(now, CallSample { started, latency, timed_out, inflight });
                prop_assert!((5..=200).contains(&limit), "{limit}");
            }
        }
    }
}
