//! The breaker's published snapshot. The actor writes it on every transition; handlers read it to
//! let calls through while Closed and to refuse them while Open without a mailbox round trip.
//! Only HalfOpen (and Open past its pause) needs the actor's decision.
//!
//! It also lets a handler leave out the verdict the actor would ignore: a success while the breaker
//! is Closed under the consecutive rule with no failure counted (the common case, one message per
//! call fewer). That is exact, not approximate: see [`BreakerGate::must_send`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::machine::{State, Verdict};

const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;
/// A policy that decides each call (throttling): every call asks the actor.
const ASK: u64 = 3;

/// In `verdicts`: a success would change nothing (as of the last verdict the actor took).
const CLEAN: u64 = 1;
/// In `verdicts`: one failure on its way to the actor.
const ONE_FAILURE: u64 = 2;

#[derive(Debug)]
pub(crate) struct BreakerGate {
    /// `generation << 2 | state code`: one word, so a reader never pairs a state with another
    /// transition's generation.
    word: AtomicU64,
    /// End of the Open pause, in milliseconds since `epoch`.
    probe_at_ms: AtomicU64,
    epoch: Instant,
    /// `failures on their way to the actor << 1 | CLEAN`, one word: a handler that reads no
    /// failure on its way and CLEAN knows that every failure sent before its read has been taken
    /// and that the breaker, as those verdicts left it, would ignore a success.
    verdicts: AtomicU64,
}

/// What a handler may do without asking the actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GateView {
    /// Closed in this generation: go ahead.
    Closed { generation: u64 },
    /// Open: refuse, the pause ends after `retry_after`.
    Open { retry_after: Duration },
    /// HalfOpen, or Open whose pause is over: only the actor can decide.
    AskActor,
}

impl BreakerGate {
    pub(crate) fn new() -> Self {
        Self {
            word: AtomicU64::new(CLOSED),
            probe_at_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            // Not CLEAN until the actor says so: every verdict is sent until it has started.
            verdicts: AtomicU64::new(0),
        }
    }

    /// Publishes the machine's state; `each_call` (a throttling policy) sends every call to the
    /// actor whatever the state.
    pub(crate) fn publish(&self, generation: u64, state: State, each_call: bool) {
        let code = match state {
            _ if each_call => ASK,
            State::Closed => CLOSED,
            State::Open { probe_at } => {
                self.probe_at_ms
                    .store(self.millis(probe_at), Ordering::Release);
                OPEN
            }
            State::HalfOpen => HALF_OPEN,
        };
        self.word.store(generation << 2 | code, Ordering::Release);
    }

    pub(crate) fn view(&self, now: Instant) -> GateView {
        let word = self.word.load(Ordering::Acquire);
        match word & 3 {
            CLOSED => GateView::Closed {
                generation: word >> 2,
            },
            OPEN => {
                let probe_at = self.probe_at_ms.load(Ordering::Acquire);
                let now = self.millis(now);
                if now < probe_at {
                    GateView::Open {
                        retry_after: Duration::from_millis(probe_at - now),
                    }
                } else {
                    GateView::AskActor
                }
            }
            // HALF_OPEN and ASK.
            _ => GateView::AskActor,
        }
    }

    /// A handler's question when a call ends: must the actor hear this verdict? Not a success of
    /// a call that held no probe slot while no failure is on its way and the actor last said a
    /// success would change nothing: had it been sent now, the actor would take it after every
    /// failure sent before (all taken) and before any sent later, where the breaker is Closed with
    /// no failure counted, and ignore it. (Successes still on their way only keep it so.) A
    /// failure is counted as on its way, until [`BreakerGate::settle`].
    pub(crate) fn must_send(&self, verdict: Verdict, probe: bool) -> bool {
        match verdict {
            Verdict::Success if !probe => self.verdicts.load(Ordering::Acquire) != CLEAN,
            Verdict::Failure => {
                self.verdicts.fetch_add(ONE_FAILURE, Ordering::AcqRel);
                true
            }
            Verdict::Success | Verdict::Neutral => true,
        }
    }

