//! The breaker's state machine. Pure: no actix, no clock; every method that depends on time takes
//! `now`, so tests step time by adding durations.
//!
//! Closed → Open when its trip policy ([`TripRule`], one file per policy) says so → HalfOpen once
//! the pause is over → Closed after `half_open_probes` successful probes, Open again when one fails
//! (or, as the policy judges, is too slow). Neutral verdicts count for nothing; every transition
//! resets the policy and bumps the generation, so outcomes of older calls are ignored.

use std::time::{Duration, Instant};

use super::consecutive::Consecutive;
use super::failure_rate::FailureRate;
use super::policy::TripPolicy;
use super::throttle::Throttle;
use crate::settings::{BreakerConfig, TripRule};

impl TripRule {
    /// The policy this rule describes, with an empty window.
    fn policy(self) -> Box<dyn TripPolicy> {
        match self {
            TripRule::Consecutive { threshold } => Box::new(Consecutive::new(threshold)),
            TripRule::FailureRate(window) => Box::new(FailureRate::new(window)),
            TripRule::Throttle(params) => Box::new(Throttle::new(params)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    /// Rejecting everything until `probe_at`.
    Open {
        probe_at: Instant,
    },
    HalfOpen,
}

/// Proof that a call was let through. It goes back to the breaker exactly once, with a verdict
/// ([`CircuitBreaker::record`]) or without one ([`CircuitBreaker::abandon`]); it cannot be copied,
/// and only the breaker (or, for Closed, its published gate) makes one.
#[derive(Debug, PartialEq, Eq)]
// Tests replay tickets on copies of a machine; nothing else may copy one.
#[cfg_attr(test, derive(Clone))]
#[must_use = "a ticket must be returned to the breaker"]
pub struct Ticket {
    /// The breaker's generation when the call started; outcomes of older generations are ignored.
    generation: u64,
    /// Whether this call holds one of HalfOpen's probe slots.
    probe: bool,
    /// When a policy that decides each call (throttling) let it through: its verdict goes back to
    /// the policy's bucket of that moment.
    sent: Option<Instant>,
}

impl Ticket {
    /// A ticket for a call let through while the breaker was Closed in `generation` (read from the
    /// published gate, without asking the actor).
    pub(crate) fn closed(generation: u64) -> Self {
        Self {
            generation,
            probe: false,
            sent: None,
        }
    }

    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// Shadow mode (`breaker.enforce = false`): a ticket for a call the breaker refused but lets
    /// go on. Its generation is never the breaker's, so its verdict changes nothing (the breaker
    /// runs on the calls it would have let through, as when enforcing).
    pub(crate) fn shadow() -> Self {
        Self {
            generation: u64::MAX,
            probe: false,
            sent: None,
        }
    }

    /// Whether the breaker must hear of this ticket even without a verdict (the caller went
    /// away): a probe's slot, or a throttled policy's attempt, to take back.
    pub fn must_return(&self) -> bool {
        self.probe || self.sent.is_some()
    }
}

/// What the call's outcome means to the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Success,
    Failure,
    /// Neither: e.g. a timeout shorter than the default that a caller chose for itself.
    Neutral,
}

/// A call refused by the breaker, with the time until the next probe may go through (answered
/// 503 with `Retry-After`), or refused by a throttling policy's draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit open or throttled: the next call may go through in {retry_after:?}")]
pub struct Rejected {
    pub retry_after: Duration,
    /// Refused by the throttling policy (`breaker.mode = "throttle"`), not by an open breaker.
    pub throttled: bool,
}

impl Rejected {
    /// Refused by an open breaker (or HalfOpen's taken probe slots).
    pub fn open(retry_after: Duration) -> Self {
        Self {
            retry_after,
            throttled: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: State,
    /// Bumped on every transition; tickets carry it so stale outcomes can be recognised.
    generation: u64,
    /// The trip policy and its window (Closed's verdicts only).
    policy: Box<dyn TripPolicy>,
    /// Probe slots handed out and not yet returned (HalfOpen only).
    probes_out: u32,
    /// Probes that succeeded in this HalfOpen period.
    probe_successes: u32,
    /// The longest `Retry-After` the dependency answered since the last transition.
    asked_open: Duration,
}

/// How long a caller refused in HalfOpen (all probe slots taken) should wait: the probes' verdict is
/// due within one upstream timeout, so the next chance comes soon.
const HALF_OPEN_RETRY: Duration = Duration::from_secs(1);

/// How long a caller refused by the throttling policy should wait: the next draw is its own.
const THROTTLED_RETRY: Duration = Duration::from_secs(1);

/// How far the rejection probability must move past a boundary before the state it reads as
/// changes, so that noise around 0 or around the cap is not counted as flapping.
const THROTTLE_DEAD_BAND: f64 = 0.05;

/// The state a throttling policy reads as, with rejection probability `p` under `cap`, having
/// read as `shown`: Closed while nothing is refused, Open while the cap is reached (`probe_at` is
/// when a refused caller may try again), HalfOpen between (part of the calls go through). It
/// leaves Closed once `p` reaches [`THROTTLE_DEAD_BAND`] and comes back only at 0; it leaves
/// Open once `p` is that far under the cap.
pub fn throttle_state(shown: State, p: f64, cap: f64, now: Instant) -> State {
    let open = State::Open {
        probe_at: now + THROTTLED_RETRY,
    };
    if p <= 0.0 {
        return State::Closed;
    }
    if p >= cap {
        return open;
    }
    match shown {
        State::Closed if p < THROTTLE_DEAD_BAND => State::Closed,
        State::Open { .. } if p > cap - THROTTLE_DEAD_BAND => open,
        _ => State::HalfOpen,
    }
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: State::Closed,
            generation: 0,
            policy: config.trip.policy(),
            probes_out: 0,
            probe_successes: 0,
            asked_open: Duration::ZERO,
        }
    }

    /// Shares of failed and of slow calls the trip policy judges by (0 when it has none).
    pub fn rates(&self) -> (f64, f64) {
        self.policy.rates()
    }

    /// Failures in a row now, under the consecutive-failures policy.
    pub fn consecutive_failures(&self) -> Option<u32> {
        self.policy.consecutive_failures()
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether recording a success now would change nothing: Closed, and the policy would ignore
    /// it (the consecutive rule with no failure counted).
    pub fn success_changes_nothing(&self) -> bool {
        matches!(self.state, State::Closed) && self.policy.success_changes_nothing()
    }

    /// Whether the policy decides each call (throttling): every call must then ask the breaker.
    pub fn decides_each_call(&self) -> bool {
        self.policy.decides_each_call()
    }

    /// Under a throttling policy, the probability that a call now is refused, and the state the
    /// breaker reads as, given the one it read as before (`shown`): see [`throttle_state`].
    pub fn throttling(&self, now: Instant, shown: State) -> Option<(f64, State)> {
        let (p, cap) = self.policy.rejection_probability(now)?;
        Some((p, throttle_state(shown, p, cap, now)))
    }

    /// Asks to let one call through at `now`.
    pub fn allow(&mut self, now: Instant) -> Result<Ticket, Rejected> {
        self.tick(now);
        match self.state {
            State::Closed if self.policy.decides_each_call() => {
                if self.policy.refuse(now) {
                    return Err(Rejected {
                        retry_after: THROTTLED_RETRY,
                        throttled: true,
                    });
                }
                Ok(Ticket {
                    generation: self.generation,
                    probe: false,
                    sent: Some(now),
                })
            }
            State::Closed => Ok(Ticket::closed(self.generation)),
            State::Open { probe_at } => {
                Err(Rejected::open(probe_at.saturating_duration_since(now)))
            }
            State::HalfOpen if self.probes_out < self.config.half_open_probes => {
                self.probes_out += 1;
                Ok(Ticket {
                    generation: self.generation,
                    probe: true,
                    sent: None,
                })
            }
            State::HalfOpen => Err(Rejected::open(HALF_OPEN_RETRY)),
        }
    }

    /// Moves Open to HalfOpen once its time is up. Returns whether the state changed.
    pub fn tick(&mut self, now: Instant) -> bool {
        match self.state {
            State::Open { probe_at } if now >= probe_at => {
                self.enter(State::HalfOpen);
                true
            }
            _ => false,
        }
    }

    /// Takes a call's ticket back with its verdict and how long the call took (a policy may
    /// judge slow calls). Returns whether the state changed.
    pub fn record(
        &mut self,
        ticket: Ticket,
        verdict: Verdict,
        elapsed: Duration,
        now: Instant,
    ) -> bool {
        if ticket.generation != self.generation {
            return false; // the call started before the last transition
        }
        if let Some(sent) = ticket.sent {
            self.policy.settle(sent, verdict);
            return false;
        }
        match (self.state, verdict) {
            (State::Closed, Verdict::Neutral) => false,
            (State::Closed, _) => {
                let trips = self.policy.record(verdict == Verdict::Failure, elapsed);
                if trips {
                    self.open(now);
                }
                trips
            }
            (State::HalfOpen, _) if ticket.probe => {
                self.probes_out = self.probes_out.saturating_sub(1);
                match verdict {
                    Verdict::Success if !self.policy.fails_probe(elapsed) => {
                        self.probe_successes += 1;
                        if self.probe_successes >= self.config.half_open_probes {
                            self.enter(State::Closed);
                            return true;
                        }
                        false
                    }
                    Verdict::Success | Verdict::Failure => {
                        self.open(now);
                        true
                    }
                    Verdict::Neutral => false,
                }
            }
            _ => false,
        }
    }

    /// The dependency asked not to be called for `wait` (a `Retry-After` on a failed call): if the
    /// breaker opens before its next transition, it stays open that long, up to `max_open`.
    pub fn ask_open_for(&mut self, wait: Duration) {
        self.asked_open = self.asked_open.max(wait.min(self.config.max_open));
    }

    /// Takes a ticket back without a verdict (the caller went away): a probe slot is freed, a
    /// throttling policy's attempt taken back.
    pub fn abandon(&mut self, ticket: Ticket) {
        if ticket.generation != self.generation {
            return;
        }
        if let Some(sent) = ticket.sent {
            self.policy.settle(sent, Verdict::Neutral);
        } else if ticket.probe && self.state == State::HalfOpen {
            self.probes_out = self.probes_out.saturating_sub(1);
        }
    }

    fn open(&mut self, now: Instant) {
        self.enter(State::Open {
            probe_at: now + self.config.open_for.max(self.asked_open),
        });
    }

    fn enter(&mut self, state: State) {
        self.state = state;
        self.generation += 1;
        self.policy.reset();
        self.probes_out = 0;
        self.probe_successes = 0;
        self.asked_open = Duration::ZERO;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::settings::RateWindow;

    const OPEN_FOR: Duration = Duration::from_secs(10);
    const THRESHOLD: u32 = 3;

    fn breaker(probes: u32) -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig {
            enforce: true,
            trip: TripRule::Consecutive {
                threshold: THRESHOLD,
            },
            open_for: OPEN_FOR,
            max_open: Duration::ZERO,
            half_open_probes: probes,
        })
    }

    fn fail(b: &mut CircuitBreaker, now: Instant) -> bool {
        let t = b.allow(now).unwrap();
        b.record(t, Verdict::Failure, Duration::ZERO, now)
    }

    fn trip(b: &mut CircuitBreaker, now: Instant) {
        for _ in 0..THRESHOLD {
            fail(b, now);
        }
        assert!(matches!(b.state(), State::Open { .. }));
    }

    #[test]
    fn a_breaker_opens_after_the_threshold_of_consecutive_failures() {
        let t0 = Instant::now();
        let mut b = breaker(1);
        assert!(!fail(&mut b, t0));
        assert!(!fail(&mut b, t0));
        assert_eq!(b.state(), State::Closed);
        // Third consecutive failure: open until t0 + 10 s.
        assert!(fail(&mut b, t0));
        assert_eq!(
            b.state(),
            State::Open {
                probe_at: t0 + OPEN_FOR
            }
        );
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let t0 = Instant::now();
        let mut b = breaker(1);
        fail(&mut b, t0);
        fail(&mut b, t0);
        let t = b.allow(t0).unwrap();
        b.record(t, Verdict::Success, Duration::ZERO, t0);
        fail(&mut b, t0);
        fail(&mut b, t0);
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn a_success_changes_nothing_only_when_closed_with_no_failure_counted() {
        let t0 = Instant::now();
        let mut b = breaker(1);
        assert!(b.success_changes_nothing());
        fail(&mut b, t0);
        assert!(!b.success_changes_nothing(), "a failure is counted");
        let t = b.allow(t0).unwrap();
        b.record(t, Verdict::Success, Duration::ZERO, t0);
        assert!(b.success_changes_nothing());
        trip(&mut b, t0);
        assert!(!b.success_changes_nothing(), "open");
        b.tick(t0 + OPEN_FOR);
        assert!(!b.success_changes_nothing(), "half-open");
        let probe = b.allow(t0 + OPEN_FOR).unwrap();
        b.record(probe, Verdict::Success, Duration::ZERO, t0 + OPEN_FOR);
        assert_eq!(b.state(), State::Closed);
        assert!(b.success_changes_nothing(), "closed again");
        // Under the failure-rate rule every success enters the window.
        let rate = rate_breaker(10, 5, 0);
        assert!(!rate.success_changes_nothing());
    }

    #[test]
    fn neutral_outcomes_neither_count_nor_reset() {
        let t0 = Instant::now();
        let mut b = breaker(1);
        fail(&mut b, t0);
        fail(&mut b, t0);
        for _ in 0..10 {
            let t = b.allow(t0).unwrap();
            b.record(t, Verdict::Neutral, Duration::ZERO, t0);
        }
        assert_eq!(b.state(), State::Closed);
        fail(&mut b, t0);
        assert!(matches!(b.state(), State::Open { .. }));
    }

    #[test]
    fn an_open_breaker_rejects_with_the_time_until_the_probe() {
        let t0 = Instant::now();
        let mut b = breaker(1);
        trip(&mut b, t0);
        let r = b.allow(t0 + Duration::from_millis(2500)).unwrap_err();
        assert_eq!(r.retry_after, Duration::from_millis(7500));
    }

    #[test]
    fn after_the_pause_it_half_opens_and_lets_exactly_the_probe_slots_through() {
        let t0 = Instant::now();
        let mut b = breaker(2);
        trip(&mut b, t0);
        let later = t0 + OPEN_FOR;
        // The first call after the pause moves to HalfOpen and takes a probe slot.
        let p1 = b.allow(later).unwrap();
        assert_eq!(b.state(), State::HalfOpen);
        assert!(p1.is_probe());
        let p2 = b.allow(later).unwrap();
        assert!(p2.is_probe());
        // Both slots taken: the next caller is refused with a short Retry-After.
        assert_eq!(b.allow(later).unwrap_err().retry_after, HALF_OPEN_RETRY);
        // One success is not enough with two probes.
        assert!(!b.record(p1, Verdict::Success, Duration::ZERO, later));
        assert_eq!(b.state(), State::HalfOpen);
        // The second success closes it.
        assert!(b.record(p2, Verdict::Success, Duration::ZERO, later));
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn a_failed_probe_opens_it_again_for_a_full_pause() {
        let t0 = Instant::now();
        let mut b = breaker(1);
        trip(&mut b, t0);
        let later = t0 + OPEN_FOR + Duration::from_secs(1);
        let p = b.allow(later).unwrap();
        assert!(b.record(p, Verdict::Failure, Duration::ZERO, later));
        assert_eq!(
            b.state(),
            State::Open {
                probe_at: later + OPEN_FOR
            }
        );
    }

    #[test]
    fn a_retry_after_longer_than_the_pause_stretches_it_up_to_max_open() {
        let config = |max_open| BreakerConfig {
            enforce: true,
            trip: TripRule::Consecutive {
                threshold: THRESHOLD,
            },
            open_for: OPEN_FOR,
            half_open_probes: 1,
            max_open,
        };
        let t0 = Instant::now();
        for (asked, max_open, open) in [
            (30, 60, 30), // longer than the pause: followed
            (90, 60, 60), // longer than the cap: capped
            (5, 60, 10),  // shorter than the pause: the pause
            (30, 0, 10),  // a cap of zero: Retry-After is ignored
        ] {
            let mut b = CircuitBreaker::new(config(Duration::from_secs(max_open)));
            b.ask_open_for(Duration::from_secs(asked));
            trip(&mut b, t0);
            assert_eq!(
                b.state(),
                State::Open {
                    probe_at: t0 + Duration::from_secs(open)
                },
                "Retry-After {asked} s, max_open {max_open} s"
            );
        }
        // Asked once, then a transition: the next opening has the plain pause again.
        let mut b = CircuitBreaker::new(config(Duration::from_secs(60)));
        b.ask_open_for(Duration::from_secs(30));
        trip(&mut b, t0);
        let later = t0 + Duration::from_secs(31);
        assert!(b.tick(later));
        let probe = b.allow(later).unwrap();
        b.record(probe, Verdict::Failure, Duration::ZERO, later);
        assert_eq!(
            b.state(),
            State::Open {
                probe_at: later + OPEN_FOR
            }
        );
    }

    #[test]
    fn tick_moves_open_to_half_open_only_when_due() {
        let t0 = Instant::now();
        let mut b = breaker(1);
        trip(&mut b, t0);
        assert!(!b.tick(t0 + OPEN_FOR - Duration::from_millis(1)));
        assert!(b.tick(t0 + OPEN_FOR));
        assert_eq!(b.state(), State::HalfOpen);
        assert!(!b.tick(t0 + OPEN_FOR * 3));
    }

    #[test]
    fn an_abandoned_probe_frees_its_slot_without_a_verdict() {
        let t0 = Instant::now();
        let mut b = breaker(1);
        trip(&mut b, t0);
        let later = t0 + OPEN_FOR;
        let p = b.allow(later).unwrap();
        assert!(b.allow(later).is_err());
        b.abandon(p);
        assert_eq!(b.state(), State::HalfOpen);
        let p = b.allow(later).unwrap();
        assert!(p.is_probe());
        // A neutral probe outcome frees the slot too.
        assert!(!b.record(p, Verdict::Neutral, Duration::ZERO, later));
        assert!(b.allow(later).is_ok());
    }

    #[test]
    fn a_late_success_cannot_close_a_freshly_opened_breaker() {
        let t0 = Instant::now();
        let mut b = breaker(1);
        let slow = b.allow(t0).unwrap(); // a call that will finish late
        trip(&mut b, t0);
        assert!(!b.record(slow, Verdict::Success, Duration::ZERO, t0));
        assert!(matches!(b.state(), State::Open { .. }));
    }

    #[test]
    fn results_from_an_earlier_generation_are_ignored_in_half_open() {
        let t0 = Instant::now();
        let mut b = breaker(1);
        let old = b.allow(t0).unwrap();
        trip(&mut b, t0);
        let later = t0 + OPEN_FOR;
        let probe = b.allow(later).unwrap();
        // A pre-trip failure arriving now must neither re-open nor free the probe slot.
        assert!(!b.record(old, Verdict::Failure, Duration::ZERO, later));
        assert_eq!(b.state(), State::HalfOpen);
        assert!(b.allow(later).is_err());
        assert!(b.record(probe, Verdict::Success, Duration::ZERO, later));
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn a_stale_probe_ticket_cannot_free_a_slot_of_a_later_half_open() {
        let t0 = Instant::now();
        let mut b = breaker(1);
        trip(&mut b, t0);
        let t1 = t0 + OPEN_FOR;
        let first = b.allow(t1).unwrap();
        // Another failed probe path: force re-open via a fresh probe failure is impossible here
        // (slot taken), so let the first probe fail, then half-open again.
        assert!(b.record(first, Verdict::Failure, Duration::ZERO, t1));
        let t2 = t1 + OPEN_FOR;
        let second = b.allow(t2).unwrap();
        let stale = Ticket {
            generation: second.generation - 2,
            probe: true,
            sent: None,
        };
        b.abandon(stale);
        assert!(b.allow(t2).is_err(), "the stale ticket freed a slot");
        assert!(b.record(second, Verdict::Success, Duration::ZERO, t2));
    }

    fn rate_breaker(size: u32, minimum_calls: u32, slow_ms: u64) -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig {
            enforce: true,
            trip: TripRule::FailureRate(RateWindow {
                size,
                minimum_calls,
                failure_rate_threshold: 0.5,
                slow_call: Duration::from_millis(slow_ms),
                slow_call_rate_threshold: 0.6,
            }),
            open_for: OPEN_FOR,
            max_open: Duration::ZERO,
            half_open_probes: 1,
        })
    }

    fn call(b: &mut CircuitBreaker, verdict: Verdict, ms: u64, now: Instant) -> bool {
        let t = b.allow(now).unwrap();
        b.record(t, verdict, Duration::from_millis(ms), now)
    }

    #[test]
    fn the_rate_rule_waits_for_the_minimum_calls_then_opens_at_the_threshold() {
        let t0 = Instant::now();
        let mut b = rate_breaker(10, 4, 0);
        // Three failures in a row: under the consecutive rule (threshold 1) this would be open.
        for _ in 0..3 {
            assert!(!call(&mut b, Verdict::Failure, 1, t0));
        }
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.rates().0, 1.0);
        // The fourth call brings the window to its minimum: 3 of 4 failed, 75 % >= 50 %.
        assert!(call(&mut b, Verdict::Success, 1, t0));
        assert!(matches!(b.state(), State::Open { .. }));
        // The window starts empty after the transition.
        assert_eq!(b.rates().0, 0.0);
    }

    #[test]
    fn the_rate_rule_stays_closed_below_the_threshold_and_forgets_old_calls() {
        let t0 = Instant::now();
        let mut b = rate_breaker(4, 4, 0);
        // Alternating: 2 of 4 would be 50 % and open, so start with successes: S S F S = 25 %.
        for v in [
            Verdict::Success,
            Verdict::Success,
            Verdict::Failure,
            Verdict::Success,
        ] {
            assert!(!call(&mut b, v, 1, t0));
        }
        assert_eq!(b.rates().0, 0.25);
        // Neutral verdicts never enter the window.
        for _ in 0..5 {
            assert!(!call(&mut b, Verdict::Neutral, 1, t0));
        }
        assert_eq!(b.rates().0, 0.25);
        // The window slides: the failure leaves after four more successes.
        for _ in 0..4 {
            assert!(!call(&mut b, Verdict::Success, 1, t0));
        }
        assert_eq!(b.rates().0, 0.0);
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn slow_successes_open_the_breaker_by_their_own_rate() {
        let t0 = Instant::now();
        let mut b = rate_breaker(5, 5, 100);
        // 3 of 5 successes slower than 100 ms: 60 % slow >= 60 %, no failure at all.
        for ms in [150, 10, 150, 10] {
            assert!(!call(&mut b, Verdict::Success, ms, t0));
        }
        assert_eq!(b.rates().1, 0.5);
        assert!(call(&mut b, Verdict::Success, 100, t0));
        assert!(matches!(b.state(), State::Open { .. }));
    }

    #[test]
    fn a_slow_probe_reopens_under_the_rate_rule() {
        let t0 = Instant::now();
        let mut b = rate_breaker(2, 2, 100);
        call(&mut b, Verdict::Failure, 1, t0);
        assert!(call(&mut b, Verdict::Failure, 1, t0));
        let later = t0 + OPEN_FOR;
        let probe = b.allow(later).unwrap();
        assert!(b.record(probe, Verdict::Success, Duration::from_millis(500), later));
        assert_eq!(
            b.state(),
            State::Open {
                probe_at: later + OPEN_FOR
            }
        );
        let probe = b.allow(later + OPEN_FOR).unwrap();
        assert!(b.record(
            probe,
            Verdict::Success,
            Duration::from_millis(5),
            later + OPEN_FOR
        ));
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn under_the_throttle_policy_it_never_opens_and_refuses_a_share_marked_throttled() {
        use crate::settings::ThrottleParams;
        let mut b = CircuitBreaker::new(BreakerConfig {
            enforce: true,
            trip: TripRule::Throttle(ThrottleParams {
                window: Duration::from_secs(30),
                success_rate: 0.95,
                aggression: 1.0,
                min_rps: 0.0,
                max_probability: 0.8,
            }),
            open_for: OPEN_FOR,
            max_open: Duration::ZERO,
            half_open_probes: 1,
        });
        let t0 = Instant::now();
        assert!(b.decides_each_call());
        assert_eq!(b.throttling(t0, State::Closed), Some((0.0, State::Closed)));
        let (mut sent, mut refused) = (0, 0);
        for _ in 0..500 {
            match b.allow(t0) {
                Ok(ticket) => {
                    assert!(ticket.must_return(), "an attempt to take back if abandoned");
                    assert!(!b.record(ticket, Verdict::Failure, Duration::ZERO, t0));
                    sent += 1;
                }
                Err(rejected) => {
                    assert!(rejected.throttled);
                    assert_eq!(rejected.retry_after, THROTTLED_RETRY);
                    refused += 1;
                }
            }
        }
        // Every call fails: P climbs to the 0.8 cap and stays there; about 1 in 5 still goes.
        assert_eq!(b.state(), State::Closed, "the machine itself never opens");
        assert_eq!(b.generation(), 0);
        let (p, shown) = b.throttling(t0, State::HalfOpen).unwrap();
        assert!((p - 0.8).abs() < 1e-9, "{p}");
        assert!(matches!(shown, State::Open { .. }));
        assert!((60..=160).contains(&sent), "{sent} sent, {refused} refused");
        // 30 s later the window has forgotten them.
        let later = t0 + Duration::from_secs(30);
        assert_eq!(b.throttling(later, shown), Some((0.0, State::Closed)));
        // An abandoned call's attempt is taken back: it does not count as unaccepted.
        for _ in 0..50 {
            let ticket = b.allow(later).unwrap();
            b.abandon(ticket);
        }
        assert_eq!(
            b.throttling(later, State::Closed),
            Some((0.0, State::Closed))
        );
        // A dependency that accepts 40 calls and fails the rest (an overloaded one): P is
        // (100 - 40/0.95) / 101 = 0.57, between 0 and the cap, so it reads half-open.
        let mut accepted = 0;
        for _ in 0..100 {
            if let Ok(ticket) = b.allow(later) {
                let verdict = if accepted < 40 {
                    accepted += 1;
                    Verdict::Success
                } else {
                    Verdict::Failure
                };
                b.record(ticket, verdict, Duration::ZERO, later);
            }
        }
        let (p, shown) = b.throttling(later, State::Closed).unwrap();
        assert!((p - 0.573_215).abs() < 1e-6, "{p}");
        assert_eq!(shown, State::HalfOpen);
    }

    #[test]
    fn the_state_a_throttle_reads_as_changes_only_past_a_dead_band() {
        let now = Instant::now();
        let open = State::Open {
            probe_at: now + THROTTLED_RETRY,
        };
        for (shown, p, cap, expected) in [
            (State::Closed, 0.0, 0.8, State::Closed),
            // A little refused: still closed until 5 %.
            (State::Closed, 0.03, 0.8, State::Closed),
            (State::Closed, 0.05, 0.8, State::HalfOpen),
            (State::Closed, 0.8, 0.8, open),
            // Half-open goes back to closed only at 0.
            (State::HalfOpen, 0.01, 0.8, State::HalfOpen),
            (State::HalfOpen, 0.0, 0.8, State::Closed),
            (State::HalfOpen, 0.8, 0.8, open),
            // Open stays open until 5 % under the cap.
            (open, 0.77, 0.8, open),
            (open, 0.75, 0.8, State::HalfOpen),
            (open, 0.0, 0.8, State::Closed),
            // A cap under the dead band: any refusal is the cap.
            (State::Closed, 0.02, 0.02, open),
            (State::Closed, 0.0, 0.0, State::Closed),
        ] {
            assert_eq!(
                throttle_state(shown, p, cap, now),
                expected,
                "{shown:?} at {p} (cap {cap})"
            );
        }
    }

    #[test]
    fn every_transition_bumps_the_generation() {
        let t0 = Instant::now();
        let mut b = breaker(1);
        assert_eq!(b.generation(), 0);
        trip(&mut b, t0);
        assert_eq!(b.generation(), 1);
        let p = b.allow(t0 + OPEN_FOR).unwrap();
        assert_eq!(b.generation(), 2);
        b.record(p, Verdict::Success, Duration::ZERO, t0 + OPEN_FOR);
        assert_eq!(b.generation(), 3);
        assert_eq!(b.state(), State::Closed);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Allow,
        /// Returns the held ticket at this index (modulo the count) with a verdict and duration.
        Record(usize, Verdict, u64),
        Abandon(usize),
        /// Time passes (ms).
        Advance(u64),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        let verdict =
            prop::sample::select(vec![Verdict::Success, Verdict::Failure, Verdict::Neutral]);
        prop_oneof![
            4 => Just(Op::Allow),
            4 => (any::<usize>(), verdict, 0u64..400).prop_map(|(i, v, ms)| Op::Record(i, v, ms)),
            1 => any::<usize>().prop_map(Op::Abandon),
            2 => (0u64..6000).prop_map(Op::Advance),
        ]
    }

    fn rule() -> impl proptest::strategy::Strategy<Value = TripRule> {
        use proptest::prelude::*;
        prop_oneof![
            Just(TripRule::Consecutive { threshold: 3 }),
            (1u32..10, 0u64..300).prop_map(|(minimum, slow)| TripRule::FailureRate(RateWindow {
                size: 10,
                minimum_calls: minimum,
                failure_rate_threshold: 0.5,
                slow_call: Duration::from_millis(slow),
                slow_call_rate_threshold: 0.5,
            })),
        ]
    }

    /// Applies one op to `b`, with the tickets it holds and its clock. Returns the recorded
    /// ticket's (probe, generation) and verdict when the op recorded one.
    fn apply(
        b: &mut CircuitBreaker,
        held: &mut Vec<Ticket>,
        now: &mut Instant,
        op: Op,
    ) -> Option<(bool, u64, Verdict)> {
        match op {
            Op::Allow => {
                if let Ok(t) = b.allow(*now) {
                    held.push(t);
                }
            }
            Op::Record(i, verdict, ms) if !held.is_empty() => {
                let t = held.swap_remove(i % held.len());
                let recorded = (t.is_probe(), t.generation, verdict);
                b.record(t, verdict, Duration::from_millis(ms), *now);
                return Some(recorded);
            }
            Op::Abandon(i) if !held.is_empty() => b.abandon(held.swap_remove(i % held.len())),
            Op::Record(..) | Op::Abandon(_) => {}
            Op::Advance(ms) => {
                *now += Duration::from_millis(ms);
                b.tick(*now);
            }
        }
        None
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 1000, failure_persistence: None, ..Default::default() })]

        /// Whatever happened before: when the breaker says a success would change nothing, recording
        /// one (of this generation or an older one) leaves it exactly as it was. Handlers rely on
        /// this to leave such successes out (`BreakerGate::must_send`).
        #[test]
        fn a_success_that_changes_nothing_changes_nothing(
            trip in rule(),
            ops in proptest::collection::vec(op(), 1..200),
            ms in 0u64..400,
        ) {
            let mut b = CircuitBreaker::new(BreakerConfig {
                enforce: true,
                trip,
                open_for: OPEN_FOR,
                max_open: Duration::ZERO,
                half_open_probes: 2,
            });
            let mut now = Instant::now();
            let mut held: Vec<Ticket> = Vec::new();
            for op in ops {
                apply(&mut b, &mut held, &mut now, op);
                if b.success_changes_nothing() {
                    for generation in [b.generation(), b.generation().saturating_sub(1)] {
                        let mut after = b.clone();
                        let changed = after.record(Ticket::closed(generation), Verdict::Success, Duration::from_millis(ms), now);
                        proptest::prop_assert!(!changed);
                        proptest::prop_assert_eq!(format!("{after:?}"), format!("{b:?}"));
                    }
                }
            }
        }

        /// Whatever the calls, verdicts, abandons and pauses: a breaker that is not Closed becomes
        /// Closed only by the successful verdict of a probe, after `half_open_probes` of them in
        /// the same HalfOpen period; Open never closes directly.
        #[test]
        fn the_breaker_never_closes_without_successful_probes(
            probes in 1u32..4,
            trip in rule(),
            ops in proptest::collection::vec(op(), 1..200),
        ) {
            let mut b = CircuitBreaker::new(BreakerConfig {
                enforce: true,
                trip,
                open_for: OPEN_FOR,
                max_open: Duration::ZERO,
                half_open_probes: probes,
            });
            let mut now = Instant::now();
            let mut held: Vec<Ticket> = Vec::new();
            let mut successful_probes = 0;
            for op in ops {
                let before = b.state();
                let generation = b.generation();
                let mut closing_probe = false;
                let recorded = apply(&mut b, &mut held, &mut now, op);
                if recorded == Some((true, generation, Verdict::Success)) {
                    successful_probes += 1;
                    closing_probe = true;
                }
                // HalfOpen may come from ticking inside allow(); it does not change the count.
                if before != State::HalfOpen && b.state() == State::HalfOpen {
                    successful_probes = 0;
                }
                if before != State::Closed && b.state() == State::Closed {
                    proptest::prop_assert_eq!(before, State::HalfOpen, "closed straight from {:?}", before);
                    proptest::prop_assert!(closing_probe, "closed without a successful probe");
                    proptest::prop_assert!(successful_probes >= probes, "{} of {} probes", successful_probes, probes);
                }
                if b.generation() != generation && b.state() != State::HalfOpen {
                    successful_probes = 0;
                }
            }
        }
    }
}
