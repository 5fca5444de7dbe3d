//! `BreakerActor` owns the [`CircuitBreaker`] and is its only writer: it decides HalfOpen probes,
//! takes every call's verdict (but the successes it would ignore, see [`BreakerGate::must_send`]),
//! publishes the [`BreakerGate`] and the breaker metrics. Handlers hold a [`BreakerHandle`]; a call
//! let through is a [`Pass`] that returns its ticket exactly once. In shadow mode
//! (`breaker.enforce = false`) a refused call is counted and let through on a shadow ticket.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use prometheus::{IntCounter, IntGaugeVec};
use serde::Serialize;

use super::gate::{BreakerGate, GateView};
use super::machine::{CircuitBreaker, Rejected, State, Ticket, Verdict};
use super::metrics::{self, BreakerMetrics};
use crate::actor_home::ActorHome;
use crate::metrics::Metrics;
use crate::settings::BreakerConfig;
use crate::shadow::Switch;

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

/// What an operator holds the breaker in (`POST /admin/breaker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forced {
    /// Every call refused (503 with `Retry-After`) until released.
    Open,
    /// Every call let through; the breaker still runs, on the calls it would let through.
    Closed,
}

impl Forced {
    /// The `kind` label of `admin_override`, and the word the state and the log use.
    pub(crate) fn kind(self) -> &'static str {
        match self {
            Forced::Open => "force_open",
            Forced::Closed => "force_closed",
        }
    }
}

/// Holds the breaker in `forced` (for `hold_for`, or until released), or releases it (`None`).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SetOverride {
    pub forced: Option<Forced>,
    pub hold_for: Option<Duration>,
    /// Who asked (the caller's address), for the log and the state.
    pub by: String,
}

/// Asks for the breaker as `GET /admin/state` shows it.
#[derive(Message)]
#[rtype(result = "BreakerView")]
pub(crate) struct Snapshot;

/// The breaker, as `GET /admin/state` shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BreakerView {
    /// What the breaker itself reads as (under an override too): closed, open, half_open.
    pub state: &'static str,
    /// Why it last changed, and how long ago.
    pub reason: String,
    pub changed_seconds_ago: f64,
    /// The trip policy's failure and slow-call shares; the throttle's probability.
    pub failure_rate: f64,
    pub slow_call_rate: f64,
    pub rejection_probability: Option<f64>,
    /// Failures in a row now (the consecutive-failures policy only).
    pub consecutive_failures: Option<u32>,
    /// The operator's override, if one is held.
    #[serde(rename = "override")]
    pub held: Option<OverrideView>,
}

/// An override as the state shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct OverrideView {
    pub kind: &'static str,
    pub by: String,
    pub held_seconds: f64,
    /// Seconds until it lifts by itself (`None`: held until released).
    pub expires_in_seconds: Option<f64>,
}

/// An override in force.
struct Held {
    forced: Forced,
    by: String,
    since: Instant,
    until: Option<Instant>,
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
    /// `breaker.open_seconds`: the `Retry-After` of a call refused by a held force-open.
    open_for: Duration,
    /// The operator's override, if held; bumped on every change so a stale expiry does nothing.
    held: Option<Held>,
    overrides: u64,
    /// `admin_override{component,kind}`.
    override_gauge: IntGaugeVec,
    /// Shadow mode's switch, for the handles the actor makes.
    shadow: Arc<Switch<IntCounter>>,
    /// When the state last changed, and why (for `GET /admin/state`).
    last_change: (Instant, String),
}

impl BreakerActor {
    fn new(
        config: BreakerConfig,
        gate: Arc<BreakerGate>,
        metrics: BreakerMetrics,
        override_gauge: IntGaugeVec,
        shadow: Arc<Switch<IntCounter>>,
    ) -> Self {
        Self {
            machine: CircuitBreaker::new(config),
            gate,
            metrics,
            shown: State::Closed,
            open_for: config.open_for,
            held: None,
            overrides: 0,
            override_gauge,
            shadow,
            last_change: (Instant::now(), "started closed".to_string()),
        }
    }

    /// Lifts the override held (`why` for the log), if any.
    fn lift(&mut self, why: &str) {
        if let Some(held) = self.held.take() {
            let _ = self
                .override_gauge
                .remove_label_values(&["breaker", held.forced.kind()]);
            log::warn!(
                "admin: breaker {} lifted ({why}); the breaker decides again",
                held.forced.kind()
            );
            self.last_change = (
                Instant::now(),
                format!("{} lifted ({why})", held.forced.kind()),
            );
        }
        self.publish();
    }

    /// The trip policy's window, as gauges (0 under the consecutive rule).
    fn publish_rates(&self) {
        self.metrics.rates(self.machine.rates());
    }

