//! How one call to the dependency ended, read once: [`CallResult::read`] is the only place that
//! interprets an [`UpstreamError`]. The breaker's verdict, the adaptive limiter's sample, the
//! metric labels, whether `retry.on` retries it, and the caller's answer are all derived from it.

use std::time::Duration;

use super::metrics::UpstreamResult;
use super::outcome::Outcome;
use super::upstream_call::UpstreamError;
use crate::admission::Priority;
use crate::breaker::Verdict;
use crate::retry::{AttemptResult, RetryOn};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallResult {
    /// 2xx and the whole body in time, with the latency the dependency reports, if it does.
    Ok { reported_ms: Option<u64> },
    /// The dependency answered this non-2xx status; on a 429 or 503, with its `Retry-After`.
    Status {
        code: u16,
        retry_after: Option<Duration>,
    },
    /// Refused, reset, invalid HTTP, body too large or cut short.
    Transport,
    /// The deadline passed (connecting included). `full`: the timeout in force was the full one,
    /// not a caller's own shorter deadline.
    Timeout { full: bool },
}

impl CallResult {
    /// Reads a call's result; `full_timeout` says whether it had the whole configured timeout.
    pub(crate) fn read(result: Result<Option<u64>, UpstreamError>, full_timeout: bool) -> Self {
        match result {
            Ok(reported_ms) => CallResult::Ok { reported_ms },
            Err(UpstreamError::Status { code, retry_after }) => {
                CallResult::Status { code, retry_after }
            }
            Err(UpstreamError::Transport(why)) => {
                log::debug!("upstream transport failure: {why}");
                CallResult::Transport
            }
            Err(UpstreamError::Timeout) => CallResult::Timeout { full: full_timeout },
        }
    }

    pub(crate) fn succeeded(self) -> bool {
        matches!(self, CallResult::Ok { .. })
    }

    /// For the breaker. A timeout counts against the dependency only when the timeout in force
    /// was the full one: a caller's own shorter deadline must not open the breaker for everyone.
    pub(crate) fn verdict(self) -> Verdict {
        match self {
            CallResult::Ok { .. } => Verdict::Success,
            CallResult::Status { .. }
            | CallResult::Transport
            | CallResult::Timeout { full: true } => Verdict::Failure,
            CallResult::Timeout { full: false } => Verdict::Neutral,
        }
    }

    /// For the adaptive limiter: `Some(timed_out)` when the call says something about the
    /// dependency's latency. A refused or broken connection says nothing about how loaded it is,
    /// nor does a caller's own short deadline.
    pub(crate) fn latency_sample(self) -> Option<bool> {
        match self {
            CallResult::Ok { .. } | CallResult::Status { .. } => Some(false),
            CallResult::Timeout { full: true } => Some(true),
            CallResult::Timeout { full: false } | CallResult::Transport => None,
        }
    }

    /// The `result` label of `upstream_requests_total`.
    pub(crate) fn label(self) -> UpstreamResult {
        match self {
            CallResult::Ok { .. } => UpstreamResult::Ok,
            CallResult::Status { .. } => UpstreamResult::Error,
            CallResult::Transport => UpstreamResult::Transport,
            CallResult::Timeout { .. } => UpstreamResult::Timeout,
        }
    }

    /// The `result` label of `upstream_attempts_total`.
    pub(crate) fn attempt_result(self) -> AttemptResult {
        match self {
            CallResult::Ok { .. } => AttemptResult::Ok,
            CallResult::Status { .. } => AttemptResult::Error,
            CallResult::Transport => AttemptResult::Transport,
            CallResult::Timeout { .. } => AttemptResult::Timeout,
        }
    }

    /// Whether `retry.on` lets a retry follow it; only 5xx statuses may be retried.
    pub(crate) fn retryable(self, on: RetryOn) -> bool {
        match self {
            CallResult::Ok { .. } => false,
            CallResult::Status { code, .. } => on.status_5xx && (500..600).contains(&code),
            CallResult::Transport => on.transport,
            CallResult::Timeout { .. } => on.timeout,
        }
    }

