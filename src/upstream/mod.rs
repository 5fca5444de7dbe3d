//! The upstream role: a simulated dependency that can really be overloaded and misbehave.
//!
//! `GET /upstream?ms=&fail_rate=` takes a slot of `upstream.concurrency` (the rest wait in FIFO
//! order, so latency grows with load; beyond `upstream.max_waiting` waiting, 503 at once), then, by configured probabilities, resets the connection,
//! hangs, or waits `ms` (± jitter, plus a tail now and then) on a timer and fails with
//! `fail_status` at probability `fail_rate`, else answers 200. Defaults come from configuration,
//! so changing the deployment's values changes its behaviour for every caller.
//!
//! - [`params`]: `ms` and `fail_rate` with the configured defaults.
//! - [`faults`]: the fault modes and the latency of one request.
//! - [`capacity`]: limited concurrency and the scheduled capacity loss.
//! - [`route`]: the handler, with the caller's deadline honoured.

mod capacity;
mod faults;
mod params;
mod route;

use actix_web::web;

pub use capacity::Degrade;
pub use faults::QuietInjectedResets;

use crate::routes;
use crate::settings::SimulatorConfig;
use crate::wire::OverridePolicy;
use capacity::Capacity;

/// What the simulator's workers share.
#[derive(Debug, Clone)]
pub struct Simulator {
    config: SimulatorConfig,
    overrides: OverridePolicy,
    /// The slots of `config.concurrency`, which may shrink on `config.degrade`'s schedule.
    capacity: Capacity,
}

impl Simulator {
    /// Builds the simulator and schedules its capacity loss, if any, on the current runtime.
    pub fn start(config: SimulatorConfig, overrides: OverridePolicy) -> Self {
        let simulator = Self {
            capacity: Capacity::new(config.concurrency, config.degrade, config.max_waiting),
            config,
            overrides,
        };
        simulator.capacity.schedule_degrade();
        simulator
    }
}

/// `/upstream`; wrong methods get a JSON 405.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/upstream")
            .route(web::get().to(route::upstream))
            .default_service(web::to(routes::method_not_allowed)),
    );
}
