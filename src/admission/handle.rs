//! [`AdmissionHandle`]: what routes hold. It sheds at once, without a message, a request whose
//! class is already full by the published count; requests that may fit ask the actor, which
//! decides exactly. In shadow mode (`admission.enforce = false`) every decision is the same, but a
//! shed request gets a shadow permit and goes on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::actor::{
    Acquire, AdmissionActor, Fair, NotNow, Pinning, PublishedPin, PublishedTenants, Sample, SetPin,
    TenantsView,
};
use super::adaptive::GradientLimit;
use super::backlog::Backlog;
use super::fair::Tenants;
use super::limit::{FixedLimit, Limit};
use super::machine::{Fractions, Priority, Reason, Refusal};
use super::metrics::AdmissionMetrics;
use super::permit::{Permit, Slots};
use super::{AdmissionConfig, AdmissionMode};
use crate::actor_home::ActorHome;
use crate::metrics::Metrics;

#[derive(Clone)]
pub(crate) struct AdmissionHandle {
    slots: Arc<Slots>,
    /// Whether the limit learns from latency samples (else none is sent).
    learns: bool,
    /// Whether a full class waits in a backlog (then every request asks the actor).
    queued: bool,
    metrics: AdmissionMetrics,
    /// The pinned limit, as the actor publishes it (for the admin state).
    pin: PublishedPin,
    /// Tenant fairness: the header naming the tenant, and what the actor publishes of tenants.
    tenants: Option<(actix_web::http::header::HeaderName, PublishedTenants)>,
}

