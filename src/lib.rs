//! # load-shed-api
//!
//! A service that stays healthy around an unreliable dependency: per-call timeouts, a circuit
//! breaker, priority load shedding (429) and Prometheus metrics, on actix actors. One binary
//! serves the roles `api`, `upstream` (a simulated dependency) and `all` (both).
//!
//! # Layout
//! - [`settings`]: typed configuration, layered from embedded defaults, files and environment.
//! - [`startup`]: listeners and servers per role; readiness and graceful shutdown.
//! - `api`: the api role's routes (`/client`, `/work`), validation, the attempts, one reading of a
//!   call's result, outcome mapping, its metrics.
//! - `actor_home`: where the api's actors run (on an api worker's thread).
//! - `admission`: priority load shedding: the pure limiter, the limit behind one interface (fixed,
//!   gradient), the backlog, tenant fairness, `AdmissionActor`, `Permit`, the handle routes hold.
//! - `breaker`: the circuit breaker: pure state machine, one file per trip policy, published gate,
//!   `BreakerActor`.
//! - [`autoscaling`]: the scaling signal `autoscaling_load_ratio` (demand over this replica's own
//!   capacity, held while the dependency is slow) and the actor that ticks it.
//! - `retry`: retries with a budget, backoff with jitter, hedging (off by default).
//! - `upstream`: the simulated dependency (`/upstream`): parameters, faults, capacity.
//! - `wire`: what the api and the dependency agree on over HTTP (headers, overrides, 400s).
//! - `bounds`: what "a probability" means, for configuration and requests alike.
//! - `routes`: `/healthz`, `/readyz`, `/metrics` and JSON fallbacks, served by every role.
//! - `metrics`: the shared registry, the HTTP metrics and `/metrics`.
//! - [`check`]: the `check` subcommand, a probe of a running api (used by `helm test`).
//! - [`admin`]: the admin listener (state, operator controls, the status page) and its CLI.
//! - `shadow`: shadow mode's switch, one per component.
//!
//! The pure state machines are public, for use and study without actix: [`Admission`] and
//! [`CircuitBreaker`].

#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod actor_home;
pub mod admin;
mod admission;
mod api;
pub mod autoscaling;
mod bounds;
mod breaker;
pub mod check;
mod metrics;
mod retry;
mod routes;
pub mod settings;
mod shadow;
pub mod startup;
mod upstream;
mod wire;

pub use admission::{Admission, Limits, PermitToken, Priority, Shed};
pub use breaker::{
    BreakerConfig, CircuitBreaker, RateWindow, Rejected, State, ThrottleParams, Ticket, TripRule,
    Verdict,
};
pub use settings::{ConfigError, Settings};
pub use startup::Application;
pub use upstream::QuietInjectedResets;
