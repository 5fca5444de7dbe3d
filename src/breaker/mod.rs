//! The circuit breaker around the upstream: Closed → Open after consecutive failures → HalfOpen
//! probes after a pause → Closed on successful probes, Open again on a failed one.
//!
//! - [`machine`]: the pure state machine ([`CircuitBreaker`]); time is an argument.
//! - [`gate`]: the snapshot the actor publishes so handlers decide the common cases without a message.
//! - [`actor`]: [`BreakerActor`], the one owner of the machine, and [`BreakerHandle`], what routes hold.

pub mod actor;
pub mod gate;
pub mod machine;

pub use actor::{BreakerActor, BreakerHandle, Pass};
pub use gate::BreakerGate;
pub use machine::{
    BreakerConfig, CircuitBreaker, RateWindow, Rejected, State, Ticket, TripRule, Verdict,
};