    /// How long the dependency asked to be left alone (`Retry-After` on a 429 or 503).
    pub(crate) fn retry_after(self) -> Option<Duration> {
        match self {
            CallResult::Status { retry_after, .. } => retry_after,
            _ => None,
        }
    }

    /// The caller's answer; `asked_ms` is the latency the caller asked for, shown when the
    /// dependency reports none.
    pub(crate) fn outcome(self, priority: Priority, asked_ms: Option<u64>) -> Outcome {
        match self {
            CallResult::Ok { reported_ms } => Outcome::Ok {
                ms: reported_ms.or(asked_ms),
                priority,
            },
            CallResult::Status { code, .. } => Outcome::UpstreamStatus(code),
            CallResult::Transport => Outcome::UpstreamTransport,
            CallResult::Timeout { .. } => Outcome::UpstreamTimeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_result_is_read_once_for_breaker_limiter_metrics_and_caller() {
        let p = Priority::Normal;
        // (result, full timeout) -> verdict, latency sample, label, status
        let cases = [
            (Ok(Some(7)), true, Verdict::Success, Some(false), "ok", 200),
            (
                Err(UpstreamError::Status {
                    code: 503,
                    retry_after: None,
                }),
                true,
                Verdict::Failure,
                Some(false),
                "error",
                502,
            ),
            (
                Err(UpstreamError::Timeout),
                true,
                Verdict::Failure,
                Some(true),
                "timeout",
                504,
            ),
            // A caller's own short deadline: a 504 for it, nothing for anyone else.
            (
                Err(UpstreamError::Timeout),
                false,
                Verdict::Neutral,
                None,
                "timeout",
                504,
            ),
            (
                Err(UpstreamError::Transport("reset".into())),
                true,
                Verdict::Failure,
                None,
                "transport",
                502,
            ),
        ];
        for (result, full, verdict, sample, label, status) in cases {
            let what = format!("{result:?}, full timeout {full}");
            let call = CallResult::read(result, full);
            assert_eq!(call.verdict(), verdict, "{what}");
            assert_eq!(call.latency_sample(), sample, "{what}");
            assert_eq!(call.label().label(), label, "{what}");
            assert_eq!(call.outcome(p, None).status().as_u16(), status, "{what}");
            assert_eq!(call.succeeded(), status == 200, "{what}");
        }
    }

    #[test]
    fn the_answer_shows_the_reported_latency_else_the_asked_one() {
        let ok = |reported_ms| CallResult::Ok { reported_ms };
        let p = Priority::High;
        let ms = |o: Outcome| match o {
            Outcome::Ok { ms, .. } => ms,
            other => panic!("{other:?}"),
        };
        assert_eq!(ms(ok(Some(7)).outcome(p, Some(9))), Some(7));
        assert_eq!(ms(ok(None).outcome(p, Some(9))), Some(9));
        assert_eq!(ms(ok(None).outcome(p, None)), None);
    }

    #[test]
    fn retry_on_names_which_failures_may_be_retried() {
        let all = RetryOn {
            transport: true,
            status_5xx: true,
            timeout: true,
        };
        assert!(!CallResult::Ok { reported_ms: None }.retryable(all));
        let status = |code| CallResult::Status {
            code,
            retry_after: None,
        };
        assert!(status(503).retryable(all));
        assert!(!status(429).retryable(all), "only 5xx");
        assert!(CallResult::Transport.retryable(all));
        assert!(CallResult::Timeout { full: false }.retryable(all));
        let none = RetryOn::default();
        for call in [
            status(500),
            CallResult::Transport,
            CallResult::Timeout { full: true },
        ] {
            assert!(!call.retryable(none), "{call:?}");
        }
    }

    #[test]
    fn retry_after_comes_only_from_a_status_answer() {
        let wait = Some(Duration::from_secs(2));
        let answered = CallResult::read(
            Err(UpstreamError::Status {
                code: 503,
                retry_after: wait,
            }),
            true,
        );
        assert_eq!(answered.retry_after(), wait);
        assert_eq!(answered.verdict(), Verdict::Failure);
        assert_eq!(CallResult::Transport.retry_after(), None);
        assert_eq!(CallResult::Ok { reported_ms: None }.retry_after(), None);
    }
}
