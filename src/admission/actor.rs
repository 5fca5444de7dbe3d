//! `AdmissionActor` owns the [`Admission`] count, the [`Limit`] in force and the backlog, and
//! makes every admission decision that is not a plain "full" (those [`super::AdmissionHandle`]
//! makes from the published count). Each decision it makes is counted in [`AdmissionActor::decide`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use prometheus::IntGaugeVec;
use serde::Serialize;
use tokio::sync::oneshot;

use super::adaptive::CallSample;
use super::backlog::Backlog;
use super::limit::Limit;
use super::machine::{Admission, Fractions, Limits, PermitToken, Priority, Shed};
use super::metrics::{AdmissionMetrics, Decision};
use super::permit::{Permit, Slots};

/// `send(Acquire)` waits for room rather than failing when full; `Release` uses `do_send`, which
/// never waits, so giving a slot back can neither block nor be lost.
const MAILBOX_CAPACITY: usize = 1024;

/// Asks for a slot of one class, for a request to `path` (the decision is counted by path).
#[derive(Message)]
#[rtype(result = "Result<Permit, NotNow>")]
pub(crate) struct Acquire {
    pub priority: Priority,
    pub path: &'static str,
}

/// Why an [`Acquire`] got no permit at once.
pub(crate) enum NotNow {
    Shed,
    /// Waiting in the backlog: the answer comes on this channel (a permit, or shed when the
    /// queue timeout passes or a newer request takes the place).
    Queued(oneshot::Receiver<Result<Permit, Shed>>),
}

/// One finished upstream call, for a limit that learns.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Sample {
    pub started: Instant,
    pub latency: Duration,
    pub timed_out: bool,
}

/// Pins the limit in force to `limit` (for `hold_for`, or until released), or hands it back to
/// the configured limit (`None`): `POST /admin/admission/limit`.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SetPin {
    pub limit: Option<u32>,
    pub hold_for: Option<Duration>,
    /// Who asked (the caller's address), for the log and the state.
    pub by: String,
}

/// A pinned limit, as `GET /admin/state` shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PinView {
    pub limit: u32,
    pub by: String,
    /// When it was set, and when it lifts (`None`: held until released).
    #[serde(skip)]
    pub since: Instant,
    #[serde(skip)]
    pub until: Option<Instant>,
}

/// What the actor publishes of its pin, for the admin state (written only by the actor).
pub(crate) type PublishedPin = Arc<Mutex<Option<PinView>>>;

/// What a pin needs from the configuration: the classes' shares of the limit, and the gauge.
pub(crate) struct Pinning {
    pub fractions: Fractions,
    pub gauge: IntGaugeVec,
    pub published: PublishedPin,
}

/// Gives one slot back.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Release {
    pub token: PermitToken,
}

/// A request in the backlog: where to send its answer, and its path (for counting).
type Waiting = (oneshot::Sender<Result<Permit, Shed>>, &'static str);

pub(crate) struct AdmissionActor {
    /// The pure limiter: the in-flight count against the ceilings in force.
    machine: Admission,
    /// Where the ceilings come from (fixed, or learned from latency).
    limit: Box<dyn Limit>,
    /// Where permits give their slots back; the count and ceilings handlers read.
    slots: Arc<Slots>,
    /// Requests waiting for a slot (`admission.queue_size`; empty and unused when 0).
    backlog: Backlog<Waiting>,
    metrics: AdmissionMetrics,
    /// An operator's pinned limit (`POST /admin/admission/limit`): while held, the configured
    /// limit keeps learning but is not in force.
    pinned: Option<Limits>,
    /// Bumped on every pin change, so a stale expiry does nothing.
    pins: u64,
    pinning: Pinning,
}

impl AdmissionActor {
    pub(crate) fn new(
        limit: Box<dyn Limit>,
        slots: Arc<Slots>,
        backlog: Backlog<Waiting>,
        metrics: AdmissionMetrics,
        pinning: Pinning,
    ) -> Self {
        Self {
            machine: Admission::new(limit.current()),
            limit,
            slots,
            backlog,
            metrics,
            pinned: None,
            pins: 0,
            pinning,
        }
    }

    /// The limits in force become `limits`: published, and the backlog served under them.
    fn enforce_limits(&mut self, limits: Limits) {
        self.machine.set_limits(limits);
        self.publish_limits();
        self.serve_backlog();
    }

    /// Hands the limit back to the configured one (`why` for the log), if pinned.
    fn unpin(&mut self, why: &str) {
        if self.pinned.take().is_some() {
            let _ = self
                .pinning
                .gauge
                .remove_label_values(&["admission", "limit"]);
            *self
                .pinning
                .published
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
            log::warn!("admin: admission limit back to the configured one ({why})");
            let limits = self.limit.current();
            self.enforce_limits(limits);
        }
    }

    /// Counts a decision made here and turns it into its answer. A permit granted to an asker
    /// that has just gone is still an admission: dropping it releases the slot (and counts that).
    fn decide(
        &self,
        path: &'static str,
        priority: Priority,
        token: Result<PermitToken, Shed>,
    ) -> Result<Permit, Shed> {
        match token {
            Ok(token) => {
                self.metrics.decided(path, priority, Decision::Admitted);
                Ok(self.slots.permit(token))
            }
            Err(Shed) => {
                self.metrics.decided(path, priority, Decision::Shed);
                Err(Shed)
            }
        }
    }

    fn publish_limits(&self) {
        let limits = self.machine.limits();
        self.slots.publish(limits);
        self.metrics.limits(limits);
    }

    fn publish(&self) {
        self.metrics
            .counts(self.machine.inflight(), self.backlog.len());
    }

    /// Sheds the waiters whose queue timeout has passed, gives free slots to the newest waiters
    /// that fit, then publishes the counts.
    fn serve_backlog(&mut self) {
        if self.backlog.is_empty() {
            self.publish();
            return;
        }
        for (priority, (tx, path)) in self.backlog.expire(Instant::now()) {
            let _ = tx.send(self.decide(path, priority, Err(Shed)));
        }
        loop {
            let (limits, inflight) = (self.machine.limits(), self.machine.inflight());
            let Some((priority, (tx, path))) =
                self.backlog.pop_newest(|p| inflight < limits.ceiling(p))
            else {
                break;
            };
            // A waiter whose client went away while it waited is shed, not served.
            let token = if tx.is_closed() {
                Err(Shed)
            } else {
                self.machine.try_acquire(priority)
            };
            let _ = tx.send(self.decide(path, priority, token));
        }
        self.publish();
    }
}

impl Actor for AdmissionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        self.publish_limits();
        self.publish();
    }
}

