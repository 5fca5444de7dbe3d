//! Priority load shedding: a shared in-flight pool with a lower ceiling for each lower priority, so
//! low-priority work is shed first and high priority keeps the last slots. The ceilings are fixed
//! (`admission.mode = "static"`) or follow the dependency's latency (`"adaptive"`); an optional
//! short LIFO backlog lets a request wait briefly for a slot instead of being shed at once.
//!
//! - [`machine`]: the pure limiter that admits against the ceilings ([`Admission`], [`Priority`],
//!   [`Limits`]).
//! - [`limit`]: where the ceilings come from, one interface ([`limit::Limit`]) with the fixed
//!   limit; [`adaptive`]: the pure gradient limit that moves them by latency.
//! - [`backlog`]: the pure LIFO backlog of waiting requests.
//! - [`actor`]: [`actor::AdmissionActor`], the one owner of the count, the limit and the backlog.
//! - [`permit`]: the [`Permit`] guard that gives a slot back exactly once, and what permits share.
//! - [`handle`]: [`AdmissionHandle`], what routes hold; it sheds a full class without a message.
//! - [`metrics`]: admission's metrics.

mod actor;
mod adaptive;
mod backlog;
mod handle;
mod limit;
mod machine;
mod metrics;
mod permit;

use std::time::Duration;

pub(crate) use adaptive::GradientConfig;
pub(crate) use handle::AdmissionHandle;
pub(crate) use machine::Fractions;
pub use machine::{Admission, Limits, PermitToken, Priority, Shed};
pub(crate) use permit::Permit;

/// How admission decides (`[admission]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct AdmissionConfig {
    pub mode: AdmissionMode,
    pub backlog: BacklogConfig,
}

impl AdmissionConfig {
    /// The in-flight ceiling this replica allows itself: the fixed one, or the adaptive limit's
    /// bound (a live limit below it is set by the dependency's latency, not by this replica).
    pub(crate) fn own_capacity(&self) -> u32 {
        match self.mode {
            AdmissionMode::Static(limits) => limits.high,
            AdmissionMode::Adaptive { limiter, .. } => limiter.max_limit,
        }
    }
}

/// Where the ceilings come from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum AdmissionMode {
    /// Fixed ceilings per class.
    Static(Limits),
    /// A gradient limiter sets the live limit; the lower classes get their fractions of it.
    Adaptive {
        limiter: GradientConfig,
        fractions: Fractions,
    },
}

/// The optional backlog: how many may wait (0 = none), and for how long at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BacklogConfig {
    pub size: usize,
    pub timeout: Duration,
}
