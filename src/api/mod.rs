//! The api role: `GET /client` (validate → admit → breaker → upstream call) and `POST /work`.
//!
//! - [`params`]: parameter parsing and validation.
//! - [`client`], [`work`]: the two handlers.
//! - [`attempts`]: a request's calls to the dependency: one, or retries and a hedge (`retry.*`).
//! - [`upstream_call`]: the awc call with its deadline and body cap.
//! - [`call_result`]: how one call ended, read once; verdict, sample, labels and answer follow.
//! - [`outcome`]: the one mapping from how a request ended to status, headers and body.
//! - [`metrics`]: `upstream_requests_total` and `upstream_request_duration_seconds`.

mod attempts;
mod call_result;
mod client;
mod metrics;
mod outcome;
mod params;
mod upstream_call;
mod work;

use actix_web::{web, HttpRequest};

pub(crate) use upstream_call::client as upstream_client;

use crate::actor_home::ActorHome;
use crate::admission::{AdmissionHandle, Permit, Priority};
use crate::autoscaling::signal::Totals;
use crate::autoscaling::LoadSignalActor;
use crate::breaker::BreakerHandle;
use crate::metrics::Metrics;
use crate::retry::{Retries, RetryMetrics};
use crate::routes;
use crate::settings::{ApiSettings, Settings, Timeouts};
use crate::wire::OverridePolicy;
use metrics::{UpstreamMetrics, UpstreamResult};
use outcome::Outcome;

/// The two routes admission counts by path.
const CLIENT: &str = "/client";
const WORK: &str = "/work";

/// Everything the api's handlers share across workers (the awc client is per worker).
pub(crate) struct ApiState {
    metrics: Metrics,
    upstream_metrics: UpstreamMetrics,
    admission: AdmissionHandle,
    breaker: BreakerHandle,
    /// `[api]`: the dependency's URL (in role `all`, this process's own upstream listener) and
    /// the body cap.
    api: ApiSettings,
    /// `[timeouts]`: what `/client` applies when the caller names no timeout.
    timeouts: Timeouts,
    /// Whether callers may pass `ms` and `fail_rate` on to the dependency.
    overrides: OverridePolicy,
    /// Retries and hedging (off by default), and the attempt metrics.
    retries: Retries,
    /// `admin_override{component,kind}`, for the admin listener's run-time switches.
    override_gauge: prometheus::IntGaugeVec,
    /// The breaker's trip rule and admission's mode, in words and numbers (the status page).
    rules: serde_json::Value,
}

