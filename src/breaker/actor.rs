//! `BreakerActor` owns the [`CircuitBreaker`] and is its only writer: it decides HalfOpen probes,
//! takes every call's verdict (but the successes it would ignore, see [`BreakerGate::must_send`]),
//! publishes the [`BreakerGate`] and the breaker metrics. Handlers hold a [`BreakerHandle`]; a call
//! let through is a [`Pass`] that returns its ticket exactly once. In shadow mode
//! (`breaker.enforce = false`) a refused call is counted and let through on a shadow ticket.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use prometheus::IntCounter;

use super::gate::{BreakerGate, GateView};
use super::machine::{CircuitBreaker, Rejected, State, Ticket, Verdict};
use super::metrics::{self, BreakerMetrics};
use crate::actor_home::ActorHome;
use crate::metrics::Metrics;
use crate::settings::BreakerConfig;

/// Requests queue here only in HalfOpen and when Open's pause ends; verdicts use `do_send`,
/// which never waits for room, so a full mailbox cannot block a handler's cleanup.
const MAILBOX_CAPACITY: usize = 1024;

/// How often a throttling policy's gauges are refreshed when no call comes.
const THROTTLE_REFRESH: Duration = Duration::from_secs(1);

/// Asks to let one call through (sent only when the gate cannot decide).
#[derive(Message)]
#[rtype(result = "Result<Pass<'static>, Rejected>")]
pub(crate) struct Allow;

/// A call's outcome, with the ticket it was let through on.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Record {
    pub ticket: Ticket,
    pub verdict: Verdict,
    /// How long the call took (the failure-rate rule judges slow calls).
    pub elapsed: Duration,
    /// The wait the dependency asked for (`Retry-After` on a 429 or 503), if it did.
    pub asked_wait: Option<Duration>,
}

/// A call that ended without a verdict (its client went away): frees a probe slot.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Abandon {
    pub ticket: Ticket,
}

pub(crate) struct BreakerActor {
    machine: CircuitBreaker,
    gate: Arc<BreakerGate>,
    metrics: BreakerMetrics,
    /// The state a throttling policy last read as (the machine itself stays Closed).
    shown: State,
}

impl BreakerActor {
    fn new(config: BreakerConfig, gate: Arc<BreakerGate>, metrics: BreakerMetrics) -> Self {
        Self {
            machine: CircuitBreaker::new(config),
            gate,
            metrics,
            shown: State::Closed,
        }
    }

    /// The trip policy's window, as gauges (0 under the consecutive rule).
    fn publish_rates(&self) {
        self.metrics.rates(self.machine.rates());
    }

    /// Publishes the machine to the gate: state and generation, and whether a success would
    /// change nothing.
    fn publish(&self) {
        self.gate.publish(
            self.machine.generation(),
            self.machine.state(),
            self.machine.decides_each_call(),
        );
        self.gate
            .settle(self.machine.success_changes_nothing(), false);
    }

    /// Publishes a transition: gate, gauge, counter, log, and the timer that half-opens it.
    fn changed(&mut self, ctx: &mut Context<Self>) {
        let state = self.machine.state();
        self.publish();
        self.metrics.entered(state);
        log::warn!("circuit breaker is now {}", metrics::label(state));
        if let State::Open { probe_at } = state {
            let wait = probe_at.saturating_duration_since(Instant::now());
            ctx.run_later(wait, |act, ctx| {
                if act.machine.tick(Instant::now()) {
                    act.changed(ctx);
                }
            });
        }
    }
}

impl BreakerActor {
    /// Under a throttling policy: the probability gauge, and the state it reads as (a change of
    /// it counted and logged as a transition).
    fn show_throttling(&mut self) {
        let Some((p, state)) = self.machine.throttling(Instant::now(), self.shown) else {
            return;
        };
        self.metrics.rejection_probability(p);
        if metrics::label(state) != metrics::label(self.shown) {
            self.shown = state;
            self.metrics.entered(state);
            log::warn!(
                "circuit breaker (throttle) is now {}: refusing {:.0} % of calls",
                metrics::label(state),
                p * 100.0
            );
        }
    }
}

impl Actor for BreakerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        self.publish();
        self.metrics.show(self.machine.state());
        if self.machine.decides_each_call() {
            // The window ages with no traffic too: keep the gauges current.
            ctx.run_interval(THROTTLE_REFRESH, |act, _| act.show_throttling());
        }
    }
}

impl Handler<Allow> for BreakerActor {
    type Result = Result<Pass<'static>, Rejected>;

    fn handle(&mut self, _: Allow, ctx: &mut Self::Context) -> Self::Result {
        let generation = self.machine.generation();
        let decision = self.machine.allow(Instant::now());
        if self.machine.generation() != generation {
            self.changed(ctx);
        }
        self.show_throttling();
        // Built here, with its own handle: if the asker is gone, dropping the Pass returns the ticket.
        decision.map(|ticket| {
            let handle = BreakerHandle {
                addr: ctx.address(),
                gate: self.gate.clone(),
                // A pass only returns its ticket; it never decides, so never counts a refusal.
                shadow: None,
            };
            Pass::new(ticket, Cow::Owned(handle))
        })
    }
}

impl Handler<Record> for BreakerActor {
    type Result = ();

