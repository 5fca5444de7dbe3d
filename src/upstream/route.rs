//! `GET /upstream`. A caller's `X-Request-Timeout-Ms` (its remaining budget) is honoured: work
//! that cannot finish within it is abandoned with 504 just after the budget runs out
//! ([`DEADLINE_SLACK`]), waiting for a slot included.

use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::faults::{chance, Reset};
use super::params::UpstreamParams;
use super::Simulator;
use crate::admission::Priority;
use crate::wire::{BUDGET_HEADER, PRIORITY_HEADER};

/// Work is abandoned this long after the caller's budget runs out. The caller's clock started
/// first and its own timeout fires then; stopping at the same instant would race it, and an answer
/// winning that race would turn the caller's timeout into an upstream error.
const DEADLINE_SLACK: Duration = Duration::from_millis(50);

/// How long a hung request is held: until the caller gives up (the handler is dropped on its
/// disconnect) or the server shuts down, in practice.
const HANG: Duration = Duration::from_secs(3600);

pub(crate) async fn upstream(req: HttpRequest, sim: web::Data<Simulator>) -> HttpResponse {
    let query = req.query_string();
    let params = match sim
        .overrides
        .check(query)
        .and_then(|()| UpstreamParams::parse(query, sim.config.latency_ms, sim.config.fail_rate))
    {
        Ok(p) => p,
        Err(bad) => {
            return HttpResponse::BadRequest().json(json!({"error": bad.error, "param": bad.param}))
        }
    };
    // The caller's class (the api passes on the one it admitted the request under): a saturated
    // dependency serves higher priority first. Absent or not a class: normal.
    let priority = req
        .headers()
        .get(PRIORITY_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(Priority::parse)
        .unwrap_or(Priority::Normal);
    let arrived = Instant::now();
    let deadline = req
        .headers()
        .get(BUDGET_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|ms| arrived + Duration::from_millis(ms) + DEADLINE_SLACK);
    let slot = match deadline.filter(|_| sim.capacity.is_limited()) {
        None => sim.capacity.slot(priority).await,
        Some(deadline) => {
            match tokio::time::timeout_at(deadline.into(), sim.capacity.slot(priority)).await {
                Ok(slot) => slot,
                Err(_) => return deadline_exceeded(),
            }
        }
    };
    let Ok(_slot) = slot else {
        return over_capacity(&sim);
    };
    if chance(sim.config.faults.reset_rate) {
        return HttpResponse::Ok().body(Reset);
    }
    let work = if chance(sim.config.faults.hang_rate) {
        HANG
    } else {
        sim.config.faults.latency(params.ms)
    };
    let done = Instant::now() + work;
    if let Some(deadline) = deadline.filter(|d| *d < done) {
        // The caller will have given up by then: stop when its budget runs out.
        actix_web::rt::time::sleep_until(deadline.into()).await;
        return deadline_exceeded();
    }
    if !work.is_zero() {
        actix_web::rt::time::sleep(work).await;
    }
    if chance(params.fail_rate) {
        let mut failure = HttpResponse::build(sim.config.faults.fail_status);
        if let Some(after) = sim.config.faults.retry_after {
            failure.insert_header((header::RETRY_AFTER, after.as_secs()));
        }
        failure.json(json!({"error": "injected failure"}))
    } else {
        // Serialized straight from a struct: `{"ms":…,"ok":true}`, as `json!` gave it.
        HttpResponse::Ok().json(Answer {
            ms: params.ms,
            ok: true,
        })
    }
}

#[derive(serde::Serialize)]
struct Answer {
    ms: u64,
    ok: bool,
}

fn deadline_exceeded() -> HttpResponse {
    HttpResponse::GatewayTimeout().json(json!({"error": "deadline exceeded"}))
}

/// 503 at once: every slot busy and `upstream.max_waiting` requests already waiting (with
/// `Retry-After` when `upstream.retry_after_seconds` is set, as injected failures).
fn over_capacity(sim: &Simulator) -> HttpResponse {
    let mut answer = HttpResponse::ServiceUnavailable();
    if let Some(after) = sim.config.faults.retry_after {
        answer.insert_header((header::RETRY_AFTER, after.as_secs()));
    }
    answer.json(json!({"error": "over capacity"}))
}
