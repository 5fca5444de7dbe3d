//! `GET /client`: validate → admit → breaker → upstream call with timeout, in that order.

use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};

use super::attempts::{self, Attempted};
use super::metrics::UpstreamResult;
use super::outcome::Outcome;
use super::params::ClientParams;
use super::{ApiState, CLIENT};
use crate::breaker::Rejected;
use crate::metrics::ClientClosedGuard;

pub(crate) async fn client(
    req: HttpRequest,
    state: web::Data<ApiState>,
    http: web::Data<awc::Client>,
) -> HttpResponse {
    let closed = ClientClosedGuard::new(&state.metrics, "GET", CLIENT);
    let outcome = run(&req, &state, &http).await;
    closed.answered();
    outcome.into_response()
}

/// If the client goes away, actix drops this future wherever it is waiting: the permit and the
/// breaker pass are dropped with it (slot released, probe freed) and no result is counted.
async fn run(req: &HttpRequest, state: &ApiState, http: &awc::Client) -> Outcome {
    if let Err(bad) = state.overrides.check(req.query_string()) {
        return Outcome::Invalid(bad);
    }
    let mut params = match ClientParams::from_request(req, state.timeouts) {
        Ok(p) => p,
        Err(bad) => return Outcome::Invalid(bad),
    };
    let tenant = match state.tenant(req) {
        Ok(tenant) => tenant,
        Err(bad) => return bad,
    };
    // Too little time left to be worth a slot or a call: the caller will have given up.
    if params.budget.is_some_and(|b| b < state.timeouts.min_budget) {
        return Outcome::DeadlineTooShort;
    }
    // While the breaker is open, admission is decided without taking a slot: the call will not
    // run, and a slot held for no time changes nothing. This keeps the actor's mailbox off the
    // fail-fast path. The order of checks (admission, then breaker) is the same.
    if let Some(retry_after) = state.breaker.refusing() {
        if let Err(shed) = state.admit_without_slot(CLIENT, params.priority) {
            return shed;
        }
        return refused(state, Rejected::open(retry_after));
    }
    let asked = Instant::now();
    let permit = match state.admit(CLIENT, params.priority, tenant).await {
        Ok(permit) => permit,
        Err(shed) => return shed,
    };
    // Time spent in the admission backlog comes out of the caller's budget.
    if params
        .spend(asked.elapsed(), state.timeouts)
        .is_some_and(|left| left.is_zero() || left < state.timeouts.min_budget)
    {
        return Outcome::DeadlineTooShort;
    }
    let attempted = attempts::call(state, http, &params).await;
    drop(permit);
    match attempted {
        Attempted::Called(call) => call.outcome(params.priority, params.overrides.ms),
        Attempted::Refused(rejected) => refused(state, rejected),
    }
}

/// A `/client` refused by the breaker, before or at its first attempt: counted as `breaker_open`,
/// or as `throttled` when the throttling policy's draw refused it.
fn refused(state: &ApiState, rejected: Rejected) -> Outcome {
    if rejected.throttled {
        state
            .upstream_metrics
            .record(UpstreamResult::Throttled, None);
        return Outcome::Throttled;
    }
    state
        .upstream_metrics
        .record(UpstreamResult::BreakerOpen, None);
    Outcome::BreakerOpen {
        retry_after: rejected.retry_after,
    }
}