    fn handle(&mut self, msg: Record, ctx: &mut Self::Context) {
        if let Some(wait) = msg.asked_wait {
            self.machine.ask_open_for(wait);
        }
        let changed = self
            .machine
            .record(msg.ticket, msg.verdict, msg.elapsed, Instant::now());
        if changed {
            self.changed(ctx);
        }
        self.gate.settle(
            self.machine.success_changes_nothing(),
            msg.verdict == Verdict::Failure,
        );
        self.publish_rates();
        self.show_throttling();
    }
}

impl Handler<Abandon> for BreakerActor {
    type Result = ();

    fn handle(&mut self, msg: Abandon, _: &mut Self::Context) {
        self.machine.abandon(msg.ticket);
        self.show_throttling();
    }
}

/// A call let through by the breaker. [`Pass::finish`] reports its verdict; dropping it unfinished
/// (the client went away) frees its probe slot without a verdict. A pass let through by the gate
/// borrows the route's handle (no address cloned per call); one the actor let through owns one.
pub(crate) struct Pass<'h> {
    ticket: Option<Ticket>,
    handle: Cow<'h, BreakerHandle>,
}

impl<'h> Pass<'h> {
    fn new(ticket: Ticket, handle: Cow<'h, BreakerHandle>) -> Self {
        Self {
            ticket: Some(ticket),
            handle,
        }
    }

    /// Reports the call's verdict, how long it took and the dependency's `Retry-After`, if any.
    pub(crate) fn finish(
        mut self,
        verdict: Verdict,
        elapsed: Duration,
        asked_wait: Option<Duration>,
    ) {
        if let Some(ticket) = self.ticket.take() {
            if self.handle.gate.must_send(verdict, ticket.is_probe()) {
                self.handle.addr.do_send(Record {
                    ticket,
                    verdict,
                    elapsed,
                    asked_wait,
                });
            }
        }
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            if ticket.must_return() {
                self.handle.addr.do_send(Abandon { ticket });
            }
        }
    }
}

/// What a route holds: the actor's address and its published gate.
#[derive(Clone)]
pub(crate) struct BreakerHandle {
    addr: Addr<BreakerActor>,
    gate: Arc<BreakerGate>,
    /// Shadow mode: `circuit_breaker_shadow_rejections_total`; `None` when enforcing.
    shadow: Option<IntCounter>,
}

impl BreakerHandle {
    /// Registers the breaker's metrics and creates the one `BreakerActor`, which starts in `home`.
    pub(crate) fn start(
        config: BreakerConfig,
        metrics: &Metrics,
        home: &ActorHome,
    ) -> Result<Self, prometheus::Error> {
        let gate = Arc::new(BreakerGate::new());
        let throttling = matches!(config.trip, crate::settings::TripRule::Throttle(_));
        let shadow = if config.enforce {
            None
        } else {
            Some(metrics.register(IntCounter::new(
                "circuit_breaker_shadow_rejections_total",
                "Shadow mode (breaker.enforce = false): calls the breaker would have refused; they went on",
            )?)?)
        };
        let metrics = BreakerMetrics::register(metrics, throttling)?;
        let addr = home.start(BreakerActor::new(config, gate.clone(), metrics));
        Ok(Self { addr, gate, shadow })
    }

    /// If the published gate says Open, the time until the next probe: a call now would be
    /// refused (never in shadow mode, where it would go on).
    pub(crate) fn refusing(&self) -> Option<Duration> {
        match self.gate.view(Instant::now()) {
            GateView::Open { retry_after } if self.shadow.is_none() => Some(retry_after),
            _ => None,
        }
    }

    /// A refusal: answered, or in shadow mode counted and turned into a pass on a shadow ticket.
    fn refused(&self, rejected: Rejected) -> Result<Pass<'_>, Rejected> {
        match &self.shadow {
            None => Err(rejected),
            Some(counter) => {
                counter.inc();
                Ok(Pass::new(Ticket::shadow(), Cow::Borrowed(self)))
            }
        }
    }

    /// Lets a call through or refuses it by asking the actor whatever the gate says. The actor
    /// takes messages in order, so verdicts this task sent before (with `do_send`) are counted
    /// first: a retry right after a failure sees the breaker that failure may have opened.
    pub(crate) async fn allow_after_verdicts(&self) -> Result<Pass<'_>, Rejected> {
        match self.addr.send(Allow).await {
            Ok(Ok(pass)) => Ok(pass),
            Ok(Err(rejected)) => self.refused(rejected),
            // The actor is gone (shutting down): refuse rather than call unguarded.
            Err(_) => Err(Rejected::open(Duration::from_secs(1))),
        }
    }

    /// Lets a call through or refuses it. Closed and Open are decided from the gate; HalfOpen asks
    /// the actor.
    pub(crate) async fn allow(&self) -> Result<Pass<'_>, Rejected> {
        match self.gate.view(Instant::now()) {
            GateView::Closed { generation } => {
                Ok(Pass::new(Ticket::closed(generation), Cow::Borrowed(self)))
            }
            GateView::Open { retry_after } => self.refused(Rejected::open(retry_after)),
            GateView::AskActor => self.allow_after_verdicts().await,
        }
    }
}
