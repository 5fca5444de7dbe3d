//! `AdmissionActor` owns the [`Admission`] count and decides every admission. Beside it, an atomic
//! in-flight count lets handlers shed at once, without a message, when their class is already full;
//! requests that may fit ask the actor, which decides exactly.
//!
//! The atomic goes up when the actor admits and down the moment a [`Permit`] is dropped, before its
//! `Release` message is even sent, so a client whose previous request just ended is never shed by
//! its own stale slot. The actor's exact count catches up in order: the mailbox is one FIFO queue,
//! and a `Release` sent before a response is queued before any `Acquire` that response causes.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use tokio::sync::oneshot;

use super::adaptive::{CallSample, GradientLimiter};
use super::backlog::Backlog;
use super::machine::{Admission, Fractions, Limits, PermitToken, Priority, Shed};
use super::metrics::{AdmissionMetrics, Decision};
use super::{AdmissionConfig, AdmissionMode};
use crate::actor_home::ActorHome;
use crate::metrics::Metrics;

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

/// A request in the backlog: where to send its answer, and its path (for counting).
type Waiting = (oneshot::Sender<Result<Permit, Shed>>, &'static str);

/// One finished upstream call, for the adaptive limiter.
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

pub(crate) struct AdmissionActor {
    machine: Admission,
    /// The ceilings as handlers read them (high, normal, low), published on every change.
    ceilings: Arc<[AtomicU32; 3]>,
    /// Adaptive mode: the limiter and the lower classes' shares of its limit.
    adaptive: Option<(GradientLimiter, Fractions)>,
    /// Where permits give their slots back; its in-flight count is read by handlers for the fast shed.
    slots: Arc<Slots>,
    /// Requests waiting for a slot (`admission.queue_size`; empty and unused when 0).
    backlog: Backlog<Waiting>,
    metrics: AdmissionMetrics,
}

impl AdmissionActor {
    fn publish_limits(&self) {
        let limits = self.machine.limits();
        for (i, p) in Priority::ALL.into_iter().enumerate() {
            self.ceilings[i].store(limits.ceiling(p), Ordering::Release);
        }
        self.metrics.limits(limits);
    }

    fn publish(&self) {
        self.metrics
            .counts(self.machine.inflight(), self.backlog.len());
    }

    /// A permit for `token`, built here with the way back to this actor: if its asker is gone,
    /// dropping it releases the slot.
    fn permit(&self, token: PermitToken) -> Permit {
        self.slots.inflight.fetch_add(1, Ordering::AcqRel);
        Permit {
            token: Some(token),
            slots: self.slots.clone(),
        }
    }

    /// Sheds the waiters whose queue timeout has passed, gives free slots to the newest waiters
    /// that fit, then publishes the counts.
    fn serve_backlog(&mut self) {
        if self.backlog.is_empty() {
            self.publish();
            return;
        }
        for (priority, (tx, path)) in self.backlog.expire(Instant::now()) {
            self.metrics.decided(path, priority, Decision::Shed);
            let _ = tx.send(Err(Shed));
        }
        loop {
            let (limits, inflight) = (self.machine.limits(), self.machine.inflight());
            let Some((priority, (tx, path))) =
                self.backlog.pop_newest(|p| inflight < limits.ceiling(p))
            else {
                break;
            };
            if tx.is_closed() {
                // Its client went away while it waited.
                self.metrics.decided(path, priority, Decision::Shed);
                continue;
            }
            let Ok(token) = self.machine.try_acquire(priority) else {
                self.metrics.decided(path, priority, Decision::Shed);
                let _ = tx.send(Err(Shed));
                continue;
            };
            // As for a direct answer: granted is admitted; if the asker has just gone, the
            // returned permit is dropped here, which releases the slot (and counts it).
            self.metrics.decided(path, priority, Decision::Admitted);
            let _ = tx.send(Ok(self.permit(token)));
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
        // Counted here, where the decision is made: a permit granted to an asker that has just
        // gone is still an admission (and its release is counted when the Permit drops).
        if let Ok(token) = self.machine.try_acquire(msg.priority) {
            self.metrics
                .decided(msg.path, msg.priority, Decision::Admitted);
            let permit = self.permit(token);
            self.publish();
            return Ok(permit);
        }
        if !self.backlog.enabled() {
            self.metrics.decided(msg.path, msg.priority, Decision::Shed);
            return Err(NotNow::Shed);
        }
        let (tx, rx) = oneshot::channel();
        if let Some((priority, (old, path))) =
            self.backlog
                .push(Instant::now(), msg.priority, (tx, msg.path))
        {
            // The backlog was full: its oldest waiter makes room.
            self.metrics.decided(path, priority, Decision::Shed);
            let _ = old.send(Err(Shed));
        }
        ctx.run_later(self.backlog.timeout(), |act, _| act.serve_backlog());
        self.publish();
        Err(NotNow::Queued(rx))
    }
}

impl Handler<Sample> for AdmissionActor {
    type Result = ();

    fn handle(&mut self, msg: Sample, _: &mut Self::Context) {
        let Some((limiter, fractions)) = &mut self.adaptive else {
            return;
        };
        let before = limiter.limit();
        let limit = limiter.on_sample(
            Instant::now(),
            CallSample {
                started: msg.started,
                latency: msg.latency,
                timed_out: msg.timed_out,
                inflight: self.machine.inflight(),
            },
        );
        let (short, long) = limiter.latencies();
        let fractions = *fractions;
        self.metrics
            .latencies(short.as_secs_f64(), long.as_secs_f64());
        if limit != before {
            log::debug!(
                "adaptive limit {before} -> {limit} (recent {:.1} ms, baseline {:.1} ms{})",
                short.as_secs_f64() * 1000.0,
                long.as_secs_f64() * 1000.0,
                if limiter.measuring() {
                    ", measuring"
                } else {
                    ""
                }
            );
            self.machine
                .set_limits(Limits::from_limit(limit, fractions));
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

/// Where a permit's slot goes back: the actor's address and the in-flight count handlers read.
/// One per actor, shared by the handle and every permit: a permit costs one reference count, not
/// an address of its own (an actix address clone allocates twice and counts its senders).
struct Slots {
    addr: Addr<AdmissionActor>,
    /// Admitted permits not yet dropped, decremented at once on drop.
    inflight: AtomicU32,
}

/// An admitted request's slot, given back when dropped: on success, error, timeout, or when the
/// client goes away and actix drops the handler.
pub(crate) struct Permit {
    token: Option<PermitToken>,
    slots: Arc<Slots>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            self.slots.inflight.fetch_sub(1, Ordering::AcqRel);
            self.slots.addr.do_send(Release { token });
        }
    }
}

/// What a route holds: the actor's address and published in-flight count, and the ceilings.
#[derive(Clone)]
pub(crate) struct AdmissionHandle {
    slots: Arc<Slots>,
    /// The ceilings in force (high, normal, low), as the actor last published them.
    ceilings: Arc<[AtomicU32; 3]>,
    /// Whether latency samples feed an adaptive limiter.
    adaptive: bool,
    /// Whether a full class waits in a backlog (then every request asks the actor).
    queued: bool,
    metrics: AdmissionMetrics,
}

impl AdmissionHandle {
    /// Registers admission's metrics (with series for each of `paths`) and creates the one
    /// `AdmissionActor`, which starts in `home`. In adaptive mode the limiter measures its baseline
    /// at `min_limit` and grows from there (starting high would send a dependency of unknown
    /// capacity a burst it may not survive); the lower classes get their fractions of the live
    /// limit.
    pub(crate) fn start(
        config: &AdmissionConfig,
        metrics: &Metrics,
        paths: &[&'static str],
        home: &ActorHome,
    ) -> Result<Self, prometheus::Error> {
        let metrics = AdmissionMetrics::register(metrics, paths)?;
        let (limits, adaptive) = match config.mode {
            AdmissionMode::Static(limits) => (limits, None),
            AdmissionMode::Adaptive { limiter, fractions } => {
                let limiter = GradientLimiter::new(limiter, limiter.min_limit, Instant::now());
                let limits = Limits::from_limit(limiter.limit(), fractions);
                (limits, Some((limiter, fractions)))
            }
        };
        let is_adaptive = adaptive.is_some();
        let ceilings = Arc::new(Priority::ALL.map(|p| AtomicU32::new(limits.ceiling(p))));
        let slots = home.start_with(|addr| {
            let slots = Arc::new(Slots {
                addr,
                inflight: AtomicU32::new(0),
            });
            let actor = AdmissionActor {
                machine: Admission::new(limits),
                ceilings: ceilings.clone(),
                adaptive,
                slots: slots.clone(),
                backlog: Backlog::new(config.backlog.size, config.backlog.timeout),
                metrics: metrics.clone(),
            };
            (actor, slots)
        });
        Ok(Self {
            slots,
            ceilings,
            adaptive: is_adaptive,
            queued: config.backlog.size > 0,
            metrics,
        })
    }

    /// Reports a finished upstream call to the adaptive limiter (no-op when static): sent at
    /// `started`, it took `latency`, or timed out after it.
    pub(crate) fn sample(&self, started: Instant, latency: Duration, timed_out: bool) {
        if self.adaptive {
            self.slots.addr.do_send(Sample {
                started,
                latency,
                timed_out,
            });
        }
    }

    fn has_room(&self, priority: Priority) -> bool {
        self.slots.inflight.load(Ordering::Acquire)
            < self.ceilings[priority.index()].load(Ordering::Acquire)
    }

    /// Decides admission by the current in-flight count without taking a slot, for a request that
    /// will not run (see `api::client`); counts the decision. An admission here is a permit held
    /// for no time, so it is counted as released at once: admitted = released + in flight holds.
    pub(crate) fn admit_without_slot(
        &self,
        path: &'static str,
        priority: Priority,
    ) -> Result<(), Shed> {
        let admitted = self.has_room(priority);
        self.metrics.decided(
            path,
            priority,
            if admitted {
                Decision::Admitted
            } else {
                Decision::Shed
            },
        );
        if !admitted {
            return Err(Shed);
        }
        self.metrics.released(priority);
        Ok(())
    }

    /// Admits or sheds one request to `path`. Without a backlog, a class already full by the
    /// in-flight count is shed at once; otherwise the actor decides, and with a backlog a request
    /// may wait up to the queue timeout. Every decision is counted once, where it is made.
    pub(crate) async fn acquire(
        &self,
        path: &'static str,
        priority: Priority,
    ) -> Result<Permit, Shed> {
        if !self.queued && !self.has_room(priority) {
            self.metrics.decided(path, priority, Decision::Shed);
            return Err(Shed);
        }
        match self.slots.addr.send(Acquire { priority, path }).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(NotNow::Shed)) => Err(Shed),
            // Answered (and counted) by the actor, unless it stopped with the request queued.
            Ok(Err(NotNow::Queued(rx))) => rx.await.unwrap_or_else(|_| {
                self.metrics.decided(path, priority, Decision::Shed);
                Err(Shed)
            }),
            // The actor is gone (shutting down): shed rather than run unaccounted.
            Err(_) => {
                self.metrics.decided(path, priority, Decision::Shed);
                Err(Shed)
            }
        }
    }
}
