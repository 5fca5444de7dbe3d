//! One call to the dependency over awc: connect timeout from the client's connector, one deadline
//! over sending, the response head and the whole body, and a cap on the body's size.

use std::time::Duration;

use awc::error::{ConnectError, PayloadError, SendRequestError};
use awc::http::header::HeaderValue;
use serde::Deserialize;

use crate::admission::Priority;
use crate::wire::{Overrides, BUDGET_HEADER, PRIORITY_HEADER};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// A non-2xx answer; `retry_after` is its `Retry-After` (whole seconds) on a 429 or 503.
    #[error("upstream answered {code}")]
    Status {
        code: u16,
        retry_after: Option<Duration>,
    },
    /// Refused, reset, invalid HTTP, body too large or cut short. The text is for logs only.
    #[error("upstream transport failure: {0}")]
    Transport(String),
    /// The deadline passed, connecting included.
    #[error("upstream timed out")]
    Timeout,
}

/// What to ask of the dependency.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamRequest<'a> {
    /// Base URL without a trailing slash.
    pub base_url: &'a str,
    /// Passed on as query parameters, only those the caller gave.
    pub overrides: Overrides,
    pub timeout: Duration,
    pub max_body_bytes: usize,
    /// The class the request was admitted under, passed on as `X-Priority` (never raised: it
    /// is the caller's own). Normal, the dependency's default, is not sent.
    pub priority: Priority,
}

impl UpstreamRequest<'_> {
    fn url(&self) -> String {
        let mut url = String::with_capacity(self.base_url.len() + 48);
        url.push_str(self.base_url);
        url.push_str("/upstream");
        self.overrides.write_query(&mut url);
        url
    }
}

#[derive(Deserialize)]
struct UpstreamBody {
    ms: Option<u64>,
}

/// The awc client of one worker. Its own request timeout is off: [`call`]'s deadline is the one
/// that counts, so a timeout is never mistaken for a transport error.
pub(crate) fn client(connect_timeout: Duration) -> awc::Client {
    awc::Client::builder()
        .connector(awc::Connector::new().timeout(connect_timeout).limit(0))
        .disable_timeout()
        .disable_redirects()
        .finish()
}

/// Calls `/upstream`. On success returns the latency the upstream reports, if it does.
pub(crate) async fn call(
    client: &awc::Client,
    req: &UpstreamRequest<'_>,
) -> Result<Option<u64>, UpstreamError> {
    let exchange = async {
        let budget = u64::try_from(req.timeout.as_millis()).unwrap_or(u64::MAX);
        let mut call = client
            .get(req.url())
            .insert_header((BUDGET_HEADER, HeaderValue::from(budget)));
        if req.priority != Priority::Normal {
            call = call.insert_header((
                PRIORITY_HEADER,
                HeaderValue::from_static(req.priority.as_str()),
            ));
        }
        let mut res = call.send().await.map_err(from_send_error)?;
        let status = res.status();
        if !status.is_success() {
            // The verdict is known from the head; a stalled error body must not turn it into a
            // timeout. (awc closes a connection whose body was not read.)
            let retry_after = matches!(status.as_u16(), 429 | 503)
                .then(|| retry_after(res.headers().get(awc::http::header::RETRY_AFTER)))
                .flatten();
            return Err(UpstreamError::Status {
                code: status.as_u16(),
                retry_after,
            });
        }
        let announced = res
            .headers()
            .get(awc::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let body = res
            .body()
            .limit(req.max_body_bytes)
            .await
            .map_err(from_payload_error)?;
        // awc reports a connection closed mid-body as a clean end of the body: compare with the
        // announced length. (A chunked body cut short cannot be told apart this way.)
        if let Some(announced) = announced.filter(|n| *n != body.len()) {
            return Err(UpstreamError::Transport(format!(
                "body cut short: {} of {announced} bytes",
                body.len()
            )));
        }
        Ok(serde_json::from_slice::<UpstreamBody>(&body)
            .ok()
            .and_then(|b| b.ms))
    };
    match actix_web::rt::time::timeout(req.timeout, exchange).await {
        Ok(result) => result,
        Err(_elapsed) => Err(UpstreamError::Timeout),
    }
}

/// Longest `Retry-After` taken from the dependency: longer is read as this (a day).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// A `Retry-After` of whole seconds (RFC 9110's delay-seconds); an HTTP date, or anything else,
/// is ignored.
fn retry_after(value: Option<&HeaderValue>) -> Option<Duration> {
    let seconds: u64 = value?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

fn from_send_error(e: SendRequestError) -> UpstreamError {
    match e {
        SendRequestError::Timeout | SendRequestError::Connect(ConnectError::Timeout) => {
            UpstreamError::Timeout
        }
        other => UpstreamError::Transport(other.to_string()),
    }
}

fn from_payload_error(e: PayloadError) -> UpstreamError {
    match e {
        PayloadError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => UpstreamError::Timeout,
        other => UpstreamError::Transport(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_whole_seconds_and_anything_else_is_ignored() {
        let parse = |v: &'static str| retry_after(Some(&HeaderValue::from_static(v)));
        assert_eq!(parse("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse(" 0 "), Some(Duration::ZERO));
        assert_eq!(parse("99999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse("-1"), None);
        assert_eq!(parse("1.5"), None);
        assert_eq!(retry_after(None), None);
    }

    #[test]
    fn the_url_carries_only_the_overrides_the_caller_gave() {
        let request = |ms, fail_rate| UpstreamRequest {
            base_url: "http://u:1",
            overrides: Overrides { ms, fail_rate },
            timeout: Duration::from_millis(1),
            max_body_bytes: 1,
            priority: Priority::Normal,
        };
        assert_eq!(request(None, None).url(), "http://u:1/upstream");
        assert_eq!(
            request(Some(0), Some(1.0)).url(),
            "http://u:1/upstream?ms=0&fail_rate=1"
        );
    }
}