    /// The actor's part, after each verdict it takes and each transition: `clean` is whether a
    /// success would now change nothing; `failure_taken` when the verdict taken was a failure
    /// counted by [`BreakerGate::must_send`]. Both in one step, so that no handler sees the
    /// failure gone before it sees its effect.
    pub(crate) fn settle(&self, clean: bool, failure_taken: bool) {
        let taken = if failure_taken { ONE_FAILURE } else { 0 };
        let _ = self
            .verdicts
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                Some(((word & !CLEAN).saturating_sub(taken)) | u64::from(clean))
            });
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_mirrors_each_published_state() {
        let gate = BreakerGate::new();
        let now = Instant::now();
        assert_eq!(gate.view(now), GateView::Closed { generation: 0 });

        let probe_at = now + Duration::from_secs(3);
        gate.publish(1, State::Open { probe_at }, false);
        match gate.view(now) {
            GateView::Open { retry_after } => {
                assert!(retry_after <= Duration::from_secs(3));
                assert!(retry_after >= Duration::from_millis(2990));
            }
            other => panic!("expected Open, got {other:?}"),
        }
        // Past the pause the actor must decide (it will half-open).
        assert_eq!(gate.view(probe_at), GateView::AskActor);

        gate.publish(2, State::HalfOpen, false);
        assert_eq!(gate.view(now), GateView::AskActor);
        gate.publish(3, State::Closed, false);
        assert_eq!(gate.view(now), GateView::Closed { generation: 3 });
        // Under a throttling policy every call asks the actor, Closed or not.
        gate.publish(3, State::Closed, true);
        assert_eq!(gate.view(now), GateView::AskActor);
    }
}

