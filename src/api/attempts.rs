//! The calls one `/client` request makes to its dependency, once it holds its admission slot: one
//! attempt, or with `retry.*` on, retries after failures and a hedge after a slow first attempt,
//! each through the breaker, all within the request's own timeout and under the one slot it holds.

use std::pin::pin;
use std::time::{Duration, Instant};

use super::call_result::CallResult;
use super::params::ClientParams;
use super::upstream_call::{self, UpstreamRequest};
use super::ApiState;
use crate::breaker::Rejected;
use crate::retry::{full_jitter, AttemptKind, AttemptResult, Retries};

/// How a request's attempts ended.
pub(super) enum Attempted {
    /// The call the caller's answer comes from: the last one made, or a hedge race's winner.
    Called(CallResult),
    /// The breaker refused the first attempt (open, or its throttling policy's draw).
    Refused(Rejected),
}

impl Attempted {
    fn succeeded(&self) -> bool {
        matches!(self, Attempted::Called(call) if call.succeeded())
    }

    /// Of two attempts that did not succeed, the one to answer with: an answer over a refusal.
    fn or(self, other: Attempted) -> Attempted {
        match self {
            Attempted::Refused(_) => other,
            called => called,
        }
    }
}

/// The timing of a request's attempts: its deadline and what an attempt gets of it.
struct Timing {
    /// The request's timeout in force, from when its first attempt was asked for.
    timeout: Duration,
    deadline: Instant,
    /// `retry.per_try_timeout_ms`, if set (and retries are on).
    per_try: Option<Duration>,
    /// Whether the caller left the request its full timeout (no shorter `timeout_ms` or budget).
    caller_full: bool,
}

impl Timing {
    fn new(timeout: Duration, per_try: Option<Duration>, caller_full: bool) -> Self {
        Self {
            timeout,
            deadline: Instant::now() + timeout,
            per_try,
            caller_full,
        }
    }

    /// An attempt's timeout starting `now`, and whether it is a full one: only an attempt that had
    /// all the time configuration gives an attempt may count a timeout against the breaker. The
    /// first attempt without a per-try timeout gets the request's whole timeout, as when retries
    /// are off; later ones get what is left, which is never a full one.
    fn attempt(&self, now: Instant, kind: AttemptKind) -> (Duration, bool) {
        let left = self.deadline.saturating_duration_since(now);
        match (self.per_try, kind) {
            (Some(per_try), _) => (per_try.min(left), self.caller_full && per_try <= left),
            (None, AttemptKind::First) => (self.timeout, self.caller_full),
            (None, AttemptKind::Retry | AttemptKind::Hedge) => (left, false),
        }
    }
}

/// Calls the dependency for a request already admitted and says how its attempts ended.
pub(super) async fn call(state: &ApiState, http: &awc::Client, params: &ClientParams) -> Attempted {
    let retries = &state.retries;
    let config = retries.config;
    let timing = Timing::new(
        params.timeout,
        config.per_try_timeout.filter(|_| config.enabled()),
        params.full_timeout,
    );
    if !config.enabled() {
        return attempt(state, http, params, AttemptKind::First, &timing).await;
    }
    retries.deposit();
    let first = match config.hedge_after {
        Some(after) => hedged(state, http, params, &timing, after).await,
        None => attempt(state, http, params, AttemptKind::First, &timing).await,
    };
    let Attempted::Called(mut call) = first else {
        return first;
    };
    let mut made = 1;
    while !call.succeeded() {
        if made >= config.max_attempts
            || !call.retryable(config.on)
            || state.breaker.refusing().is_some()
        {
            break;
        }
        // Never sooner than the dependency asked (`Retry-After` on a 429 or 503); if the deadline
        // does not reach that far, the retry is not sent at all.
        let wait = full_jitter(
            made - 1,
            config.backoff_base,
            config.backoff_max,
            rand::random(),
        )
        .max(call.retry_after().unwrap_or_default());
        if !worth_another(state, &timing, wait) || !retries.withdraw() {
            break;
        }
        actix_web::rt::time::sleep(wait).await;
        made += 1;
        match attempt(state, http, params, AttemptKind::Retry, &timing).await {
            Attempted::Called(next) => call = next,
            // Opened (or throttled) meanwhile: the caller gets the last answer it would have had.
            Attempted::Refused(_) => break,
        }
    }
    Attempted::Called(call)
}

