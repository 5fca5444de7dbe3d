//! # load-shed-api
//!
//! A service that stays healthy around an unreliable dependency: per-call timeouts, a circuit
//! breaker, priority load shedding (429) and Prometheus metrics, on actix actors. One binary
//! serves the roles `api`, `upstream` (a simulated dependency) and `all` (both).
//!
//! # Layout
//! - [`settings`]: typed configuration, layered from embedded defaults, files and environment.
//! - [`admission`]: priority load shedding: pure limiter, `AdmissionActor`, `Permit`.
//! - [`breaker`]: the circuit breaker: pure state machine, published gate, `BreakerActor`.
//! - [`api`]: the api role's routes (`/client`, `/work`), validation and outcome mapping.
//! - [`upstream`]: the simulated dependency (`/upstream`).
//! - [`routes`]: `/healthz`, `/readyz`, `/metrics` and JSON fallbacks, served by every role.
//! - [`metrics`]: the shared registry and every metric of the contract.
//! - [`startup`]: listeners and servers per role; readiness and graceful shutdown.
//! - [`check`]: the `check` subcommand, a probe of a running api (used by `helm test`).

#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod admission;
pub mod api;
pub mod breaker;
pub mod check;
pub mod metrics;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod upstream;
