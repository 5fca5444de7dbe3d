//! The upstream role: a simulated dependency. `GET /upstream?ms=&fail_rate=` waits `ms` on a timer,
//! then fails with probability `fail_rate` (503), else answers 200. Defaults come from configuration,
//! so changing the deployment's values changes its behaviour for every caller.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::api::params::upstream_params;
use crate::routes;

/// The simulator's configured defaults.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamState {
    pub latency_ms: u64,
    pub fail_rate: f64,
}

pub async fn upstream(req: HttpRequest, state: web::Data<UpstreamState>) -> HttpResponse {
    let (ms, fail_rate) =
        match upstream_params(req.query_string(), state.latency_ms, state.fail_rate) {
            Ok(p) => p,
            Err(bad) => {
                return HttpResponse::BadRequest()
                    .json(json!({"error": bad.error, "param": bad.param}))
            }
        };
    if ms > 0 {
        actix_web::rt::time::sleep(Duration::from_millis(ms)).await;
    }
    // random() is in [0, 1): a rate of 0 never fails and a rate of 1 always does.
    if rand::random::<f64>() < fail_rate {
        HttpResponse::ServiceUnavailable().json(json!({"error": "injected failure"}))
    } else {
        HttpResponse::Ok().json(json!({"ok": true, "ms": ms}))
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/upstream")
            .route(web::get().to(upstream))
            .default_service(web::to(routes::method_not_allowed)),
    );
}
