//! The upstream role: a simulated dependency that can really be overloaded and misbehave.
//!
//! `GET /upstream?ms=&fail_rate=` takes a slot of `upstream.concurrency` (the rest wait in FIFO
//! order, so latency grows with load), then, by configured probabilities: closes the connection
//! mid-response (`reset_rate`), or never answers (`hang_rate`), or waits `ms` ± `jitter_ms` (plus
//! `tail_ms` with probability `tail_rate`) on a timer and fails with `fail_status` at probability
//! `fail_rate`, else answers 200. A caller's `X-Request-Timeout-Ms` (its remaining budget) is
//! honoured: work that cannot finish within it is abandoned with 504 just after the budget runs
//! out (`DEADLINE_SLACK`), waiting for a slot included. Defaults come from configuration, so changing the deployment's
//! values changes its behaviour for every caller; with `allow_request_overrides = false` callers
//! cannot change `ms` or `fail_rate` at all.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{BodySize, MessageBody};
use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::api::params::{upstream_params, BadParam, BUDGET_HEADER};
use crate::routes;
use crate::settings::UpstreamSettings;

/// Work is abandoned this long after the caller's budget runs out. The caller's clock started
/// first and its own timeout fires then; stopping at the same instant would race it, and an answer
/// winning that race would turn the caller's timeout into an upstream error.
const DEADLINE_SLACK: Duration = Duration::from_millis(50);

/// How long a hung request is held: until the caller gives up (the handler is dropped on its
/// disconnect) or the server shuts down, in practice.
const HANG: Duration = Duration::from_secs(3600);

/// The simulator's configuration, shared by its workers.
#[derive(Debug, Clone)]
pub struct UpstreamState {
    pub latency_ms: u64,
    pub fail_rate: f64,
    pub jitter_ms: u64,
    pub tail_rate: f64,
    pub tail_ms: u64,
    pub fail_status: StatusCode,
    pub hang_rate: f64,
    pub reset_rate: f64,
    pub allow_request_overrides: bool,
    /// `upstream.concurrency` slots, fair (FIFO); `None` = unlimited.
    pub slots: Option<Arc<Semaphore>>,
    /// `upstream.degrade_after_seconds`: when, and how many slots to take away then.
    degrade: Option<(Duration, usize)>,
}

impl UpstreamState {
    pub fn new(s: &UpstreamSettings) -> Self {
        Self {
            latency_ms: s.latency_ms,
            fail_rate: s.fail_rate,
            jitter_ms: s.jitter_ms,
            tail_rate: s.tail_rate,
            tail_ms: s.tail_ms,
            fail_status: StatusCode::from_u16(s.fail_status)
                .unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            hang_rate: s.hang_rate,
            reset_rate: s.reset_rate,
            allow_request_overrides: s.allow_request_overrides,
            slots: (s.concurrency > 0).then(|| Arc::new(Semaphore::new(s.concurrency))),
            degrade: s
                .degrade_after
                .map(|after| (after, s.concurrency.saturating_sub(s.degraded_concurrency))),
        }
    }

    /// Schedules the configured capacity loss, if any, on the current runtime: after the delay,
    /// a task takes slots away for good. It waits in the same FIFO queue as requests, so calls
    /// already running finish, and from then on only `degraded_concurrency` run at once.
    pub fn schedule_degrade(&self) {
        let (Some(slots), Some((after, lost))) = (self.slots.clone(), self.degrade) else {
            return;
        };
        let Ok(lost) = u32::try_from(lost) else {
            return;
        };
        actix_web::rt::spawn(async move {
            actix_web::rt::time::sleep(after).await;
            log::warn!(
                "upstream: capacity drops by {lost} slots now (upstream.degrade_after_seconds)"
            );
            if let Ok(taken) = slots.acquire_many_owned(lost).await {
                taken.forget();
            }
        });
    }

    /// The latency of one request: `ms` ± jitter, plus the tail now and then.
    fn latency(&self, ms: u64) -> Duration {
        let jitter = self.jitter_ms as f64 * (2.0 * rand::random::<f64>() - 1.0);
        let mut total = (ms as f64 + jitter).max(0.0);
        if chance(self.tail_rate) {
            total += self.tail_ms as f64;
        }
        Duration::from_micros((total * 1000.0) as u64)
    }
}

/// True with probability `rate` (`random()` is in [0, 1): 0 never, 1 always).
fn chance(rate: f64) -> bool {
    rand::random::<f64>() < rate
}

/// Refuses `ms` and `fail_rate` when request overrides are disabled; used by both roles.
pub fn refuse_overrides(query: &str) -> Result<(), BadParam> {
    for (name, _) in form_urlencoded::parse(query.as_bytes()) {
        if name == "ms" || name == "fail_rate" {
            return Err(BadParam {
                param: name.into_owned(),
                error: "request overrides are disabled (upstream.allow_request_overrides)".into(),
            });
        }
    }
    Ok(())
}

pub async fn upstream(req: HttpRequest, state: web::Data<UpstreamState>) -> HttpResponse {
    let checked = if state.allow_request_overrides {
        Ok(())
    } else {
        refuse_overrides(req.query_string())
    };
    let (ms, fail_rate) = match checked
        .and_then(|()| upstream_params(req.query_string(), state.latency_ms, state.fail_rate))
    {
        Ok(p) => p,
        Err(bad) => {
            return HttpResponse::BadRequest().json(json!({"error": bad.error, "param": bad.param}))
        }
    };
    let arrived = Instant::now();
    let deadline = req
        .headers()
        .get(BUDGET_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|ms| arrived + Duration::from_millis(ms) + DEADLINE_SLACK);
    // Waits in FIFO order for a slot, held until the answer; the semaphore is never closed.
    let _slot = match (&state.slots, deadline) {
        (None, _) => None,
        (Some(slots), None) => slots.clone().acquire_owned().await.ok(),
        (Some(slots), Some(deadline)) => {
            let wait = slots.clone().acquire_owned();
            match tokio::time::timeout_at(deadline.into(), wait).await {
                Ok(slot) => slot.ok(),
                Err(_) => return deadline_exceeded(),
            }
        }
    };
    if chance(state.reset_rate) {
        return HttpResponse::Ok().body(Reset);
    }
    let work = if chance(state.hang_rate) {
        HANG
    } else {
        state.latency(ms)
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
    if chance(fail_rate) {
        HttpResponse::build(state.fail_status).json(json!({"error": "injected failure"}))
    } else {
        HttpResponse::Ok().json(json!({"ok": true, "ms": ms}))
    }
}

fn deadline_exceeded() -> HttpResponse {
    HttpResponse::GatewayTimeout().json(json!({"error": "deadline exceeded"}))
}

/// A body that announces 64 bytes and fails before the first: actix closes the connection
/// mid-response, as a dependency that resets would.
struct Reset;

impl MessageBody for Reset {
    type Error = io::Error;

    fn size(&self) -> BodySize {
        BodySize::Sized(64)
    }

    fn poll_next(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Poll::Ready(Some(Err(io::Error::other("injected reset"))))
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/upstream")
            .route(web::get().to(upstream))
            .default_service(web::to(routes::method_not_allowed)),
    );
}
