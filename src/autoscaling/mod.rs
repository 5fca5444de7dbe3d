//! The autoscaling signal: the gauge `autoscaling_load_ratio` (api role), how many times its
//! capacity this replica is being asked for, held when the dependency is the bottleneck. The chart
//! scales on it with `autoscaling.signal: load` (a KEDA ScaledObject).
//!
//! - [`signal`]: the pure computation ([`signal::LoadSignal`]), stepped by hand in its tests.
//! - `LoadSignalActor`: ticks once a second, reads the counters the request path already keeps
//!   (admission's decisions, the upstream latency histogram) and sets the gauge. It adds nothing
//!   to a request's path.

pub mod signal;

use std::time::{Duration, Instant};

use actix::prelude::*;
use prometheus::Gauge;

use crate::actor_home::ActorHome;
use crate::metrics::Metrics;
use signal::{LoadSignal, Totals};

/// How often the signal is computed.
const TICK: Duration = Duration::from_secs(1);

/// Reads the cumulative counters the signal is computed from.
pub(crate) type ReadTotals = Box<dyn Fn() -> Totals + Send>;

pub(crate) struct LoadSignalActor {
    signal: LoadSignal,
    read: ReadTotals,
    gauge: Gauge,
    /// Whether the last tick judged the dependency slow (its changes are logged).
    slow: bool,
}

impl LoadSignalActor {
    /// Registers the gauge and starts the actor in `home`; `capacity` is the in-flight ceiling the
    /// replica allows itself.
    pub(crate) fn start(
        capacity: u32,
        read: ReadTotals,
        metrics: &Metrics,
        home: &ActorHome,
    ) -> Result<(), prometheus::Error> {
        let gauge = metrics.register(Gauge::new(
            "autoscaling_load_ratio",
            "Times this replica's capacity being asked for (1 = exactly its capacity): /client arrivals \
             x healthy upstream latency / in-flight ceiling; held while the dependency is slow",
        )?)?;
        home.start(Self {
            signal: LoadSignal::new(capacity),
            read,
            gauge,
            slow: false,
        });
        Ok(())
    }

    fn tick(&mut self) {
        let reading = self.signal.tick(Instant::now(), (self.read)());
        self.gauge.set(reading.ratio);
        if reading.dependency_slow != self.slow {
            self.slow = reading.dependency_slow;
            if self.slow {
                log::info!(
                    "autoscaling signal held at {:.2}: the dependency is slow (healthy latency {:.1} ms)",
                    reading.ratio,
                    self.signal.healthy_latency().unwrap_or(0.0) * 1000.0
                );
            } else {
                log::info!("autoscaling signal follows demand again: the dependency is well");
            }
        }
    }
}

impl Actor for LoadSignalActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.tick();
        ctx.run_interval(TICK, |act, _| act.tick());
    }
}