impl Handler<Acquire> for AdmissionActor {
    type Result = Result<Permit, NotNow>;

    fn handle(&mut self, msg: Acquire, ctx: &mut Self::Context) -> Self::Result {
        let token = self.machine.try_acquire(msg.priority);
        if token.is_ok() || !self.backlog.enabled() {
            let answer = self.decide(msg.path, msg.priority, token);
            self.publish();
            return answer.map_err(|Shed| NotNow::Shed);
        }
        let (tx, rx) = oneshot::channel();
        if let Some((priority, (old, path))) =
            self.backlog
                .push(Instant::now(), msg.priority, (tx, msg.path))
        {
            // The backlog was full: its oldest waiter makes room.
            let _ = old.send(self.decide(path, priority, Err(Shed)));
        }
        ctx.run_later(self.backlog.timeout(), |act, _| act.serve_backlog());
        self.publish();
        Err(NotNow::Queued(rx))
    }
}

impl Handler<Sample> for AdmissionActor {
    type Result = ();

    fn handle(&mut self, msg: Sample, _: &mut Self::Context) {
        let changed = self.limit.on_sample(
            Instant::now(),
            CallSample {
                started: msg.started,
                latency: msg.latency,
                timed_out: msg.timed_out,
                inflight: self.machine.inflight(),
            },
        );
        if let Some((short, long)) = self.limit.latencies() {
            self.metrics
                .latencies(short.as_secs_f64(), long.as_secs_f64());
        }
        if changed && self.pinned.is_none() {
            self.enforce_limits(self.limit.current());
        }
    }
}

impl Handler<SetPin> for AdmissionActor {
    type Result = ();

    fn handle(&mut self, msg: SetPin, ctx: &mut Self::Context) {
        self.pins += 1;
        let Some(limit) = msg.limit else {
            self.unpin(&format!("released by {}", msg.by));
            return;
        };
        let now = Instant::now();
        let limits = Limits::from_limit(limit, self.pinning.fractions);
        log::warn!(
            "admin: admission limit pinned to {limit} (normal {}, low {}) {} by {}",
            limits.normal,
            limits.low,
            msg.hold_for
                .map_or("until released".to_string(), |d| format!("for {d:?}")),
            msg.by
        );
        self.pinning
            .gauge
            .with_label_values(&["admission", "limit"])
            .set(1);
        *self
            .pinning
            .published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(PinView {
            limit,
            by: msg.by,
            since: now,
            until: msg.hold_for.map(|d| now + d),
        });
        self.pinned = Some(limits);
        self.enforce_limits(limits);
        if let Some(hold_for) = msg.hold_for {
            let this = self.pins;
            ctx.run_later(hold_for, move |act, _| {
                if act.pins == this {
                    act.unpin("expired");
                }
            });
        }
    }
}

impl Handler<Release> for AdmissionActor {
    type Result = ();

    fn handle(&mut self, msg: Release, _: &mut Self::Context) {
        self.metrics.released(msg.token.priority());
        self.machine.release(msg.token);
        self.serve_backlog();
    }
}