impl AdmissionHandle {
    /// Registers admission's metrics (with series for each of `paths`) and creates the one
    /// `AdmissionActor`, which starts in `home`.
    /// `override_gauge`: `admin_override{component,kind}`, set while a pinned limit is held.
    pub(crate) fn start(
        config: &AdmissionConfig,
        metrics: &Metrics,
        paths: &[&'static str],
        home: &ActorHome,
        override_gauge: prometheus::IntGaugeVec,
    ) -> Result<Self, prometheus::Error> {
        let registry = metrics;
        let metrics = AdmissionMetrics::register(registry, paths, config.enforce)?;
        let shadow = metrics.shadow_switch();
        let limit: Box<dyn Limit> = match config.mode {
            AdmissionMode::Static(limits) => Box::new(FixedLimit(limits)),
            AdmissionMode::Adaptive { limiter, fractions } => {
                Box::new(GradientLimit::new(limiter, fractions, Instant::now()))
            }
        };
        let learns = limit.learns();
        // A pinned limit keeps the classes' shares of the configuration.
        let fractions = match config.mode {
            AdmissionMode::Static(l) => Fractions {
                normal: f64::from(l.normal) / f64::from(l.high),
                low: f64::from(l.low) / f64::from(l.high),
            },
            AdmissionMode::Adaptive { fractions, .. } => fractions,
        };
        let pin = PublishedPin::default();
        let pinning = Pinning {
            fractions,
            gauge: override_gauge,
            published: pin.clone(),
        };
        // With tenant fairness a tenant under its share may wait even without a configured
        // backlog: then up to the ceiling's worth of requests wait, for queue_timeout_ms.
        let waiting = match (config.backlog.size, config.fair) {
            (0, Some(_)) => usize::try_from(config.own_capacity()).unwrap_or(usize::MAX),
            (size, _) => size,
        };
        let backlog = Backlog::new(waiting, config.backlog.timeout);
        let (fair, tenants) = match config.fair {
            None => (None, None),
            Some(fc) => {
                let header = actix_web::http::header::HeaderName::from_static(fc.header);
                let published = PublishedTenants::new(std::sync::Mutex::new(TenantsView {
                    header: header.to_string(),
                    ..TenantsView::default()
                }));
                let fair = Fair {
                    tenants: Tenants::new(&fc, Instant::now()),
                    tally: std::collections::HashMap::new(),
                    active: registry.register(prometheus::IntGauge::new(
                        "admission_tenants_active",
                        "Tenants active now (requests in flight, or seen within about a second); tenant fairness only",
                    )?)?,
                    published: published.clone(),
                    overflow_logged: None,
                };
                (Some(fair), Some((header, published)))
            }
        };
        let queued = waiting > 0;
        let slots = home.start_with(|addr| {
            let slots = Arc::new(Slots::new(addr, limit.current(), shadow));
            let actor = AdmissionActor::new(
                limit,
                slots.clone(),
                backlog,
                metrics.clone(),
                pinning,
                fair,
            );
            (actor, slots)
        });
        Ok(Self {
            slots,
            learns,
            queued,
            metrics,
            pin,
            tenants,
        })
    }

    /// Shadow mode's switch (`POST /admin/shadow`).
    pub(crate) fn shadow_switch(&self) -> Arc<crate::shadow::Switch<super::metrics::Shadow>> {
        self.metrics.shadow_switch()
    }

    /// Pins the limit in force, or hands it back (`POST /admin/admission/limit`); resolves once
    /// the actor has applied it.
    pub(crate) async fn set_pin(&self, request: SetPin) -> Result<(), actix::MailboxError> {
        self.slots.addr().send(request).await
    }

    /// Reports a finished upstream call to the limit (no-op when it does not learn): sent at
    /// `started`, it took `latency`, or timed out after it.
    pub(crate) fn sample(&self, started: Instant, latency: Duration, timed_out: bool) {
        if self.learns {
            self.slots.addr().do_send(Sample {
                started,
                latency,
                timed_out,
            });
        }
    }

    /// Decides admission by the published in-flight count without taking a slot, for a request
    /// that will not run (see `api::client`). An admission here is a permit held for no time, so
    /// it is counted as released at once: admitted = released + in flight holds.
    pub(crate) fn admit_without_slot(
        &self,
        path: &'static str,
        priority: Priority,
    ) -> Result<(), Refusal> {
        if !self.slots.has_room(priority) {
            let shed = self.shed(path, priority);
            // Shadow mode: counted as a would-be shed, and the request goes on.
            return if self.metrics.enforced() {
                Err(shed)
            } else {
                Ok(())
            };
        }
        self.metrics.admitted(path, priority);
        self.metrics.released(priority);
        Ok(())
    }

    /// The header naming the tenant, with tenant fairness on.
    pub(crate) fn tenant_header(&self) -> Option<&actix_web::http::header::HeaderName> {
        self.tenants.as_ref().map(|(h, _)| h)
    }

    /// Admits or sheds one request to `path` (of `tenant`, with tenant fairness on). Without a
    /// backlog or fairness, a class already full by the in-flight count is shed at once; otherwise
    /// the actor decides (and counts), and a request may wait up to the queue timeout. In shadow
    /// mode a request that would be shed (after the same wait) gets a shadow permit instead: it
    /// runs, holding no slot.
    pub(crate) async fn acquire(
        &self,
        path: &'static str,
        priority: Priority,
        tenant: Option<&str>,
    ) -> Result<Permit, Refusal> {
        match self.decide(path, priority, tenant).await {
            Err(_) if !self.metrics.enforced() => Ok(self.slots.shadow_permit()),
            decided => decided,
        }
    }

    /// The decision, as enforcing makes it (counted as a would-be shed in shadow mode).
    async fn decide(
        &self,
        path: &'static str,
        priority: Priority,
        tenant: Option<&str>,
    ) -> Result<Permit, Refusal> {
        if !self.queued && !self.slots.has_room(priority) {
            return Err(self.shed(path, priority));
        }
        let ask = Acquire {
            priority,
            path,
            tenant: tenant.map(Box::from),
        };
        match self.slots.addr().send(ask).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(NotNow::Shed(refusal))) => Err(refusal),
            // Answered (and counted) by the actor, unless it stopped with the request queued.
            Ok(Err(NotNow::Queued(rx))) => {
                rx.await.unwrap_or_else(|_| Err(self.shed(path, priority)))
            }
            // The actor is gone (shutting down): shed rather than run unaccounted.
            Err(_) => Err(self.shed(path, priority)),
        }
    }

    /// Admission as `GET /admin/state` shows it.
    pub(crate) fn view(&self) -> AdmissionView {
        let (ceilings, inflight) = self.slots.published();
        AdmissionView {
            limits: Priority::ALL
                .iter()
                .map(|p| (p.as_str(), ceilings[p.index()]))
                .collect(),
            inflight,
            shadow_inflight: self.slots.shadow_running(),
            queued: self.metrics.queued_now(),
            enforced: self.metrics.enforced(),
            tenants: self.tenants.as_ref().map(|(_, view)| {
                view.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone()
            }),
            pinned: self
                .pin
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_ref()
                .map(|p| {
                    let now = Instant::now();
                    PinnedView {
                        limit: p.limit,
                        by: p.by.clone(),
                        held_seconds: now.duration_since(p.since).as_secs_f64(),
                        expires_in_seconds: p
                            .until
                            .map(|u| u.saturating_duration_since(now).as_secs_f64()),
                    }
                }),
        }
    }

    /// Requests to `path` decided so far, admitted or shed (for the autoscaling signal).
    pub(crate) fn offered(&self, path: &str) -> u64 {
        self.metrics.decided_total(path)
    }

    /// A request shed here for lack of capacity, without the actor: counted here.
    fn shed(&self, path: &'static str, priority: Priority) -> Refusal {
        self.metrics.refused(path, priority, Reason::Capacity);
        Refusal::of(Reason::Capacity)
    }
}

/// Admission as `GET /admin/state` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct AdmissionView {
    /// The ceiling in force per priority.
    pub limits: std::collections::BTreeMap<&'static str, u32>,
    /// Admitted and in flight (what the ceilings are compared with).
    pub inflight: u32,
    /// Shadow mode: running only because of it.
    pub shadow_inflight: i64,
    /// Waiting in the backlog.
    pub queued: i64,
    pub enforced: bool,
    /// Tenant fairness (`None`: off): active and tracked tenants, the heaviest shed.
    pub tenants: Option<TenantsView>,
    /// An operator's pinned limit, if held.
    pub pinned: Option<PinnedView>,
}

/// A pinned limit as the state shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct PinnedView {
    pub limit: u32,
    pub by: String,
    pub held_seconds: f64,
    /// Seconds until it lifts by itself (`None`: held until released).
    pub expires_in_seconds: Option<f64>,
}