/// Whether, after waiting `wait`, the request has time left for a useful attempt: at least
/// `timeouts.min_budget_ms`, and never nothing.
fn worth_another(state: &ApiState, timing: &Timing, wait: Duration) -> bool {
    let left = timing
        .deadline
        .saturating_duration_since(Instant::now() + wait);
    left >= state.timeouts.min_budget.max(Duration::from_millis(1))
}

/// The first attempt, and a hedge if it has not answered after `after`: the first success wins
/// and the other attempt is dropped (its connection closed, so the dependency stops its work).
async fn hedged(
    state: &ApiState,
    http: &awc::Client,
    params: &ClientParams,
    timing: &Timing,
    after: Duration,
) -> Attempted {
    let mut first = pin!(attempt(state, http, params, AttemptKind::First, timing));
    tokio::select! {
        answered = &mut first => return answered,
        () = actix_web::rt::time::sleep(after) => {}
    }
    if state.breaker.refusing().is_some()
        || !worth_another(state, timing, Duration::ZERO)
        || !state.retries.withdraw()
    {
        return first.await;
    }
    let mut hedge = pin!(attempt(state, http, params, AttemptKind::Hedge, timing));
    tokio::select! {
        a = &mut first => if a.succeeded() { a } else { hedge.await.or(a) },
        b = &mut hedge => if b.succeeded() { b } else { first.await.or(b) },
    }
}

/// One attempt through the breaker, counted when it ends (or as `cancelled` if it is dropped).
async fn attempt(
    state: &ApiState,
    http: &awc::Client,
    params: &ClientParams,
    kind: AttemptKind,
    timing: &Timing,
) -> Attempted {
    // A retry follows its own failed attempt, whose verdict may be the one that opens the breaker:
    // it asks the actor, which has counted that verdict by then. Other attempts read the gate.
    let allowed = match kind {
        AttemptKind::Retry => state.breaker.allow_after_verdicts().await,
        AttemptKind::First | AttemptKind::Hedge => state.breaker.allow().await,
    };
    let pass = match allowed {
        Ok(pass) => pass,
        Err(rejected) => return Attempted::Refused(rejected),
    };
    let (timeout, full) = timing.attempt(Instant::now(), kind);
    let counted = Counted::new(&state.retries, kind);
    let started = Instant::now();
    let result = upstream_call::call(
        http,
        &UpstreamRequest {
            base_url: &state.api.upstream_url,
            overrides: params.overrides,
            timeout,
            max_body_bytes: state.api.max_upstream_body_bytes,
            priority: params.priority,
        },
    )
    .await;
    let elapsed = started.elapsed();
    let call = CallResult::read(result, full);
    pass.finish(call.verdict(), elapsed, call.retry_after());
    if let Some(timed_out) = call.latency_sample() {
        state.admission.sample(started, elapsed, timed_out);
    }
    state.upstream_metrics.record(call.label(), Some(elapsed));
    counted.ended(call.attempt_result());
    Attempted::Called(call)
}

/// Counts an attempt in `upstream_attempts_total` exactly once: with its result, or as
/// `cancelled` when it is dropped first (a hedge race's loser, or the caller went away).
struct Counted<'a> {
    retries: &'a Retries,
    kind: AttemptKind,
    ended: bool,
}

impl<'a> Counted<'a> {
    fn new(retries: &'a Retries, kind: AttemptKind) -> Self {
        Self {
            retries,
            kind,
            ended: false,
        }
    }

    fn ended(mut self, result: AttemptResult) {
        self.ended = true;
        self.retries.metrics.attempt(self.kind, result);
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.retries
                .metrics
                .attempt(self.kind, AttemptResult::Cancelled);
        }
    }
}
