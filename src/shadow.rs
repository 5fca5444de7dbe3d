//! Shadow mode's switch, one per component (admission, the breaker): whether it lets through what
//! it would refuse, counting it instead. Set from configuration (`admission.enforce`,
//! `breaker.enforce`) and switchable at run time (`POST /admin/shadow`). Its series are
//! registered the first time it is on, so a process that always enforces never shows them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

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

    /// Whether `change` (from [`Switch::turn`]) is still the last one.
    pub(crate) fn is_last(&self, change: u64) -> bool {
        self.changes.load(Ordering::Acquire) == change
    }
}
