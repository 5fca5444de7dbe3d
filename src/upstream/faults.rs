//! How the simulated dependency misbehaves, by configured probabilities: latency jitter, a long
//! tail, injected failures with a chosen status, requests that hang, connections reset
//! mid-response.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, MessageBody};
use actix_web::web::Bytes;

use crate::settings::Faults;

impl Faults {
    /// The latency of one request asked to take `ms`: ± jitter, plus the tail now and then.
    pub(crate) fn latency(&self, ms: u64) -> Duration {
        let jitter = self.jitter_ms as f64 * (2.0 * rand::random::<f64>() - 1.0);
        let mut total = (ms as f64 + jitter).max(0.0);
        if chance(self.tail_rate) {
            total += self.tail_ms as f64;
        }
        Duration::from_micros((total * 1000.0) as u64)
    }
}

/// True with probability `rate` (`random()` is in [0, 1): 0 never, 1 always).
pub(crate) fn chance(rate: f64) -> bool {
    rand::random::<f64>() < rate
}

/// A body that announces 64 bytes and fails before the first: actix closes the connection
/// mid-response, as a dependency that resets would.
pub(crate) struct Reset;

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