    /// Publishes the machine to the gate: state and generation, and whether a success would
    /// change nothing.
    fn publish(&self) {
        // Under an override every call asks the actor, which answers as the override says.
        self.gate.publish(
            self.machine.generation(),
            self.machine.state(),
            self.machine.decides_each_call() || self.held.is_some(),
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
        let reason = match state {
            State::Open { .. } => "opened: the trip policy fired, or a probe failed",
            State::HalfOpen => "half-open: the open pause is over",
            State::Closed => "closed: the probes succeeded",
        };
        self.last_change = (Instant::now(), reason.to_string());
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
            self.last_change = (
                Instant::now(),
                format!("throttle refusing {:.0} % of calls", p * 100.0),
            );
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
        let now = Instant::now();
        if let Some(Held {
            forced: Forced::Open,
            until,
            ..
        }) = &self.held
        {
            let wait = until.map_or(self.open_for, |u| u.saturating_duration_since(now));
            return Err(Rejected::open(wait.min(self.open_for)));
        }
        let forced_closed = self.held.is_some();
        let generation = self.machine.generation();
        let decision = self.machine.allow(now);
        // Held closed: a call the breaker refuses goes on with a ticket it ignores, so it keeps
        // running on the calls it would let through (and shows the state it would be in).
        let decision = match decision {
            Err(_) if forced_closed => Ok(Ticket::shadow()),
            decided => decided,
        };
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
                shadow: self.shadow.clone(),
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

impl Handler<SetOverride> for BreakerActor {
    type Result = ();

    fn handle(&mut self, msg: SetOverride, ctx: &mut Self::Context) {
        self.overrides += 1;
        let Some(forced) = msg.forced else {
            self.lift(&format!("released by {}", msg.by));
            return;
        };
        if let Some(old) = self.held.take() {
            let _ = self
                .override_gauge
                .remove_label_values(&["breaker", old.forced.kind()]);
        }
        let now = Instant::now();
        log::warn!(
            "admin: breaker {} {} by {}",
            forced.kind(),
            msg.hold_for
                .map_or("until released".to_string(), |d| format!("for {d:?}")),
            msg.by
        );
        self.override_gauge
            .with_label_values(&["breaker", forced.kind()])
            .set(1);
        self.last_change = (now, format!("{} by {}", forced.kind(), msg.by));
        self.held = Some(Held {
            forced,
            by: msg.by,
            since: now,
            until: msg.hold_for.map(|d| now + d),
        });
        if let Some(hold_for) = msg.hold_for {
            let this = self.overrides;
            ctx.run_later(hold_for, move |act, _| {
                if act.overrides == this {
                    act.lift("expired");
                }
            });
        }
        self.publish();
    }
}

impl Handler<Snapshot> for BreakerActor {
    type Result = MessageResult<Snapshot>;

    fn handle(&mut self, _: Snapshot, _: &mut Self::Context) -> Self::Result {
        let now = Instant::now();
        let throttling = self.machine.throttling(now, self.shown);
        let state = match throttling {
            Some((_, shown)) => shown,
            None => self.machine.state(),
        };
        let (failure_rate, slow_call_rate) = self.machine.rates();
        MessageResult(BreakerView {
            state: metrics::label(state),
            reason: self.last_change.1.clone(),
            changed_seconds_ago: now.duration_since(self.last_change.0).as_secs_f64(),
            failure_rate,
            slow_call_rate,
            rejection_probability: throttling.map(|(p, _)| p),
            consecutive_failures: self.machine.consecutive_failures(),
            held: self.held.as_ref().map(|h| OverrideView {
                kind: h.forced.kind(),
                by: h.by.clone(),
                held_seconds: now.duration_since(h.since).as_secs_f64(),
                expires_in_seconds: h
                    .until
                    .map(|u| u.saturating_duration_since(now).as_secs_f64()),
            }),
        })
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
    /// Shadow mode (`breaker.enforce = false`, or `POST /admin/shadow`) and its counter,
    /// `circuit_breaker_shadow_rejections_total`.
    shadow: Arc<Switch<IntCounter>>,
}

impl BreakerHandle {
    /// Registers the breaker's metrics and creates the one `BreakerActor`, which starts in `home`.
    /// `override_gauge`: `admin_override{component,kind}`, set while an override is held.
    pub(crate) fn start(
        config: BreakerConfig,
        metrics: &Metrics,
        home: &ActorHome,
        override_gauge: IntGaugeVec,
    ) -> Result<Self, prometheus::Error> {
        let gate = Arc::new(BreakerGate::new());
        let throttling = matches!(config.trip, crate::settings::TripRule::Throttle(_));
        let registry = metrics.clone();
        let shadow = Switch::new(
            !config.enforce,
            Box::new(move || {
                registry.register(IntCounter::new(
                    "circuit_breaker_shadow_rejections_total",
                    "Shadow mode (breaker.enforce = false): calls the breaker would have refused; they went on",
                )?)
            }),
        )?;
        let metrics = BreakerMetrics::register(metrics, throttling)?;
        let addr = home.start(BreakerActor::new(
            config,
            gate.clone(),
            metrics,
            override_gauge,
            shadow.clone(),
        ));
        Ok(Self { addr, gate, shadow })
    }

    /// Holds or releases an operator's override; resolves once the actor has applied it (or
    /// with an error when the actor is gone).
    pub(crate) async fn set_override(&self, request: SetOverride) -> Result<(), MailboxError> {
        self.addr.send(request).await
    }

    /// The breaker as `GET /admin/state` shows it.
    pub(crate) async fn snapshot(&self) -> Result<BreakerView, MailboxError> {
        self.addr.send(Snapshot).await
    }

    /// Whether calls it would refuse go on (shadow mode, `breaker.enforce = false`).
    pub(crate) fn shadowing(&self) -> bool {
        self.shadow.is_on()
    }

    /// Shadow mode's switch (`POST /admin/shadow`).
    pub(crate) fn shadow_switch(&self) -> Arc<Switch<IntCounter>> {
        self.shadow.clone()
    }

    /// If the published gate says Open, the time until the next probe: a call now would be
    /// refused (never in shadow mode, where it would go on).
    pub(crate) fn refusing(&self) -> Option<Duration> {
        match self.gate.view(Instant::now()) {
            GateView::Open { retry_after } if !self.shadow.is_on() => Some(retry_after),
            _ => None,
        }
    }

    /// A refusal: answered, or in shadow mode counted and turned into a pass on a shadow ticket.
    fn refused(&self, rejected: Rejected) -> Result<Pass<'_>, Rejected> {
        if !self.shadow.is_on() {
            return Err(rejected);
        }
        if let Some(counter) = self.shadow.series() {
            counter.inc();
        }
        Ok(Pass::new(Ticket::shadow(), Cow::Borrowed(self)))
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
