//! `GET /client`: validate → admit → breaker → upstream call with timeout, in that order.

use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};

use super::outcome::Outcome;
use super::params::ClientParams;
use super::upstream_call::UpstreamError;
use super::{attempts, ApiState, CLIENT};
use crate::breaker::Verdict;
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
        if let Err(shed) = state.admit_without_slot(CLIENT, params.priority) {
            return shed;
        }
        return super::breaker_open(state, retry_after);
    }
    let asked = Instant::now();
    let permit = match state.admit(CLIENT, params.priority).await {
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
    let outcome = attempts::call(state, http, &params).await;
    drop(permit);
    outcome
}

/// What one upstream call's result means to each party that learns of it.
pub(super) struct Judged {
    /// For the breaker.
    pub verdict: Verdict,
    /// For the adaptive limiter: `Some(timed_out)` when the call says something about the
    /// dependency's latency, `None` when it says nothing.
    pub latency_sample: Option<bool>,
    /// For the caller and the metrics.
    pub outcome: Outcome,
}

/// The one rule for reading a result. A timeout counts against the dependency only when the
/// timeout in force was the full one (`full_timeout`): a caller's own shorter deadline must neither open the
/// breaker for everyone else nor teach the limiter a latency. A refused or broken connection is
/// a failure to the breaker but says nothing about how loaded the dependency is.
pub(super) fn judge(
    result: Result<Option<u64>, UpstreamError>,
    params: &ClientParams,
    full_timeout: bool,
) -> Judged {
    let (verdict, latency_sample) = match &result {
        Ok(_) => (Verdict::Success, Some(false)),
        Err(UpstreamError::Status(_)) => (Verdict::Failure, Some(false)),
        Err(UpstreamError::Timeout) if full_timeout => (Verdict::Failure, Some(true)),
        Err(UpstreamError::Timeout) => (Verdict::Neutral, None),
        Err(UpstreamError::Transport(why)) => {
            log::debug!("upstream transport failure: {why}");
            (Verdict::Failure, None)
        }
    };
    let outcome = match result {
        Ok(reported_ms) => Outcome::Ok {
            ms: reported_ms.or(params.overrides.ms),
            priority: params.priority,
        },
        Err(e) => Outcome::from(e),
    };
    Judged {
        verdict,
        latency_sample,
        outcome,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::api::params::ClientDefaults;
    use actix_web::http::header::HeaderMap;
    use std::time::Duration;

    fn params(query: &str) -> ClientParams {
        let defaults = ClientDefaults {
            timeout: Duration::from_millis(200),
            min_budget: Duration::ZERO,
        };
        ClientParams::parse(query, &HeaderMap::new(), defaults).unwrap()
    }

    #[test]
    fn each_result_is_judged_once_for_breaker_limiter_and_caller() {
        let full = params("");
        let short = params("timeout_ms=50");
        let cases = [
            (Ok(Some(7)), &full, Verdict::Success, Some(false), 200),
            (
                Err(UpstreamError::Status(503)),
                &full,
                Verdict::Failure,
                Some(false),
                502,
            ),
            (
                Err(UpstreamError::Timeout),
                &full,
                Verdict::Failure,
                Some(true),
                504,
            ),
            // A caller's own short deadline: a 504 for it, nothing for anyone else.
            (
                Err(UpstreamError::Timeout),
                &short,
                Verdict::Neutral,
                None,
                504,
            ),
            (
                Err(UpstreamError::Transport("reset".into())),
                &full,
                Verdict::Failure,
                None,
                502,
            ),
        ];
        for (result, p, verdict, sample, status) in cases {
            let what = format!("{result:?}, full timeout {}", p.full_timeout);
            let judged = judge(result, p, p.full_timeout);
            assert_eq!(judged.verdict, verdict, "{what}");
            assert_eq!(judged.latency_sample, sample, "{what}");
            assert_eq!(judged.outcome.status().as_u16(), status, "{what}");
        }
    }
}
