//! `AdmissionActor` owns the [`Admission`] count, the [`Limit`] in force and the backlog, and
//! makes every admission decision that is not a plain "full" (those [`super::AdmissionHandle`]
//! makes from the published count). Each decision it makes is counted in [`AdmissionActor::decide`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use prometheus::IntGaugeVec;
use serde::Serialize;
use tokio::sync::oneshot;

use super::adaptive::CallSample;
use super::backlog::Backlog;
use super::fair::{TenantId, Tenants, Verdict};
use super::limit::Limit;
use super::machine::{Admission, Fractions, Limits, PermitToken, Priority, Reason, Refusal, Shed};
use super::metrics::AdmissionMetrics;
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
    /// The tenant header's value, with tenant fairness on (`None`: off, or no header).
    pub tenant: Option<Box<str>>,
}

/// Why an [`Acquire`] got no permit at once.
pub(crate) enum NotNow {
    Shed(Refusal),
    /// Waiting in the backlog: the answer comes on this channel (a permit, or shed when the
    /// queue timeout passes or a newer request takes the place).
    Queued(oneshot::Receiver<Result<Permit, Refusal>>),
}

/// Tenant fairness's state in the actor: the pure rule's tenants, and who is being shed.
pub(crate) struct Fair {
    pub tenants: Tenants,
    /// Sheds per tenant since the last heaviest-shed report (at most [`TALLY_NAMES`] names; the
    /// rest are counted under "(others)").
    pub tally: HashMap<Box<str>, u64>,
    /// `admission_tenants_active`.
    pub active: prometheus::IntGauge,
    /// What the admin state shows of tenants.
    pub published: PublishedTenants,
    /// When the overflow tenant was last reported in the log.
    pub overflow_logged: Option<Instant>,
}

/// Names tallied between two heaviest-shed reports.
const TALLY_NAMES: usize = 1024;
/// Heaviest-shed tenants reported.
const HEAVIEST: usize = 5;
/// How often the heaviest-shed tenants are logged (and the overflow tenant at most).
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// Tenants as `GET /admin/state` shows them.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct TenantsView {
    pub header: String,
    pub active: u32,
    pub tracked: usize,
    /// The heaviest-shed tenants over the last full minute, with their sheds.
    pub heaviest_shed_last_minute: Vec<(String, u64)>,
    /// Sheds by tenant since that minute ended (heaviest first, at most 5).
    pub heaviest_shed_now: Vec<(String, u64)>,
}

/// What the actor publishes of tenants (written only by the actor).
pub(crate) type PublishedTenants = Arc<Mutex<TenantsView>>;

fn heaviest(tally: &HashMap<Box<str>, u64>) -> Vec<(String, u64)> {
    let mut all: Vec<(&str, u64)> = tally.iter().map(|(k, v)| (&**k, *v)).collect();
    all.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    all.into_iter()
        .take(HEAVIEST)
        .map(|(k, v)| (k.to_string(), v))
        .collect()
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

/// A request in the backlog: where to send its answer, its path (for counting) and its tenant.
pub(crate) type Waiting = (
    oneshot::Sender<Result<Permit, Refusal>>,
    &'static str,
    Option<TenantId>,
);

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
    /// Tenant fairness (`admission.tenant_header` set).
    fair: Option<Fair>,
}

