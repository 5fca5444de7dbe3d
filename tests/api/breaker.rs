//! The seed's walkthrough and the breaker's probe rules, seen from outside.

use std::time::Duration;

use crate::helpers::spawn_app;

async fn state(app: &crate::helpers::TestApp) -> f64 {
    app.metric("circuit_breaker_state", &[])
        .await
        .expect("the gauge exists")
}

#[actix_web::test]
async fn the_seed_walkthrough_baseline_trip_and_recovery_moves_the_gauge_0_1_0() {
    let app = spawn_app(&[("LOAD_SHED__BREAKER__OPEN_SECONDS", "1")]).await;

    // Baseline: healthy traffic.
    for _ in 0..20 {
        assert_eq!(app.get("/client?ms=1").await.status, 200);
    }
    assert_eq!(state(&app).await, 0.0);

    // Trip: four failures leave it closed, the fifth opens it, then calls fail fast.
    for _ in 0..4 {
        assert_eq!(app.get("/client?ms=1&fail_rate=1.0").await.status, 502);
    }
    // Verdicts reach the actor just after the answer: give them a moment before reading.
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(state(&app).await, 0.0);
    assert_eq!(app.get("/client?ms=1&fail_rate=1.0").await.status, 502);
    app.wait_for("circuit_breaker_state", &[], 1.0, Duration::from_secs(1))
        .await;
    for _ in 0..7 {
        assert_eq!(app.get("/client?ms=1&fail_rate=1.0").await.status, 503);
    }
    assert_eq!(
        app.metric("upstream_requests_total", &[("result", "error")])
            .await,
        Some(5.0)
    );
    assert_eq!(
        app.metric("upstream_requests_total", &[("result", "breaker_open")])
            .await,
        Some(7.0)
    );

    // Wait: after open_seconds the gauge shows half-open by itself.
    app.wait_for("circuit_breaker_state", &[], 2.0, Duration::from_secs(3))
        .await;

    // Recover: the probe succeeds and closes it (its verdict reaches the actor just after the
    // answer); traffic flows again.
    assert_eq!(app.get("/client?ms=1&fail_rate=0.0").await.status, 200);
    app.wait_for("circuit_breaker_state", &[], 0.0, Duration::from_secs(1))
        .await;
    for _ in 0..19 {
        assert_eq!(app.get("/client?ms=1&fail_rate=0.0").await.status, 200);
    }
    for (to, n) in [("open", 1.0), ("half_open", 1.0), ("closed", 1.0)] {
        assert_eq!(
            app.metric("circuit_breaker_transitions_total", &[("to", to)])
                .await,
            Some(n),
            "{to}"
        );
    }
}

#[actix_web::test]
async fn a_failed_probe_opens_the_breaker_again() {
    let app = spawn_app(&[
        ("LOAD_SHED__BREAKER__OPEN_SECONDS", "1"),
        ("LOAD_SHED__BREAKER__FAILURE_THRESHOLD", "1"),
    ])
    .await;
    assert_eq!(app.get("/client?ms=0&fail_rate=1").await.status, 502);
    // Verdicts reach the actor just after the answer.
    app.wait_for("circuit_breaker_state", &[], 1.0, Duration::from_secs(1))
        .await;
    app.wait_for("circuit_breaker_state", &[], 2.0, Duration::from_secs(3))
        .await;
    assert_eq!(app.get("/client?ms=0&fail_rate=1").await.status, 502);
    // Verdicts reach the actor just after the answer.
    app.wait_for("circuit_breaker_state", &[], 1.0, Duration::from_secs(1))
        .await;
    assert_eq!(
        app.metric("circuit_breaker_transitions_total", &[("to", "open")])
            .await,
        Some(2.0)
    );
    assert_eq!(app.get("/client?ms=0").await.status, 503);
}

#[actix_web::test]
async fn while_the_probe_is_out_others_get_503_with_a_short_retry_after() {
    let app = spawn_app(&[
        ("LOAD_SHED__BREAKER__OPEN_SECONDS", "1"),
        ("LOAD_SHED__BREAKER__FAILURE_THRESHOLD", "1"),
    ])
    .await;
    assert_eq!(app.get("/client?ms=0&fail_rate=1").await.status, 502);
    app.wait_for("circuit_breaker_state", &[], 2.0, Duration::from_secs(3))
        .await;

    let probe = app.get("/client?ms=400&timeout_ms=2000");
    let other = async {
        actix_web::rt::time::sleep(Duration::from_millis(150)).await;
        app.get("/client?ms=0").await
    };
    let (probe, other) = tokio::join!(probe, other);
    assert_eq!(other.status, 503);
    assert_eq!(other.retry_after.as_deref(), Some("1"));
    assert_eq!(probe.status, 200);
    app.wait_for("circuit_breaker_state", &[], 0.0, Duration::from_secs(1))
        .await;
}

#[actix_web::test]
async fn the_failure_rate_mode_opens_on_a_share_of_failures_that_never_comes_in_a_row() {
    let env = [
        ("LOAD_SHED__BREAKER__MODE", "failure_rate"),
        ("LOAD_SHED__BREAKER__WINDOW_SIZE", "10"),
        ("LOAD_SHED__BREAKER__MINIMUM_CALLS", "10"),
        ("LOAD_SHED__BREAKER__FAILURE_RATE_THRESHOLD", "0.5"),
    ];
    let rate_mode = spawn_app(&env).await;
    let consecutive = spawn_app(&[]).await;
    for app in [&rate_mode, &consecutive] {
        // Failure, success, failure, ...: 50 % failures, never two in a row.
        for i in 0..10 {
            let fail = if i % 2 == 0 { "1" } else { "0" };
            let status = app
                .get(&format!("/client?ms=0&fail_rate={fail}"))
                .await
                .status;
            assert!(status == 502 || status == 200, "{status}");
        }
    }
    rate_mode
        .wait_for("circuit_breaker_state", &[], 1.0, Duration::from_secs(1))
        .await;
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        state(&consecutive).await,
        0.0,
        "the consecutive rule never sees 5 in a row"
    );
    assert_eq!(
        consecutive
            .metric("circuit_breaker_failure_rate", &[])
            .await,
        Some(0.0)
    );
}
