//! Clients that go away mid-request: permits come back, nothing is counted as an upstream result.

use std::time::Duration;

use crate::helpers::{send_and_leave_open, spawn_app};

#[actix_web::test]
async fn permits_are_released_when_clients_abort_mid_request() {
    let app = spawn_app(&[("LOAD_SHED__BREAKER__FAILURE_THRESHOLD", "1")]).await;
    let streams: Vec<_> = (0..20)
        .map(|_| send_and_leave_open(app.api, "GET", "/client?ms=3000&timeout_ms=5000"))
        .collect();
    app.wait_for("admission_inflight", &[], 20.0, Duration::from_secs(3))
        .await;
    drop(streams);

    // Released at the disconnect, well before the upstream's 3 s would end.
    app.wait_for("admission_inflight", &[], 0.0, Duration::from_millis(1500))
        .await;
    app.wait_for(
        "http_requests_total",
        &[("method", "GET"), ("path", "/client"), ("status", "499")],
        20.0,
        Duration::from_secs(1),
    )
    .await;
    let text = app.metrics().await;
    for line in text
        .lines()
        .filter(|l| l.starts_with("upstream_requests_total"))
    {
        assert!(line.ends_with(" 0"), "an aborted call was counted: {line}");
    }
    // An abandoned call is no verdict: the breaker (threshold 1) stays closed and serves.
    assert_eq!(app.metric("circuit_breaker_state", &[]).await, Some(0.0));
    assert_eq!(app.get("/client?ms=0").await.status, 200);
}

#[actix_web::test]
async fn an_abandoned_probe_frees_its_slot_for_the_next_caller() {
    let app = spawn_app(&[
        ("LOAD_SHED__BREAKER__FAILURE_THRESHOLD", "1"),
        ("LOAD_SHED__BREAKER__OPEN_SECONDS", "1"),
    ])
    .await;
    assert_eq!(app.get("/client?ms=0&fail_rate=1").await.status, 502);
    app.wait_for("circuit_breaker_state", &[], 2.0, Duration::from_secs(3))
        .await;
    // This caller takes the only probe slot and leaves.
    let probe = send_and_leave_open(app.api, "GET", "/client?ms=3000&timeout_ms=5000");
    app.wait_for("admission_inflight", &[], 1.0, Duration::from_secs(2))
        .await;
    assert_eq!(app.get("/client?ms=0").await.status, 503);
    drop(probe);
    app.wait_for("admission_inflight", &[], 0.0, Duration::from_secs(2))
        .await;
    // The slot is free again: the next caller probes and closes the breaker.
    assert_eq!(app.get("/client?ms=0").await.status, 200);
    app.wait_for("circuit_breaker_state", &[], 0.0, Duration::from_secs(1))
        .await;
}
