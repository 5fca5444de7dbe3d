//! The one place that maps how a request ended to its HTTP status, `Retry-After` and JSON body.

use std::time::Duration;

use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde::Serialize;
use serde_json::json;

use crate::admission::{Priority, Reason, Refusal};
use crate::routes::JSON;
use crate::wire::BadParam;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// Done: the upstream answered 2xx in time (`/client`), or the burn ended (`/work`).
    Ok {
        ms: Option<u64>,
        priority: Priority,
    },
    Invalid(BadParam),
    Shed {
        priority: Priority,
        refusal: Refusal,
    },
    BreakerOpen {
        retry_after: Duration,
    },
    /// Refused locally by the throttling policy (`breaker.mode = "throttle"`).
    Throttled,
    UpstreamStatus(u16),
    UpstreamTransport,
    UpstreamTimeout,
    /// The caller's remaining budget was below `timeouts.min_budget_ms`: not started.
    DeadlineTooShort,
    /// The process is shutting down and can no longer run the work.
    Unavailable,
}

/// Whole seconds, rounded up, at least 1.
fn retry_after_seconds(wait: Duration) -> u64 {
    u64::try_from(wait.as_millis().div_ceil(1000))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// `{"ms":…,"ok":true,"priority":…}`: the keys in the order `json!` gave them (sorted).
#[derive(Serialize)]
struct OkBody {
    ms: Option<u64>,
    ok: bool,
    priority: &'static str,
}

/// The 429 body: `{"error":"overloaded","priority":…,"reason":…}`, fixed text per pair.
fn shed_body(priority: Priority, reason: Reason) -> &'static str {
    macro_rules! bodies {
        ($($p:ident $ps:literal),*) => {
            match (priority, reason) {
                $(
                    (Priority::$p, Reason::Capacity) => concat!(r#"{"error":"overloaded","priority":""#, $ps, r#"","reason":"capacity"}"#),
                    (Priority::$p, Reason::TenantShare) => concat!(r#"{"error":"overloaded","priority":""#, $ps, r#"","reason":"tenant_share"}"#),
                    (Priority::$p, Reason::TenantQuota) => concat!(r#"{"error":"overloaded","priority":""#, $ps, r#"","reason":"tenant_quota"}"#),
                    (Priority::$p, Reason::QueueTimeout) => concat!(r#"{"error":"overloaded","priority":""#, $ps, r#"","reason":"queue_timeout"}"#),
                )*
            }
        };
    }
    bodies!(High "high", Normal "normal", Low "low")
}

impl Outcome {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Outcome::Ok { .. } => StatusCode::OK,
            Outcome::Invalid(_) => StatusCode::BAD_REQUEST,
            Outcome::Shed { .. } => StatusCode::TOO_MANY_REQUESTS,
            Outcome::BreakerOpen { .. } | Outcome::Throttled | Outcome::Unavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Outcome::UpstreamStatus(_) | Outcome::UpstreamTransport => StatusCode::BAD_GATEWAY,
            Outcome::UpstreamTimeout | Outcome::DeadlineTooShort => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    pub(crate) fn into_response(self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status());
        let body = match self {
            // The admitted answer, serialized straight from a struct (no map to build first).
            Outcome::Ok { ms, priority } => {
                return res.json(OkBody {
                    ms,
                    ok: true,
                    priority: priority.as_str(),
                })
            }
            Outcome::Invalid(bad) => json!({"error": bad.error, "param": bad.param}),
            // The fail-fast answers are fixed text: no allocation on the paths that must be cheapest.
            Outcome::Shed { priority, refusal } => {
                if refusal.retry_after <= 1 {
                    res.insert_header((RETRY_AFTER, HeaderValue::from_static("1")));
                } else {
                    res.insert_header((RETRY_AFTER, refusal.retry_after));
                }
                return res
                    .insert_header(JSON)
                    .body(shed_body(priority, refusal.reason));
            }
            Outcome::BreakerOpen { retry_after } => {
                return res
                    .insert_header((RETRY_AFTER, retry_after_seconds(retry_after)))
                    .insert_header(JSON)
                    .body(r#"{"error":"circuit open"}"#);
            }
            Outcome::Throttled => {
                return res
                    .insert_header((RETRY_AFTER, HeaderValue::from_static("1")))
                    .insert_header(JSON)
                    .body(r#"{"error":"throttled"}"#);
            }
            Outcome::UpstreamStatus(code) => {
                json!({"error": "upstream error", "upstream_status": code})
            }
            Outcome::UpstreamTransport => json!({"error": "upstream unavailable"}),
            Outcome::UpstreamTimeout => json!({"error": "upstream timeout"}),
            Outcome::DeadlineTooShort => json!({"error": "deadline exceeded"}),
            Outcome::Unavailable => json!({"error": "shutting down"}),
        };
        res.json(body)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_admitted_answer_keeps_its_bytes() {
        let body = |ms| {
            let res = Outcome::Ok {
                ms,
                priority: Priority::High,
            }
            .into_response();
            let bytes = actix_web::body::to_bytes(res.into_body());
            futures_util::FutureExt::now_or_never(bytes)
                .and_then(Result::ok)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        assert_eq!(
            body(Some(7)).as_deref(),
            Some(r#"{"ms":7,"ok":true,"priority":"high"}"#)
        );
        assert_eq!(
            body(None).as_deref(),
            Some(r#"{"ms":null,"ok":true,"priority":"high"}"#)
        );
    }

    #[test]
    fn every_shed_body_is_json_with_its_priority_and_reason() {
        for p in Priority::ALL {
            for r in Reason::ALL {
                let body: serde_json::Value = serde_json::from_str(shed_body(p, r)).unwrap();
                assert_eq!(
                    body,
                    json!({"error": "overloaded", "priority": p.as_str(), "reason": r.as_str()})
                );
            }
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_of_at_least_one() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_seconds(Duration::from_millis(9500)), 10);
    }

    #[test]
    fn every_outcome_has_its_documented_status() {
        let p = Priority::Normal;
        let table = [
            (
                Outcome::Ok {
                    ms: Some(1),
                    priority: p,
                },
                200,
            ),
            (
                Outcome::Invalid(BadParam {
                    param: "ms".into(),
                    error: "x".into(),
                }),
                400,
            ),
            (
                Outcome::Shed {
                    priority: p,
                    refusal: Refusal::of(Reason::Capacity),
                },
                429,
            ),
            (
                Outcome::BreakerOpen {
                    retry_after: Duration::from_secs(3),
                },
                503,
            ),
            (Outcome::UpstreamStatus(503), 502),
            (Outcome::UpstreamTransport, 502),
            (Outcome::UpstreamTimeout, 504),
            (Outcome::DeadlineTooShort, 504),
            (Outcome::Unavailable, 503),
        ];
        for (outcome, status) in table {
            assert_eq!(outcome.status().as_u16(), status, "{outcome:?}");
        }
    }
}
