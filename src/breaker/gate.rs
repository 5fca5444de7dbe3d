//! The breaker's published snapshot. The actor writes it on every transition; handlers read it to
//! let calls through while Closed and to refuse them while Open without a mailbox round trip.
//! Only HalfOpen (and Open past its pause) needs the actor's decision.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::machine::State;

const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;

#[derive(Debug)]
pub(crate) struct BreakerGate {
    /// `generation << 2 | state code`: one word, so a reader never pairs a state with another
    /// transition's generation.
    word: AtomicU64,
    /// End of the Open pause, in milliseconds since `epoch`.
    probe_at_ms: AtomicU64,
    epoch: Instant,
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

impl Default for BreakerGate {
    fn default() -> Self {
        Self::new()
    }
}

impl BreakerGate {
    pub(crate) fn new() -> Self {
        Self {
            word: AtomicU64::new(CLOSED),
            probe_at_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    pub(crate) fn publish(&self, generation: u64, state: State) {
        let code = match state {
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
            _ => GateView::AskActor,
        }
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
        gate.publish(1, State::Open { probe_at });
        match gate.view(now) {
            GateView::Open { retry_after } => {
                assert!(retry_after <= Duration::from_secs(3));
                assert!(retry_after >= Duration::from_millis(2990));
            }
            other => panic!("expected Open, got {other:?}"),
        }
        // Past the pause the actor must decide (it will half-open).
        assert_eq!(gate.view(probe_at), GateView::AskActor);

        gate.publish(2, State::HalfOpen);
        assert_eq!(gate.view(now), GateView::AskActor);
        gate.publish(3, State::Closed);
        assert_eq!(gate.view(now), GateView::Closed { generation: 3 });
    }
}
