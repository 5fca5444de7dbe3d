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
//! - [`fair`]: the pure tenant-fairness rule (fair share of the limit, per-tenant quota), on with
//!   `admission.tenant_header`.
//! - [`actor`]: [`actor::AdmissionActor`], the one owner of the count, the limit and the backlog.
//! - [`permit`]: the [`Permit`] guard that gives a slot back exactly once, and what permits share.
//! - [`handle`]: [`AdmissionHandle`], what routes hold; it sheds a full class without a message.
//! - [`metrics`]: admission's metrics.

mod actor;
mod adaptive;
mod backlog;
mod fair;
mod handle;
mod limit;
mod machine;
mod metrics;
mod permit;

pub(crate) use actor::SetPin;
pub(crate) use handle::{AdmissionHandle, AdmissionView};
pub(crate) use machine::Fractions;
pub use machine::{Admission, Limits, PermitToken, Priority, Reason, Refusal, Shed};
pub(crate) use permit::Permit;

pub(crate) use crate::settings::{AdmissionConfig, AdmissionMode};
