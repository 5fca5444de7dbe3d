//! Builds the listeners and servers of a role, and runs them until a shutdown trigger: readiness
//! turns 503, then the api drains (up to `shutdown.grace_seconds`), then the upstream stops.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};

use actix_web::dev::{Server, ServerHandle};
use actix_web::http::KeepAlive;
use actix_web::{web, App, HttpServer};
use actix_web_prom::PrometheusMetrics;

use crate::actor_home::ActorHome;
use crate::admin::{self, Admin};
use crate::api::{self, ApiState};
use crate::metrics::Metrics;
use crate::routes::{self, Readiness};
use crate::settings::{Settings, ShutdownSettings};
use crate::upstream::{self, Simulator};

// Both servers refuse HTTP/1 half-closed connections: a client's EOF means it went away, so
// actix drops the handler at once. That releases its permit, frees a probe slot and cancels the
// upstream call, rather than finishing work nobody will read. (A client that shuts down its
// writing side while waiting for the answer is treated as gone.)

/// What asked the process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM, as an orchestrator or a process manager sends: `/readyz` turns 503 at once and the
    /// listeners keep serving for `shutdown.drain_delay_seconds`, so a load balancer sees the
    /// process unready before it stops accepting; then the drain.
    Terminate,
    /// SIGINT (Ctrl-C): someone at a terminal; the drain starts at once.
    Interrupt,
}

/// A bound, not yet running server.
struct Bound {
    addr: SocketAddr,
    server: Server,
    /// A task that runs beside the server for as long as it serves (the status page's sampler).
    sampler: Option<std::pin::Pin<Box<dyn Future<Output = ()>>>>,
}

/// The servers of one process, bound and ready to run.
pub struct Application {
    api: Option<Bound>,
    upstream: Option<Bound>,
    /// The admin listener (`admin.listen`), if configured and bound.
    admin: Option<Bound>,
    readiness: Readiness,
    /// `[shutdown]`: how long the listeners keep serving, unready, after SIGTERM (the grace time
    /// is the servers' own).
    shutdown: ShutdownSettings,
}

/// What every server of the process shares, whatever its role.
#[derive(Clone)]
struct Shared {
    metrics: Metrics,
    http_metrics: PrometheusMetrics,
    readiness: Readiness,
}

impl Application {
    /// Binds the role's listeners (port 0 works: read the real ports back) and starts the actors.
    /// Call inside a running actix `System`.
    pub fn build(settings: &Settings) -> io::Result<Self> {
        let (metrics, http_metrics) = Metrics::new().map_err(io::Error::other)?;
        let shared = Shared {
            metrics,
            http_metrics,
            readiness: Readiness::default(),
        };

        let upstream = if settings.role.serves_upstream() {
            let sim = web::Data::new(Simulator::start(
                settings.upstream.simulator.clone(),
                settings.overrides,
            ));
            Some(bind(
                settings.upstream.listen,
                settings.upstream.workers,
                settings,
                &shared,
                move |cfg| {
                    cfg.app_data(sim.clone()).configure(upstream::configure);
                },
            )?)
        } else {
            None
        };

        let mut api_state = None;
        let api = if settings.role.serves_api() {
            // In `all` the api calls the upstream listener of this same process.
            let mut api = settings.api.clone();
            if let Some(up) = &upstream {
                api.upstream_url = format!("http://{}", reachable(up.addr));
            }
            // The actors start on the first api worker's thread (see `actor_home`).
            let home = ActorHome::default();
            let state = web::Data::new(
                ApiState::start(settings, api, &shared.metrics, &home).map_err(io::Error::other)?,
            );
            api_state = Some(state.clone());
            let connect_timeout = settings.timeouts.connect;
            Some(bind(
                settings.api.listen,
                settings.api.workers,
                settings,
                &shared,
                move |cfg| {
                    home.settle();
                    cfg.app_data(state.clone())
                        // awc::Client is !Send: one per worker, built here, never per request.
                        .app_data(web::Data::new(api::upstream_client(connect_timeout)))
                        .configure(api::configure);
                },
            )?)
        } else {
            None
        };

        let admin = bind_admin(settings, api_state)?;

        Ok(Self {
            api,
            upstream,
            admin,
            readiness: shared.readiness,
            shutdown: settings.shutdown,
        })
    }

    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api.as_ref().map(|b| b.addr)
    }

    pub fn upstream_addr(&self) -> Option<SocketAddr> {
        self.upstream.as_ref().map(|b| b.addr)
    }

    /// Where the admin listener listens, if it does.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|b| b.addr)
    }

    /// Serves until `shutdown` completes, then drains: readiness off (and, on
    /// [`Signal::Terminate`], the drain delay while the listeners still serve), then the api stops
    /// accepting and finishes in-flight requests within the grace time, then the upstream does the
    /// same.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = Signal>) -> io::Result<()> {
        let api = self.api.map(start);
        let upstream = self.upstream.map(start);
        let admin = self.admin.map(start);
        let signal = shutdown.await;
        self.readiness.start_draining();
        if signal == Signal::Terminate && !self.shutdown.drain_delay.is_zero() {
            log::info!(
                "shutdown requested: unready, still serving for {:?} (shutdown.drain_delay_seconds)",
                self.shutdown.drain_delay
            );
            actix_web::rt::time::sleep(self.shutdown.drain_delay).await;
        }
        log::info!("draining");
        for (handle, task) in [api, upstream, admin].into_iter().flatten() {
            handle.stop(true).await;
            match task.await {
                Ok(result) => result?,
                Err(e) => log::error!("server task failed: {e}"),
            }
        }
        log::info!("stopped");
        Ok(())
    }
}