impl AdmissionActor {
    pub(crate) fn new(
        limit: Box<dyn Limit>,
        slots: Arc<Slots>,
        backlog: Backlog<Waiting>,
        metrics: AdmissionMetrics,
        pinning: Pinning,
        fair: Option<Fair>,
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
            fair,
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
    /// A refusal of a known tenant is tallied for the heaviest-shed report.
    fn decide(
        &mut self,
        path: &'static str,
        priority: Priority,
        tenant: Option<TenantId>,
        token: Result<PermitToken, Refusal>,
    ) -> Result<Permit, Refusal> {
        match token {
            Ok(token) => {
                self.metrics.admitted(path, priority);
                Ok(self.slots.permit(token))
            }
            Err(refusal) => {
                self.metrics.refused(path, priority, refusal.reason);
                if let (Some(fair), Some(id)) = (self.fair.as_mut(), tenant) {
                    let name = fair.tenants.name(id);
                    if let Some(n) = fair.tally.get_mut(name) {
                        *n += 1;
                    } else if fair.tally.len() < TALLY_NAMES {
                        fair.tally.insert(name.into(), 1);
                    } else {
                        *fair.tally.entry("(others)".into()).or_insert(0) += 1;
                    }
                }
                Err(refusal)
            }
        }
    }

    /// Takes a slot of `priority` for `tenant` (counted in the tenant's share and quota).
    fn take_slot(
        &mut self,
        now: Instant,
        priority: Priority,
        tenant: Option<TenantId>,
    ) -> Result<PermitToken, Refusal> {
        let token = self
            .machine
            .try_acquire(priority)
            .map_err(|Shed| Refusal::of(Reason::Capacity))?;
        Ok(match (self.fair.as_mut(), tenant) {
            (Some(fair), Some(id)) => {
                fair.tenants.admitted(now, id);
                token.for_tenant(id)
            }
            _ => token,
        })
    }

    /// Tenant fairness's admission (`Acquire` with `admission.tenant_header` set): the quota,
    /// then the rule of [`super::fair`]; a tenant under its share waits in the backlog.
    fn acquire_fair(&mut self, msg: Acquire, ctx: &mut Context<Self>) -> Result<Permit, NotNow> {
        let now = Instant::now();
        let (inflight, ceiling) = (
            self.machine.inflight(),
            self.machine.limits().ceiling(msg.priority),
        );
        let Some(fair) = self.fair.as_mut() else {
            return Err(NotNow::Shed(Refusal::of(Reason::Capacity)));
        };
        let id = fair.tenants.enter(now, msg.tenant.as_deref());
        if id == TenantId::OVERFLOW
            && fair
                .overflow_logged
                .is_none_or(|at| now.duration_since(at) >= REPORT_EVERY)
        {
            fair.overflow_logged = Some(now);
            log::warn!(
                "admission: more than admission.max_tenants tenants; {} requests of new tenants shared the overflow tenant (logged at most once a minute)",
                fair.tenants.take_overflowed()
            );
        }
        let verdict = fair
            .tenants
            .has_token(now, id)
            .map_err(Refusal::quota)
            .map(|()| fair.tenants.judge(id, inflight, ceiling));
        let answer = match verdict {
            Err(refusal) => self.decide(msg.path, msg.priority, Some(id), Err(refusal)),
            Ok(Verdict::OverShare) => self.decide(
                msg.path,
                msg.priority,
                Some(id),
                Err(Refusal::of(Reason::TenantShare)),
            ),
            Ok(Verdict::Admit) => {
                let token = self.take_slot(now, msg.priority, Some(id));
                self.decide(msg.path, msg.priority, Some(id), token)
            }
            Ok(Verdict::Wait) => {
                let (tx, rx) = oneshot::channel();
                self.queue(ctx, now, msg.priority, (tx, msg.path, Some(id)));
                self.publish();
                return Err(NotNow::Queued(rx));
            }
        };
        self.publish();
        answer.map_err(NotNow::Shed)
    }

    /// Puts a request in the backlog; a full backlog sheds its oldest waiter to make room.
    fn queue(&mut self, ctx: &mut Context<Self>, now: Instant, priority: Priority, w: Waiting) {
        self.waiting(w.2, true);
        if let Some((priority, (old, path, tenant))) = self.backlog.push(now, priority, w) {
            self.waiting(tenant, false);
            let answer = self.decide(path, priority, tenant, Err(Refusal::of(Reason::Capacity)));
            let _ = old.send(answer);
        }
        ctx.run_later(self.backlog.timeout(), |act, _| act.serve_backlog());
    }

    /// A request of `tenant` starts (`true`) or stops waiting in the backlog: a tenant with a
    /// waiter is not idle.
    fn waiting(&mut self, tenant: Option<TenantId>, starts: bool) {
        if let (Some(fair), Some(id)) = (self.fair.as_mut(), tenant) {
            if starts {
                fair.tenants.waits(id);
            } else {
                fair.tenants.stops_waiting(id);
            }
        }
    }

    /// Once a second: idle tenants swept, the gauge and the admin state's view brought up to date.
    fn tick_tenants(&mut self) {
        if let Some(fair) = self.fair.as_mut() {
            fair.tenants.sweep(Instant::now(), usize::MAX);
            fair.active.set(i64::from(fair.tenants.active()));
            let mut view = fair
                .published
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            view.active = fair.tenants.active();
            view.tracked = fair.tenants.tracked();
            view.heaviest_shed_now = heaviest(&fair.tally);
        }
    }

    /// Once a minute: the heaviest-shed tenants of that minute to the log and the state.
    fn report_heaviest(&mut self) {
        if let Some(fair) = self.fair.as_mut() {
            let top = heaviest(&fair.tally);
            let total: u64 = fair.tally.values().sum();
            fair.tally.clear();
            if !top.is_empty() {
                let shown: Vec<String> = top.iter().map(|(k, v)| format!("{k}={v}")).collect();
                log::warn!(
                    "admission: {total} requests shed over the last minute; heaviest tenants: {}",
                    shown.join(", ")
                );
            }
            let mut view = fair
                .published
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            view.heaviest_shed_last_minute = top;
            view.heaviest_shed_now.clear();
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
        if let Some(fair) = &self.fair {
            fair.active.set(i64::from(fair.tenants.active()));
        }
    }

    /// Sheds the waiters whose queue timeout has passed, gives free slots to the newest waiters
    /// that fit, then publishes the counts.
    fn serve_backlog(&mut self) {
        if self.backlog.is_empty() {
            self.publish();
            return;
        }
        let now = Instant::now();
        for (priority, (tx, path, tenant)) in self.backlog.expire(now) {
            self.waiting(tenant, false);
            let answer = self.decide(
                path,
                priority,
                tenant,
                Err(Refusal::of(Reason::QueueTimeout)),
            );
            let _ = tx.send(answer);
        }
        loop {
            let (limits, inflight) = (self.machine.limits(), self.machine.inflight());
            let next = match &self.fair {
                // The waiter furthest below its tenant's share (the newest of equals).
                Some(fair) => self.backlog.pop_best(|p, (_, _, tenant)| {
                    let ceiling = limits.ceiling(p);
                    (inflight < ceiling)
                        .then(|| tenant.map_or(0.0, |id| fair.tenants.deficit(id, ceiling)))
                }),
                None => self.backlog.pop_newest(|p| inflight < limits.ceiling(p)),
            };
            let Some((priority, (tx, path, tenant))) = next else {
                break;
            };
            self.waiting(tenant, false);
            // A waiter whose client went away while it waited is shed, not served.
            let token = if tx.is_closed() {
                Err(Refusal::of(Reason::Capacity))
            } else {
                self.take_slot(now, priority, tenant)
            };
            let answer = self.decide(path, priority, tenant, token);
            let _ = tx.send(answer);
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
        if self.fair.is_some() {
            ctx.run_interval(Duration::from_secs(1), |act, _| act.tick_tenants());
            ctx.run_interval(REPORT_EVERY, |act, _| act.report_heaviest());
        }
    }
}

impl Handler<Acquire> for AdmissionActor {
    type Result = Result<Permit, NotNow>;

    fn handle(&mut self, msg: Acquire, ctx: &mut Self::Context) -> Self::Result {
        if self.fair.is_some() {
            return self.acquire_fair(msg, ctx);
        }
        let token = self
            .machine
            .try_acquire(msg.priority)
            .map_err(|Shed| Refusal::of(Reason::Capacity));
        if token.is_ok() || !self.backlog.enabled() {
            let answer = self.decide(msg.path, msg.priority, None, token);
            self.publish();
            return answer.map_err(NotNow::Shed);
        }
        let (tx, rx) = oneshot::channel();
        self.queue(ctx, Instant::now(), msg.priority, (tx, msg.path, None));
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
        if let (Some(fair), Some(id)) = (self.fair.as_mut(), msg.token.tenant()) {
            fair.tenants.released(id);
        }
        self.machine.release(msg.token);
        self.serve_backlog();
    }
}
