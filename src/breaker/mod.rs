//! The circuit breaker around the upstream: Closed → Open when its trip policy fires → HalfOpen
//! probes after a pause → Closed when the probes succeed, Open again when one fails. The trip
//! policy is a run of consecutive failures or, as in resilience4j, a failure rate or slow-call
//! rate over a sliding window of recent calls; each is one file behind [`policy::TripPolicy`].
//! The third policy, client-side throttling, never opens: it refuses each call with a
//! probability that tracks how much the dependency accepts.
//!
//! - [`machine`]: the pure state machine ([`CircuitBreaker`]); time is an argument.
//! - [`policy`]: what a trip policy is; [`consecutive`], [`failure_rate`] and [`throttle`]: the
//!   three policies (throttling refuses a share of calls instead of opening).
//! - [`gate`]: the snapshot the actor publishes so handlers decide the common cases without a message.
//! - [`actor`]: [`BreakerActor`], the one owner of the machine, and [`BreakerHandle`], what routes hold.
//! - [`metrics`]: the breaker's state, transitions and window rates.

mod actor;
mod consecutive;
mod failure_rate;
mod gate;
mod machine;
mod metrics;
mod policy;
mod throttle;

pub use crate::settings::{BreakerConfig, RateWindow, ThrottleParams, TripRule};
pub(crate) use actor::{BreakerHandle, Forced, SetOverride};
pub use machine::{CircuitBreaker, Rejected, State, Ticket, Verdict};