/// Binds `listen` and builds one role's server: its own routes (`role_routes`, called once per
/// worker) beside what every role serves, with the shared connection limits and drain time.
fn bind<F>(
    listen: SocketAddr,
    workers: usize,
    settings: &Settings,
    shared: &Shared,
    role_routes: F,
) -> io::Result<Bound>
where
    F: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
{
    let listener = TcpListener::bind(listen)?;
    let addr = listener.local_addr()?;
    let srv = settings.server;
    let keep_alive = match srv.keep_alive {
        None => KeepAlive::Disabled,
        Some(idle) => KeepAlive::Timeout(idle),
    };
    let shared = shared.clone();
    let mut server = HttpServer::new(move || {
        App::new()
            .wrap(shared.http_metrics.clone())
            .app_data(web::Data::new(shared.metrics.clone()))
            .app_data(web::Data::new(shared.readiness.clone()))
            .configure(role_routes.clone())
            .configure(routes::configure)
            .default_service(web::to(routes::not_found))
    })
    .disable_signals()
    .shutdown_timeout(settings.shutdown.grace.as_secs())
    .h1_allow_half_closed(false)
    .client_request_timeout(srv.client_request_timeout)
    .keep_alive(keep_alive)
    .max_connections(srv.max_connections);
    if workers > 0 {
        server = server.workers(workers);
    }
    Ok(Bound {
        addr,
        server: server.listen(listener)?.run(),
        sampler: None,
    })
}

/// Binds the admin listener (`admin.listen`), one worker, outside the HTTP metrics. The built-in
/// default address already taken (a second process on this host) is not fatal: the process starts
/// without one and says so. Any other address must bind.
fn bind_admin(settings: &Settings, api: Option<web::Data<ApiState>>) -> io::Result<Option<Bound>> {
    let Some(listen) = settings.admin.listen else {
        return Ok(None);
    };
    let listener = match TcpListener::bind(listen) {
        Ok(listener) => listener,
        Err(e) if e.kind() == io::ErrorKind::AddrInUse && settings.admin.default_listen => {
            log::warn!(
                "admin listener not started: {listen} is taken (another load-shed-api on this host?); set admin.listen (LOAD_SHED__ADMIN__LISTEN) to another address, or \"\" to say none"
            );
            return Ok(None);
        }
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("admin.listen {listen}: {e}"),
            ))
        }
    };
    let addr = listener.local_addr()?;
    let gauge = match &api {
        Some(api) => api.override_gauge(),
        // Without an api nothing can be overridden: a gauge registered nowhere.
        None => prometheus::IntGaugeVec::new(
            prometheus::Opts::new("admin_override", "unused"),
            &["component", "kind"],
        )
        .map_err(io::Error::other)?,
    };
    let history = std::sync::Arc::new(admin::History::default());
    let sampler = api
        .as_ref()
        .map(|api| admin::sample_every_second(api.metrics().clone(), history.clone()));
    let state = web::Data::new(Admin {
        role: settings.role.name(),
        api,
        settings: settings.admin.clone(),
        gauge,
        history,
    });
    let server = HttpServer::new(move || {
        App::new()
            .wrap(admin::headers())
            .app_data(state.clone())
            .configure(admin::configure)
            .default_service(web::to(routes::not_found))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .client_request_timeout(settings.server.client_request_timeout)
    .max_connections(64)
    .listen(listener)?
    .run();
    log::info!(
        "admin listener on {addr} (status page: http://{}/)",
        reachable(addr)
    );
    Ok(Some(Bound {
        addr,
        server,
        sampler: sampler.map(|s| Box::pin(s) as _),
    }))
}

fn start(
    bound: Bound,
) -> (
    ServerHandle,
    actix_web::rt::task::JoinHandle<io::Result<()>>,
) {
    let handle = bound.server.handle();
    let task = match bound.sampler {
        None => actix_web::rt::spawn(bound.server),
        // The sampler stops when the server does.
        Some(sampler) => actix_web::rt::spawn(async move {
            tokio::select! {
                served = bound.server => served,
                () = sampler => Ok(()),
            }
        }),
    };
    (handle, task)
}

/// A listen address as a client on this host reaches it: unspecified becomes loopback (also
/// what `load-shed-api admin` calls the configured admin address by).
pub(crate) fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}
