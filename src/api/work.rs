//! `POST /work?ms=`: real CPU burn for autoscaling demos, on the blocking pool so the async
//! workers stay free, admitted like `/client`. The permit is held until the burn ends, even if
//! the client has gone.

use std::hint::black_box;
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};

use super::outcome::Outcome;
use super::params::WorkParams;
use super::{ApiState, WORK};
use crate::metrics::ClientClosedGuard;

pub(crate) async fn work(req: HttpRequest, state: web::Data<ApiState>) -> HttpResponse {
    let closed = ClientClosedGuard::new(&state.metrics, "POST", WORK);
    let outcome = run(&req, &state).await;
    closed.answered();
    outcome.into_response()
}

async fn run(req: &HttpRequest, state: &ApiState) -> Outcome {
    let params = match WorkParams::from_request(req) {
        Ok(p) => p,
        Err(bad) => return Outcome::Invalid(bad),
    };
    let tenant = match state.tenant(req) {
        Ok(tenant) => tenant,
        Err(bad) => return bad,
    };
    let permit = match state.admit(WORK, params.priority, tenant).await {
        Ok(permit) => permit,
        Err(shed) => return shed,
    };
    let ms = params.ms;
    let burned = web::block(move || {
        burn(Duration::from_millis(ms));
        drop(permit);
    })
    .await;
    match burned {
        Ok(()) => Outcome::Ok {
            ms: Some(ms),
            priority: params.priority,
        },
        Err(_) => Outcome::Unavailable,
    }
}

/// Keeps one core busy for `wall` of wall time.
fn burn(wall: Duration) {
    let start = Instant::now();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while start.elapsed() < wall {
        for i in 0..4096u64 {
            x = black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i));
        }
    }
    black_box(x);
}
