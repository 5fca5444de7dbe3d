//! Priority load shedding: a shared in-flight pool with a lower ceiling for each lower priority, so
//! low-priority work is shed first and high priority keeps the last slots.
//!
//! - [`machine`]: the pure limiter ([`Admission`], [`Priority`], [`Limits`]).
//! - [`actor`]: [`AdmissionActor`], the one owner of the count, the [`Permit`] guard that gives a
//!   slot back exactly once, and [`AdmissionHandle`], what routes hold.

pub mod actor;
pub mod adaptive;
pub mod backlog;
pub mod machine;

pub use actor::{AdmissionActor, AdmissionHandle, Permit};
pub use adaptive::{GradientConfig, GradientLimiter};
pub use machine::{Admission, Fractions, Limits, PermitToken, Priority, Shed};