/// The protocol between handlers and the actor around [`BreakerGate::must_send`], run against the
/// real machine and gate with a modelled mailbox, in every order proptest finds: a success left
/// out must be one the actor would have ignored had it been sent at that moment.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod verdicts_left_out {
    use std::collections::VecDeque;

    use super::*;
    use crate::breaker::machine::{CircuitBreaker, Ticket};
    use crate::settings::RateWindow;
    use crate::settings::{BreakerConfig, TripRule};

    const OPEN_FOR: Duration = Duration::from_secs(5);

    #[derive(Debug, Clone, Copy)]
    enum Op {
        /// A call ends with this verdict: let through by the gate, or by asking the actor.
        Call(Verdict),
        /// The actor takes the oldest message.
        Take,
        /// Time passes (ms) and the actor's timer ticks the breaker.
        Advance(u64),
    }

    /// What waits in the actor's mailbox.
    enum Msg {
        Record(Ticket, Verdict),
        /// A handler's Allow; the call ends with this verdict once let through.
        Allow(Verdict),
    }

    struct World {
        machine: CircuitBreaker,
        gate: BreakerGate,
        mailbox: VecDeque<Msg>,
        now: Instant,
    }

    impl World {
        /// The actor publishes the machine (as `BreakerActor::publish`, on start and transitions).
        fn changed(&self) {
            self.gate.publish(
                self.machine.generation(),
                self.machine.state(),
                self.machine.decides_each_call(),
            );
            self.gate
                .settle(self.machine.success_changes_nothing(), false);
        }

        /// A call that got `ticket` ends with `verdict` (as `Pass::finish`).
        fn finish(&mut self, ticket: Ticket, verdict: Verdict) -> Result<(), String> {
            if self.gate.must_send(verdict, ticket.is_probe()) {
                self.mailbox.push_back(Msg::Record(ticket, verdict));
                return Ok(());
            }
            // Sent now, it would be taken after everything already in the mailbox.
            let mut sent = self.machine.clone();
            for msg in &self.mailbox {
                match msg {
                    Msg::Record(t, v) => {
                        sent.record(t.clone(), *v, Duration::ZERO, self.now);
                    }
                    Msg::Allow(_) => {
                        let _ = sent.allow(self.now);
                    }
                }
            }
            let before = format!("{sent:?}");
            let changed = sent.record(ticket, verdict, Duration::ZERO, self.now);
            if changed || format!("{sent:?}") != before {
                return Err(format!(
                    "left out {verdict:?}, which would have changed {before}"
                ));
            }
            Ok(())
        }

        fn step(&mut self, op: Op) -> Result<(), String> {
            match op {
                Op::Call(verdict) => match self.gate.view(self.now) {
                    GateView::Closed { generation } => {
                        self.finish(Ticket::closed(generation), verdict)?;
                    }
                    GateView::Open { .. } => {}
                    GateView::AskActor => self.mailbox.push_back(Msg::Allow(verdict)),
                },
                Op::Take => match self.mailbox.pop_front() {
                    Some(Msg::Record(ticket, verdict)) => {
                        if self
                            .machine
                            .record(ticket, verdict, Duration::ZERO, self.now)
                        {
                            self.changed();
                        }
                        self.gate.settle(
                            self.machine.success_changes_nothing(),
                            verdict == Verdict::Failure,
                        );
                    }
                    Some(Msg::Allow(verdict)) => {
                        let generation = self.machine.generation();
                        let allowed = self.machine.allow(self.now);
                        if self.machine.generation() != generation {
                            self.changed();
                        }
                        if let Ok(ticket) = allowed {
                            self.finish(ticket, verdict)?;
                        }
                    }
                    None => {}
                },
                Op::Advance(ms) => {
                    self.now += Duration::from_millis(ms);
                    if self.machine.tick(self.now) {
                        self.changed();
                    }
                }
            }
            Ok(())
        }
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        let verdict =
            prop::sample::select(vec![Verdict::Success, Verdict::Failure, Verdict::Neutral]);
        prop_oneof![
            6 => verdict.prop_map(Op::Call),
            5 => Just(Op::Take),
            1 => (0u64..8000).prop_map(Op::Advance),
        ]
    }

    fn world(trip: TripRule) -> World {
        let world = World {
            machine: CircuitBreaker::new(BreakerConfig {
                enforce: true,
                max_open: Duration::ZERO,
                trip,
                open_for: OPEN_FOR,
                half_open_probes: 2,
            }),
            gate: BreakerGate::new(),
            mailbox: VecDeque::new(),
            now: Instant::now(),
        };
        world.changed(); // as `BreakerActor::started`
        world
    }

    #[test]
    fn before_the_actor_starts_every_verdict_is_sent() {
        let gate = BreakerGate::new();
        assert!(gate.must_send(Verdict::Success, false));
    }

    #[test]
    fn a_failure_on_its_way_keeps_successes_coming_until_the_actor_has_taken_it() {
        let mut w = world(TripRule::Consecutive { threshold: 3 });
        assert!(
            !w.gate.must_send(Verdict::Success, false),
            "closed, nothing counted"
        );
        assert!(
            w.gate.must_send(Verdict::Success, true),
            "a probe's verdict always goes"
        );
        assert!(w.gate.must_send(Verdict::Neutral, false));
        w.step(Op::Call(Verdict::Failure)).unwrap();
        assert!(
            w.gate.must_send(Verdict::Success, false),
            "a failure on its way"
        );
        w.step(Op::Take).unwrap();
        assert!(
            w.gate.must_send(Verdict::Success, false),
            "a failure counted"
        );
        w.step(Op::Call(Verdict::Success)).unwrap();
        w.step(Op::Take).unwrap();
        assert!(
            !w.gate.must_send(Verdict::Success, false),
            "reset by the success"
        );
    }

    #[test]
    fn under_the_failure_rate_rule_every_success_is_sent() {
        let w = world(TripRule::FailureRate(RateWindow {
            size: 10,
            minimum_calls: 5,
            failure_rate_threshold: 0.5,
            slow_call: Duration::ZERO,
            slow_call_rate_threshold: 1.0,
        }));
        assert!(w.gate.must_send(Verdict::Success, false));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2000, failure_persistence: None, ..Default::default() })]

        #[test]
        fn a_success_is_left_out_only_where_the_actor_would_ignore_it(
            ops in proptest::collection::vec(op(), 1..300),
        ) {
            let mut w = world(TripRule::Consecutive { threshold: 3 });
            for op in ops {
                if let Err(e) = w.step(op) {
                    proptest::prop_assert!(false, "{}", e);
                }
            }
            // Drain: every failure sent is taken, and the count is back to none on its way.
            while !w.mailbox.is_empty() {
                w.step(Op::Take).unwrap();
            }
            proptest::prop_assert_eq!(w.gate.verdicts.load(Ordering::Acquire) >> 1, 0);
        }
    }
}
