//! Shadow mode's switch, one per component (admission, the breaker): whether it lets through what
//! it would refuse, counting it instead. Set from configuration (`admission.enforce`,
//! `breaker.enforce`) and switchable at run time (`POST /admin/shadow`). Its series are
//! registered the first time it is on, so a process that always enforces never shows them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use serde::Serialize;

/// Makes a component's shadow series (registers them); called at most once.
type Make<T> = Box<dyn Fn() -> Result<T, prometheus::Error> + Send + Sync>;

pub(crate) struct Switch<T> {
    on: AtomicBool,
    /// As configured, what `reset` goes back to.
    configured: bool,
    series: OnceLock<T>,
    make: Make<T>,
    /// Bumped on every run-time change, so a stale expiry does nothing.
    changes: AtomicU64,
    /// An operator's switch away from the configured value: who, since when, until when.
    held: Mutex<Option<(String, Instant, Option<Instant>)>>,
}

/// A run-time switch away from the configuration, as `GET /admin/state` shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HeldView {
    /// Shadow mode on (`true`) or off, against the configuration.
    pub shadow: bool,
    pub by: String,
    pub held_seconds: f64,
    /// Seconds until it goes back to the configured value (`None`: until switched back).
    pub expires_in_seconds: Option<f64>,
}

impl<T> Switch<T> {
    /// On (shadow mode) or off (enforcing) as configured; the series are made now if on.
    pub(crate) fn new(on: bool, make: Make<T>) -> Result<Arc<Self>, prometheus::Error> {
        let switch = Self {
            on: AtomicBool::new(false),
            configured: on,
            series: OnceLock::new(),
            make,
            changes: AtomicU64::new(0),
            held: Mutex::new(None),
        };
        switch.turn(on)?;
        Ok(Arc::new(switch))
    }

    /// Whether shadow mode is on (the component lets through what it would refuse).
    pub(crate) fn is_on(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    /// The series, once shadow mode has been on (they stay registered after).
    pub(crate) fn series(&self) -> Option<&T> {
        self.series.get()
    }

    /// Whether it is on as configured.
    pub(crate) fn configured(&self) -> bool {
        self.configured
    }

    /// Turns shadow mode on or off (registering the series first, the first time it is on).
    /// Returns the change's number, for an expiry to check that no later change came.
    pub(crate) fn turn(&self, on: bool) -> Result<u64, prometheus::Error> {
        if on && self.series.get().is_none() {
            let made = (self.make)()?;
            let _ = self.series.set(made);
        }
        self.on.store(on, Ordering::Release);
        Ok(self.changes.fetch_add(1, Ordering::AcqRel) + 1)
    }

    /// Records who holds it away from the configuration (`None`: it is back to it).
    pub(crate) fn hold(&self, held: Option<(String, Instant, Option<Instant>)>) {
        *self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = held;
    }

    /// The operator's switch away from the configuration, if any.
    pub(crate) fn held(&self) -> Option<HeldView> {
        let held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        held.as_ref().map(|(by, since, until)| HeldView {
            shadow: self.is_on(),
            by: by.clone(),
            held_seconds: now.duration_since(*since).as_secs_f64(),
            expires_in_seconds: until.map(|u| u.saturating_duration_since(now).as_secs_f64()),
        })
    }

    /// Whether `change` (from [`Switch::turn`]) is still the last one.
    pub(crate) fn is_last(&self, change: u64) -> bool {
        self.changes.load(Ordering::Acquire) == change
    }
}
