//! What every role serves: `/healthz`, `/readyz`, `/metrics`, and JSON 404/405 fallbacks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::metrics;

/// Whether the process takes new work; turned off when draining starts.
#[derive(Clone, Debug)]
pub(crate) struct Readiness(Arc<AtomicBool>);

impl Default for Readiness {
    fn default() -> Self {
        Self(Arc::new(AtomicBool::new(true)))
    }
}

impl Readiness {
    pub(crate) fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    pub(crate) fn start_draining(&self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The content type `.json()` sets, for answers written as fixed text: a ready header pair
/// instead of a `Mime` formatted on every response.
pub(crate) const JSON: (HeaderName, HeaderValue) =
    (CONTENT_TYPE, HeaderValue::from_static("application/json"));

/// `{"ok":true}`, as fixed text: the probes are the cheapest answers the service gives.
fn ok() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(JSON)
        .body(r#"{"ok":true}"#)
}

pub(crate) async fn healthz() -> HttpResponse {
    ok()
}

pub(crate) async fn readyz(readiness: web::Data<Readiness>) -> HttpResponse {
    if readiness.is_ready() {
        ok()
    } else {
        HttpResponse::ServiceUnavailable().json(json!({"ok": false, "error": "draining"}))
    }
}

pub(crate) async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(json!({"error": "not found"}))
}

pub(crate) async fn method_not_allowed() -> HttpResponse {
    HttpResponse::MethodNotAllowed().json(json!({"error": "method not allowed"}))
}

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(get("/healthz", web::get().to(healthz)))
        .service(get("/readyz", web::get().to(readyz)))
        .service(get("/metrics", web::get().to(metrics::serve)));
}

/// A resource answering one route, and a JSON 405 to other methods.
fn get(path: &str, route: actix_web::Route) -> actix_web::Resource {
    web::resource(path)
        .route(route)
        .default_service(web::to(method_not_allowed))
}
