//! Shadow mode (`admission.enforce = false`, `breaker.enforce = false`): every decision is made as
//! when enforcing and counted apart, but the request goes on. Off (the default), none of its
//! series exist.

use std::time::Duration;

use crate::helpers::{client_decisions, spawn_app, TestApp};

/// Six `/client` calls of 300 ms at once against ceilings of 3 / 2 / 1 (normal priority: 2 fit).
async fn six_at_once(enforce: &'static str) -> (TestApp, Vec<u16>, (f64, f64)) {
    let app = spawn_app(&[
        ("LOAD_SHED__ADMISSION__ENFORCE", enforce),
        ("LOAD_SHED__ADMISSION__MAX_INFLIGHT", "3"),
        ("LOAD_SHED__ADMISSION__NORMAL_MAX_INFLIGHT", "2"),
        ("LOAD_SHED__ADMISSION__LOW_MAX_INFLIGHT", "1"),
        ("LOAD_SHED__TIMEOUTS__UPSTREAM_MS", "2000"),
    ])
    .await;
    let calls = futures_util::future::join_all((0..6).map(|_| app.get("/client?ms=300")));
    let during = async {
        actix_web::rt::time::sleep(Duration::from_millis(150)).await;
        let text = app.metrics().await;
        let read = |name| crate::helpers::series_value(&text, name, &[]).unwrap_or(f64::NAN);
        (
            read("admission_inflight"),
            read("admission_shadow_inflight"),
        )
    };
    let (replies, during) = futures_util::future::join(calls, during).await;
    let mut statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    statuses.sort_unstable();
    (app, statuses, during)
}

#[actix_web::test]
async fn shadow_admission_lets_through_exactly_what_enforcing_sheds_and_counts_it_apart() {
    let (enforced, statuses, _) = six_at_once("true").await;
    assert_eq!(statuses, [200, 200, 429, 429, 429, 429]);
    let text = enforced.metrics().await;
    assert_eq!(client_decisions(&text, "normal", "shed"), Some(4.0));
    assert!(!text.contains("admission_shadow_total"));

    let (shadow, statuses, (inflight, shadow_inflight)) = six_at_once("false").await;
    assert_eq!(statuses, [200; 6], "every request goes on");
    // Decided on the count enforcing would have had: 2 hold slots, 4 run only by shadow mode.
    assert_eq!((inflight, shadow_inflight), (2.0, 4.0));
    let text = shadow.metrics().await;
    assert_eq!(client_decisions(&text, "normal", "admitted"), Some(2.0));
    assert_eq!(client_decisions(&text, "normal", "shed"), Some(0.0));
    assert_eq!(
        shadow
            .metric("admission_shadow_total", &[("reason", "capacity")])
            .await,
        Some(4.0)
    );
    // Everything given back: no slot and no shadow count left.
    shadow
        .wait_for(
            "admission_shadow_inflight",
            &[],
            0.0,
            Duration::from_secs(1),
        )
        .await;
    assert_eq!(shadow.metric("admission_inflight", &[]).await, Some(0.0));
}

#[actix_web::test]
async fn a_shadow_breaker_trips_and_recovers_as_ever_but_every_call_goes_on() {
    let app = spawn_app(&[
        ("LOAD_SHED__BREAKER__ENFORCE", "false"),
        ("LOAD_SHED__BREAKER__OPEN_SECONDS", "1"),
    ])
    .await;
    for _ in 0..12 {
        assert_eq!(app.get("/client?ms=0&fail_rate=1").await.status, 502);
        // Each verdict reaches the actor before the next call, as one caller's calls would.
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    // Open after the fifth failure, as when enforcing: the 7 calls after it would have been refused.
    assert_eq!(app.metric("circuit_breaker_state", &[]).await, Some(1.0));
    for (name, labels, n) in [
        ("circuit_breaker_shadow_rejections_total", &[][..], 7.0),
        ("upstream_requests_total", &[("result", "error")][..], 12.0),
        (
            "upstream_requests_total",
            &[("result", "breaker_open")][..],
            0.0,
        ),
    ] {
        assert_eq!(app.metric(name, labels).await, Some(n), "{name} {labels:?}");
    }
    // Its state keeps moving on real outcomes: half-open after the pause, closed by the probe.
    app.wait_for("circuit_breaker_state", &[], 2.0, Duration::from_secs(3))
        .await;
    assert_eq!(app.get("/client?ms=0").await.status, 200);
    app.wait_for("circuit_breaker_state", &[], 0.0, Duration::from_secs(1))
        .await;
}

#[actix_web::test]
async fn enforcing_by_default_no_shadow_series_exist() {
    let app = spawn_app(&[]).await;
    assert_eq!(app.get("/client?ms=0").await.status, 200);
    let text = app.metrics().await;
    for name in [
        "admission_shadow_total",
        "admission_shadow_inflight",
        "circuit_breaker_shadow_rejections_total",
    ] {
        assert!(!text.contains(name), "{name}");
    }
}
