//! The api role: `GET /client` (validate → admit → breaker → upstream call) and `POST /work`.
//!
//! - [`params`]: parameter parsing and validation.
//! - [`outcome`]: the one mapping from how a request ended to status, headers, body and label.
//! - [`upstream_call`]: the awc call with its deadline and body cap.
//! - [`client`], [`work`]: the two handlers.

pub mod client;
pub mod outcome;
pub mod params;
pub mod upstream_call;
pub mod work;

use std::time::Duration;

use actix_web::web;

use crate::admission::{AdmissionHandle, Permit, Priority};
use crate::breaker::BreakerHandle;
use crate::metrics::Metrics;
use crate::routes;
use outcome::Outcome;
use params::ClientDefaults;

/// Everything the api's handlers share across workers (the awc client is per worker).
pub struct ApiState {
    pub metrics: Metrics,
    pub admission: AdmissionHandle,
    pub breaker: BreakerHandle,
    /// Base URL of the dependency, without a trailing slash.
    pub upstream_url: String,
    pub defaults: ClientDefaults,
    pub max_upstream_body_bytes: usize,
    /// `upstream.allow_request_overrides`: whether callers may pass `ms` and `fail_rate` on.
    pub allow_request_overrides: bool,
}

impl ApiState {
    /// Admits or sheds (the decision is counted by the admission layer).
    async fn admit(&self, path: &'static str, priority: Priority) -> Result<Permit, Outcome> {
        self.admission
            .acquire(path, priority)
            .await
            .map_err(|_| Outcome::Shed { priority })
    }

    /// Decides admission without taking a slot, for a request that will not run.
    fn admit_without_slot(&self, path: &'static str, priority: Priority) -> Result<(), Outcome> {
        self.admission
            .admit_without_slot(path, priority)
            .map_err(|_| Outcome::Shed { priority })
    }

    /// Counts a `/client` that reached the breaker; `elapsed` is the upstream call's duration.
    fn record_upstream(&self, outcome: &Outcome, elapsed: Option<Duration>) {
        let Some(result) = outcome.upstream_result() else {
            return;
        };
        self.metrics
            .upstream_requests
            .with_label_values(&[result])
            .inc();
        if let Some(elapsed) = elapsed {
            self.metrics
                .upstream_duration
                .with_label_values(&[result])
                .observe(elapsed.as_secs_f64());
        }
    }
}

/// The api's routes; wrong methods get a JSON 405.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/client")
            .route(web::get().to(client::client))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/work")
            .route(web::post().to(work::work))
            .default_service(web::to(routes::method_not_allowed)),
    );
}
