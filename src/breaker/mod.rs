//! The circuit breaker around the upstream: Closed → Open when its trip rule fires → HalfOpen
//! probes after a pause → Closed when the probes succeed, Open again when one fails. The trip
//! rule is either a run of consecutive failures or, as in resilience4j, a failure rate or
//! slow-call rate over a sliding window of recent calls.
//!
//! - [`machine`]: the pure state machine ([`CircuitBreaker`]); time is an argument.
//! - [`gate`]: the snapshot the actor publishes so handlers decide the common cases without a message.
//! - [`actor`]: [`BreakerActor`], the one owner of the machine, and [`BreakerHandle`], what routes hold.
//! - [`metrics`]: the breaker's state, transitions and window rates.

mod actor;
mod gate;
mod machine;
mod metrics;

pub(crate) use actor::BreakerHandle;
pub use machine::{
    BreakerConfig, CircuitBreaker, RateWindow, Rejected, State, Ticket, TripRule, Verdict,
};
