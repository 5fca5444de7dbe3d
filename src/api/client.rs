//! `GET /client`: validate → admit → breaker → upstream call with timeout, in that order.

use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};

use super::outcome::Outcome;
use super::params::ClientParams;
use super::upstream_call::{self, UpstreamError, UpstreamRequest};
use super::ApiState;
use crate::breaker::Verdict;
use crate::metrics::ClientClosedGuard;
use crate::upstream::refuse_overrides;

pub async fn client(
    req: HttpRequest,
    state: web::Data<ApiState>,
    http: web::Data<awc::Client>,
) -> HttpResponse {
    let closed = ClientClosedGuard::new(&state.metrics, "GET", "/client");
    let outcome = run(&req, &state, &http).await;
    closed.answered();
    outcome.into_response()
}

/// If the client goes away, actix drops this future wherever it is waiting: the permit and the
/// breaker pass are dropped with it (slot released, probe freed) and no result is counted.
async fn run(req: &HttpRequest, state: &ApiState, http: &awc::Client) -> Outcome {
    if !state.allow_request_overrides {
        if let Err(bad) = refuse_overrides(req.query_string()) {
            return Outcome::Invalid(bad);
        }
    }
    let mut params = match ClientParams::from_request(req, state.defaults) {
        Ok(p) => p,
        Err(bad) => return Outcome::Invalid(bad),
    };
    // Too little time left to be worth a slot or a call: the caller will have given up.
    if params.budget.is_some_and(|b| b < state.defaults.min_budget) {
        return Outcome::DeadlineTooShort;
    }
    // While the breaker is open, admission is decided without taking a slot: the call will not
    // run, and a slot held for no time changes nothing. This keeps the actor's mailbox off the
    // fail-fast path. The order of checks (admission, then breaker) is the same.
    if let Some(retry_after) = state.breaker.refusing() {
        if let Err(shed) = state.admit_without_slot("/client", params.priority) {
            return shed;
        }
        return breaker_open(state, retry_after);
    }
    let asked = Instant::now();
    let permit = match state.admit("/client", params.priority).await {
        Ok(permit) => permit,
        Err(shed) => return shed,
    };
    // Time spent in the admission backlog comes out of the caller's budget.
    if params
        .spend(asked.elapsed(), state.defaults)
        .is_some_and(|left| left.is_zero() || left < state.defaults.min_budget)
    {
        return Outcome::DeadlineTooShort;
    }
    let pass = match state.breaker.allow().await {
        Ok(pass) => pass,
        Err(rejected) => return breaker_open(state, rejected.retry_after),
    };

    let started = Instant::now();
    let result = upstream_call::call(
        http,
        &UpstreamRequest {
            base_url: &state.upstream_url,
            ms: params.ms,
            fail_rate: params.fail_rate,
            timeout: params.timeout,
            max_body_bytes: state.max_upstream_body_bytes,
        },
    )
    .await;
    let elapsed = started.elapsed();

    pass.finish(
        match &result {
            Ok(_) => Verdict::Success,
            // A caller's own shorter deadline must not open the breaker for everyone else.
            Err(UpstreamError::Timeout) if !params.full_timeout => Verdict::Neutral,
            Err(_) => Verdict::Failure,
        },
        elapsed,
    );
    match &result {
        Ok(_) | Err(UpstreamError::Status(_)) => state.admission.sample(started, elapsed, false),
        Err(UpstreamError::Timeout) if params.full_timeout => {
            state.admission.sample(started, elapsed, true)
        }
        // A caller's own short deadline says little about the dependency's latency, and a
        // refused or broken connection nothing about how loaded it is.
        Err(UpstreamError::Timeout) => {}
        Err(UpstreamError::Transport(why)) => log::debug!("upstream transport failure: {why}"),
    }
    let outcome = match result {
        Ok(reported_ms) => Outcome::Ok {
            ms: reported_ms.or(params.ms),
            priority: params.priority,
        },
        Err(e) => Outcome::from(e),
    };
    state.record_upstream(&outcome, Some(elapsed));
    drop(permit);
    outcome
}

fn breaker_open(state: &ApiState, retry_after: Duration) -> Outcome {
    let outcome = Outcome::BreakerOpen { retry_after };
    state.record_upstream(&outcome, None);
    outcome
}
