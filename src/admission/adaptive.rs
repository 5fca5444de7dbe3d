//! The adaptive concurrency limit (`admission.mode = "adaptive"`): a gradient limiter in the spirit
//! of Netflix's Gradient2 and Envoy's adaptive concurrency filter. Pure: no actix, no clock.
//!
//! Every admitted upstream call reports its latency. A short exponentially weighted average follows
//! the last few calls; the baseline is the minimum latency seen over the last one or two windows of
//! `long_window` calls (an average would drift up with the very queueing it should detect). When
//! the dependency starts queueing, the short average rises above the baseline and the gradient
//! `tolerance · baseline / short`, clamped to [0.5, 1], falls below 1:
//!
//! ```text
//! new   = limit · gradient + √limit          (√limit: room to probe for more capacity)
//! limit = limit · (1 − smoothing) + new · smoothing, bounded by [min_limit, max_limit]
//! ```
//!
//! With a steady latency the gradient is 1 and the limit grows by about √limit per sample, so it
//! finds the capacity from below; when latency climbs past `tolerance` times the baseline it
//! shrinks, sheding the excess with fast 429s before timeouts pile up. The limit does not grow while
//! less than half of it is in use (nothing was learned about higher concurrency). The baseline is
//! renewed every window, so a dependency that got slower for good is eventually taken as it is.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradientConfig {
    pub min_limit: u32,
    pub max_limit: u32,
    /// Weight of each new limit (0-1].
    pub smoothing: f64,
    /// How far the short average may rise above the baseline before the limit shrinks.
    pub tolerance: f64,
    /// Calls the long average (the baseline) spans.
    pub long_window: u32,
}

impl GradientConfig {
    pub const DEFAULT_SMOOTHING: f64 = 0.2;
    pub const DEFAULT_TOLERANCE: f64 = 1.5;
    pub const DEFAULT_LONG_WINDOW: u32 = 600;
    /// Calls the short average spans.
    const SHORT_WINDOW: f64 = 10.0;
}

#[derive(Debug, Clone)]
pub struct GradientLimiter {
    config: GradientConfig,
    limit: f64,
    /// Seconds; zero until the first sample.
    short: f64,
    /// Minimum latency of the current window of samples, and of the one before (seconds).
    window_min: f64,
    previous_min: f64,
    /// Samples taken in the current window.
    in_window: u32,
}

impl GradientLimiter {
    pub fn new(config: GradientConfig, initial: u32) -> Self {
        Self {
            config,
            limit: f64::from(initial.clamp(config.min_limit, config.max_limit)),
            short: 0.0,
            window_min: f64::INFINITY,
            previous_min: f64::INFINITY,
            in_window: 0,
        }
    }

    /// The limit now in force.
    pub fn limit(&self) -> u32 {
        self.limit.floor() as u32
    }

    /// The recent latency (short average) and the baseline (windowed minimum).
    pub fn latencies(&self) -> (Duration, Duration) {
        let baseline = self.baseline();
        (
            Duration::from_secs_f64(self.short),
            Duration::from_secs_f64(if baseline.is_finite() { baseline } else { 0.0 }),
        )
    }

    fn baseline(&self) -> f64 {
        self.window_min.min(self.previous_min)
    }

    /// Takes one admitted call's latency, with `inflight` calls in flight when it ended.
    /// Returns the limit now in force.
    pub fn on_sample(&mut self, latency: Duration, inflight: u32) -> u32 {
        let rtt = latency.as_secs_f64().max(1e-6);
        self.in_window += 1;
        self.window_min = self.window_min.min(rtt);
        if self.in_window >= self.config.long_window {
            self.previous_min = self.window_min;
            self.window_min = f64::INFINITY;
            self.in_window = 0;
        }
        if self.short == 0.0 {
            self.short = rtt;
            return self.limit();
        }
        self.short += (rtt - self.short) * (2.0 / (GradientConfig::SHORT_WINDOW + 1.0));
        let gradient = (self.config.tolerance * self.baseline() / self.short).clamp(0.5, 1.0);
        // Too little in use to learn anything about a higher limit: only shrink.
        if gradient >= 1.0 && f64::from(inflight) < self.limit / 2.0 {
            return self.limit();
        }
        let new = self.limit * gradient + self.limit.sqrt();
        let smoothed = self.limit * (1.0 - self.config.smoothing) + new * self.config.smoothing;
        self.limit = smoothed.clamp(
            f64::from(self.config.min_limit),
            f64::from(self.config.max_limit),
        );
        self.limit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CONFIG: GradientConfig = GradientConfig {
        min_limit: 5,
        max_limit: 200,
        smoothing: GradientConfig::DEFAULT_SMOOTHING,
        tolerance: GradientConfig::DEFAULT_TOLERANCE,
        long_window: GradientConfig::DEFAULT_LONG_WINDOW,
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_steady_latency_with_the_limit_in_use_grows_it_to_the_maximum() {
        let mut l = GradientLimiter::new(CONFIG, 20);
        let mut last = l.limit();
        for _ in 0..400 {
            let now = l.on_sample(ms(50), l.limit());
            assert!(now >= last, "never shrinks on a steady latency");
            last = now;
        }
        assert_eq!(last, 200);
    }

    #[test]
    fn an_unused_limit_does_not_grow() {
        let mut l = GradientLimiter::new(CONFIG, 50);
        for _ in 0..200 {
            assert_eq!(l.on_sample(ms(50), 3), 50);
        }
    }

    #[test]
    fn a_queueing_dependency_shrinks_the_limit_towards_the_minimum() {
        let mut l = GradientLimiter::new(CONFIG, 100);
        for _ in 0..100 {
            l.on_sample(ms(50), 100);
        }
        let before = l.limit();
        // Latency climbs to four times the baseline and stays there.
        for _ in 0..60 {
            l.on_sample(ms(200), before);
        }
        let after = l.limit();
        assert!(after < before / 2, "{before} -> {after}");
        let (short, long) = l.latencies();
        assert!(short > long, "{short:?} vs {long:?}");
    }

    #[test]
    fn latency_within_the_tolerance_does_not_shrink_it() {
        let mut l = GradientLimiter::new(CONFIG, 60);
        for _ in 0..100 {
            l.on_sample(ms(50), 60);
        }
        let before = l.limit();
        for _ in 0..30 {
            l.on_sample(ms(70), 200); // 1.4x the baseline, within 1.5x
        }
        assert!(l.limit() >= before);
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
            samples in prop::collection::vec((0u64..5000, 0u32..400), 1..200),
        ) {
            let mut l = GradientLimiter::new(CONFIG, initial);
            prop_assert!((5..=200).contains(&l.limit()));
            for (latency, inflight) in samples {
                let limit = l.on_sample(ms(latency), inflight);
                prop_assert!((5..=200).contains(&limit), "{limit}");
            }
        }
    }
}
