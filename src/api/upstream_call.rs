//! One call to the dependency over awc: connect timeout from the client's connector, one deadline
//! over sending, the response head and the whole body, and a cap on the body's size.

use std::time::Duration;

use awc::error::{ConnectError, PayloadError, SendRequestError};
use awc::http::header::HeaderValue;
use serde::Deserialize;

use crate::wire::{Overrides, BUDGET_HEADER};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("upstream answered {0}")]
    Status(u16),
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
        let mut res = client
            .get(req.url())
            .insert_header((BUDGET_HEADER, HeaderValue::from(budget)))
            .send()
            .await
            .map_err(from_send_error)?;
        let status = res.status();
        if !status.is_success() {
            // The verdict is known from the head; a stalled error body must not turn it into a
            // timeout. (awc closes a connection whose body was not read.)
            return Err(UpstreamError::Status(status.as_u16()));
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
    fn the_url_carries_only_the_overrides_the_caller_gave() {
        let request = |ms, fail_rate| UpstreamRequest {
            base_url: "http://u:1",
            overrides: Overrides { ms, fail_rate },
            timeout: Duration::from_millis(1),
            max_body_bytes: 1,
        };
        assert_eq!(request(None, None).url(), "http://u:1/upstream");
        assert_eq!(
            request(Some(0), Some(1.0)).url(),
            "http://u:1/upstream?ms=0&fail_rate=1"
        );
    }
}
