//! Builds the listeners and servers of a role, and runs them until a shutdown trigger: readiness
//! turns 503, then the api drains (up to `shutdown.grace_seconds`), then the upstream stops.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::http::KeepAlive;
use actix_web::{web, App, HttpServer};

use crate::admission::AdmissionHandle;
use crate::api::params::ClientDefaults;
use crate::api::{self, upstream_call, ApiState};
use crate::breaker::BreakerHandle;
use crate::metrics::Metrics;
use crate::routes::{self, Readiness};
use crate::settings::Settings;
use crate::upstream::{self, UpstreamState};

// Both servers refuse HTTP/1 half-closed connections: a client's EOF means it went away, so
// actix drops the handler at once. That releases its permit, frees a probe slot and cancels the
// upstream call, rather than finishing work nobody will read. (A client that shuts down its
// writing side while waiting for the answer is treated as gone.)

/// A bound, not yet running server.
struct Bound {
    addr: SocketAddr,
    server: Server,
}

pub struct Application {
    api: Option<Bound>,
    upstream: Option<Bound>,
    readiness: Readiness,
}

impl Application {
    /// Binds the role's listeners (port 0 works: read the real ports back) and starts the actors.
    /// Call inside a running actix `System`.
    pub fn build(settings: &Settings) -> io::Result<Self> {
        let (metrics, http_metrics) = Metrics::new().map_err(io::Error::other)?;
        let readiness = Readiness::default();
        let grace = settings.shutdown.grace_seconds;
        let srv = &settings.server;
        let keep_alive = match srv.keep_alive_seconds {
            0 => KeepAlive::Disabled,
            secs => KeepAlive::Timeout(Duration::from_secs(secs)),
        };

        let upstream = if settings.role.serves_upstream() {
            let listener = TcpListener::bind(settings.upstream.listen)?;
            let addr = listener.local_addr()?;
            let state = web::Data::new(UpstreamState::new(&settings.upstream));
            state.schedule_degrade();
            let (metrics, http_metrics, readiness) =
                (metrics.clone(), http_metrics.clone(), readiness.clone());
            let mut server = HttpServer::new(move || {
                App::new()
                    .wrap(http_metrics.clone())
                    .app_data(state.clone())
                    .app_data(web::Data::new(metrics.clone()))
                    .app_data(web::Data::new(readiness.clone()))
                    .configure(upstream::configure)
                    .configure(routes::configure)
                    .default_service(web::to(routes::not_found))
            })
            .disable_signals()
            .shutdown_timeout(grace)
            .h1_allow_half_closed(false)
            .client_request_timeout(srv.client_request_timeout())
            .keep_alive(keep_alive)
            .max_connections(srv.max_connections as usize);
            if settings.upstream.workers > 0 {
                server = server.workers(settings.upstream.workers);
            }
            Some(Bound {
                addr,
                server: server.listen(listener)?.run(),
            })
        } else {
            None
        };

        let api = if settings.role.serves_api() {
            let listener = TcpListener::bind(settings.api.listen)?;
            let addr = listener.local_addr()?;
            // In `all` the api calls the upstream listener of this same process.
            let upstream_url = match &upstream {
                Some(up) => format!("http://{}", reachable(up.addr)),
                None => settings.api.upstream_url.clone(),
            };
            let state = web::Data::new(ApiState {
                metrics: metrics.clone(),
                admission: AdmissionHandle::start(
                    settings.admission.limits(),
                    settings.admission.adaptive(),
                    settings.admission.backlog(),
                    metrics.clone(),
                ),
                breaker: BreakerHandle::start(settings.breaker.machine_config(), metrics.clone()),
                upstream_url,
                defaults: ClientDefaults {
                    timeout: settings.timeouts.upstream(),
                    min_budget: Duration::from_millis(settings.timeouts.min_budget_ms),
                },
                max_upstream_body_bytes: settings.api.max_upstream_body_bytes,
                allow_request_overrides: settings.upstream.allow_request_overrides,
            });
            let connect_timeout = settings.timeouts.connect();
            let (metrics, http_metrics, readiness) =
                (metrics.clone(), http_metrics.clone(), readiness.clone());
            let mut server = HttpServer::new(move || {
                App::new()
                    .wrap(http_metrics.clone())
                    .app_data(state.clone())
                    // awc::Client is !Send: one per worker, built here, never per request.
                    .app_data(web::Data::new(upstream_call::client(connect_timeout)))
                    .app_data(web::Data::new(metrics.clone()))
                    .app_data(web::Data::new(readiness.clone()))
                    .configure(api::configure)
                    .configure(routes::configure)
                    .default_service(web::to(routes::not_found))
            })
            .disable_signals()
            .shutdown_timeout(grace)
            .h1_allow_half_closed(false)
            .client_request_timeout(srv.client_request_timeout())
            .keep_alive(keep_alive)
            .max_connections(srv.max_connections as usize);
            if settings.api.workers > 0 {
                server = server.workers(settings.api.workers);
            }
            Some(Bound {
                addr,
                server: server.listen(listener)?.run(),
            })
        } else {
            None
        };

        Ok(Self {
            api,
            upstream,
            readiness,
        })
    }

    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api.as_ref().map(|b| b.addr)
    }

    pub fn upstream_addr(&self) -> Option<SocketAddr> {
        self.upstream.as_ref().map(|b| b.addr)
    }

    /// Serves until `shutdown` completes, then drains: readiness off, the api stops accepting and
    /// finishes in-flight requests within the grace time, then the upstream does the same.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let api = self.api.map(start);
        let upstream = self.upstream.map(start);
        shutdown.await;
        log::info!("shutdown requested: draining");
        self.readiness.start_draining();
        for (handle, task) in [api, upstream].into_iter().flatten() {
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

fn start(
    bound: Bound,
) -> (
    ServerHandle,
    actix_web::rt::task::JoinHandle<io::Result<()>>,
) {
    let handle = bound.server.handle();
    (handle, actix_web::rt::spawn(bound.server))
}

/// A listen address as a client on this host reaches it: unspecified becomes loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}
