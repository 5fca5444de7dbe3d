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
/// mid-response, as a dependency that resets would. actix logs that at ERROR ("Response payload
/// stream error"); [`QuietInjectedResets`] turns those lines into debug ones.
pub(crate) struct Reset;

/// What [`Reset`]'s error says, so the logger can tell an injected reset from a real error.
const INJECTED_RESET: &str = "injected reset";

/// A logger that passes everything to `inner` but actix's error line about a body that failed
/// with [`Reset`]'s error: a fault the configuration asked for (`upstream.reset_rate`) is logged
/// at debug, not as 30 errors a second. Other response body errors stay errors.
pub struct QuietInjectedResets<L>(pub L);

impl<L: log::Log> log::Log for QuietInjectedResets<L> {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        let injected = record.level() == log::Level::Error
            && record.target().starts_with("actix_http")
            && record.args().to_string().contains(INJECTED_RESET);
        if !injected {
            return self.0.log(record);
        }
        let demoted = log::Record::builder()
            .level(log::Level::Debug)
            .target(record.target())
            .args(*record.args())
            .module_path(record.module_path())
            .file(record.file())
            .line(record.line())
            .build();
        if self.0.enabled(demoted.metadata()) {
            self.0.log(&demoted);
        }
    }

    fn flush(&self) {
        self.0.flush();
    }
}

impl MessageBody for Reset {
    type Error = io::Error;

    fn size(&self) -> BodySize {
        BodySize::Sized(64)
    }

    fn poll_next(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Poll::Ready(Some(Err(io::Error::other(INJECTED_RESET))))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use log::{Level, Log, Metadata, Record};

    use super::*;

    /// Keeps what it is given, at debug and above.
    #[derive(Default)]
    struct Kept(Mutex<Vec<(Level, String)>>);

    impl Log for Kept {
        fn enabled(&self, metadata: &Metadata<'_>) -> bool {
            metadata.level() <= Level::Debug
        }
        fn log(&self, record: &Record<'_>) {
            self.0
                .lock()
                .unwrap()
                .push((record.level(), record.args().to_string()));
        }
        fn flush(&self) {}
    }

    fn log(logger: &impl Log, level: Level, target: &str, message: &str) {
        logger.log(
            &Record::builder()
                .level(level)
                .target(target)
                .args(format_args!("{message}"))
                .build(),
        );
    }

    #[test]
    fn only_actixs_error_about_an_injected_reset_is_demoted_to_debug() {
        let quiet = QuietInjectedResets(Kept::default());
        let dispatcher = "actix_http::h1::dispatcher";
        let injected = "Response payload stream error: Custom { error: \"injected reset\" }";
        let real = "Response payload stream error: Os { code: 32, kind: BrokenPipe }";
        log(&quiet, Level::Error, dispatcher, injected);
        log(&quiet, Level::Error, dispatcher, real);
        log(
            &quiet,
            Level::Error,
            "load_shed_api::startup",
            "injected reset elsewhere",
        );
        log(&quiet, Level::Info, dispatcher, "something else");
        let kept = quiet.0 .0.lock().unwrap().clone();
        assert_eq!(
            kept,
            vec![
                (Level::Debug, injected.to_string()),
                (Level::Error, real.to_string()),
                (Level::Error, "injected reset elsewhere".to_string()),
                (Level::Info, "something else".to_string()),
            ]
        );
    }
}
