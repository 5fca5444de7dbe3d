//! `AdmissionActor` owns the [`Admission`] count, the [`Limit`] in force and the backlog, and
//! makes every admission decision that is not a plain "full" (those [`super::AdmissionHandle`]
//! makes from the published count). Each decision it makes is counted in [`AdmissionActor::decide`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use super::adaptive::CallSample;
use super::backlog::Backlog;
use super::limit::Limit;
use super::machine::{Admission, PermitToken, Priority, Shed};
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
}

impl AdmissionActor {
    pub(crate) fn new(
        limit: Box<dyn Limit>,
        slots: Arc<Slots>,
        backlog: Backlog<Waiting>,
        metrics: AdmissionMetrics,
    ) -> Self {
        Self {
            machine: Admission::new(limit.current()),
            limit,
            slots,
            backlog,
            metrics,
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
        if changed {
            self.machine.set_limits(self.limit.current());
            self.publish_limits();
            self.serve_backlog();
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