impl ApiState {
    /// Registers the api's metrics and creates its two actors, which start in `home`. `api` is
    /// the `[api]` section as this process uses it.
    pub(crate) fn start(
        settings: &Settings,
        api: ApiSettings,
        metrics: &Metrics,
        home: &ActorHome,
    ) -> Result<Self, prometheus::Error> {
        let throttling = matches!(settings.breaker.trip, crate::breaker::TripRule::Throttle(_));
        let upstream_metrics = UpstreamMetrics::register(metrics, throttling)?;
        // `admin_override{component,kind}`: 1 while an operator's override is held.
        let override_gauge = metrics.register(prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                "admin_override",
                "1 while an operator's override is held (POST /admin/...), by component and kind",
            ),
            &["component", "kind"],
        )?)?;
        let admission = AdmissionHandle::start(
            &settings.admission,
            metrics,
            &[CLIENT, WORK],
            home,
            override_gauge.clone(),
        )?;
        let (offered, durations) = (admission.clone(), upstream_metrics.durations());
        LoadSignalActor::start(
            settings.admission.own_capacity(),
            Box::new(move || {
                let (ok_calls, ok_seconds) = durations(UpstreamResult::Ok);
                let (timeouts, timeout_seconds) = durations(UpstreamResult::Timeout);
                Totals {
                    arrivals: offered.offered(CLIENT),
                    ok_calls,
                    ok_seconds,
                    timeouts,
                    timeout_seconds,
                }
            }),
            metrics,
            home,
        )?;
        Ok(Self {
            metrics: metrics.clone(),
            upstream_metrics,
            admission,
            breaker: BreakerHandle::start(settings.breaker, metrics, home, override_gauge.clone())?,
            override_gauge,
            rules: rules(settings),
            api,
            timeouts: settings.timeouts,
            overrides: settings.overrides,
            retries: Retries::new(settings.retry, RetryMetrics::register(metrics)?),
        })
    }

    /// The shared registry, for the status page's sampler.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The breaker's trip rule and admission's mode, as the status page shows them.
    pub(crate) fn rules(&self) -> &serde_json::Value {
        &self.rules
    }

    /// The breaker, for the admin listener.
    pub(crate) fn breaker(&self) -> &BreakerHandle {
        &self.breaker
    }

    /// Admission as the admin listener shows it.
    pub(crate) fn admission_view(&self) -> crate::admission::AdmissionView {
        self.admission.view()
    }

    /// `admin_override{component,kind}`.
    pub(crate) fn override_gauge(&self) -> prometheus::IntGaugeVec {
        self.override_gauge.clone()
    }

    /// Admission, for the admin listener's pin.
    pub(crate) fn admission(&self) -> &AdmissionHandle {
        &self.admission
    }

    /// Retry tokens left, when retries are on.
    pub(crate) fn retry_budget_left(&self) -> Option<f64> {
        self.retries
            .config
            .enabled()
            .then(|| self.retries.budget_left())
    }

    /// The request's tenant, with tenant fairness on (`admission.tenant_header`): the header's
    /// value, or `None` when it has none (the anonymous tenant) or fairness is off. A value
    /// that is repeated, empty, too long or not printable ASCII is a 400 naming the header.
    fn tenant<'r>(&self, req: &'r HttpRequest) -> Result<Option<&'r str>, Outcome> {
        match self.admission.tenant_header() {
            None => Ok(None),
            Some(header) => params::tenant(req.headers(), header).map_err(Outcome::Invalid),
        }
    }

    /// Admits or sheds (the decision is counted by the admission layer).
    async fn admit(
        &self,
        path: &'static str,
        priority: Priority,
        tenant: Option<&str>,
    ) -> Result<Permit, Outcome> {
        self.admission
            .acquire(path, priority, tenant)
            .await
            .map_err(|refusal| Outcome::Shed { priority, refusal })
    }

    /// Decides admission without taking a slot, for a request that will not run.
    fn admit_without_slot(&self, path: &'static str, priority: Priority) -> Result<(), Outcome> {
        self.admission
            .admit_without_slot(path, priority)
            .map_err(|refusal| Outcome::Shed { priority, refusal })
    }
}

/// The breaker's trip rule and admission's mode, as the status page shows them beside the state.
fn rules(settings: &Settings) -> serde_json::Value {
    use crate::breaker::TripRule;
    use crate::settings::AdmissionMode;
    let breaker = match settings.breaker.trip {
        TripRule::Consecutive { threshold } => serde_json::json!({
            "mode": "consecutive",
            "rule": format!("opens after {threshold} failures in a row"),
            "failure_threshold": threshold,
        }),
        TripRule::FailureRate(w) => serde_json::json!({
            "mode": "failure_rate",
            "rule": format!(
                "opens when at least {:.0} % of the last {} calls fail (judged from {} calls)",
                w.failure_rate_threshold * 100.0,
                w.size,
                w.minimum_calls
            ),
            "failure_rate_threshold": w.failure_rate_threshold,
            "slow_call_rate_threshold": w.slow_call_rate_threshold,
        }),
        TripRule::Throttle(t) => serde_json::json!({
            "mode": "throttle",
            "rule": format!(
                "refuses calls locally when under {:.0} % of them succeed over {} s (at most {:.0} %)",
                t.success_rate * 100.0,
                t.window.as_secs(),
                t.max_probability * 100.0
            ),
        }),
    };
    let admission = match settings.admission.mode {
        AdmissionMode::Static(_) => "static",
        AdmissionMode::Adaptive { .. } => "adaptive",
    };
    serde_json::json!({"breaker": breaker, "admission": admission})
}

/// The api's routes; wrong methods get a JSON 405.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(CLIENT)
            .route(web::get().to(client::client))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource(WORK)
            .route(web::post().to(work::work))
            .default_service(web::to(routes::method_not_allowed)),
    );
}
