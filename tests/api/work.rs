//! `POST /work`: CPU burn, admitted, with its permit held until the burn ends.

use std::time::{Duration, Instant};

use crate::helpers::{send_and_leave_open, spawn_app};

#[actix_web::test]
async fn work_burns_for_the_asked_time() {
    let app = spawn_app(&[]).await;
    let started = Instant::now();
    let r = app.post("/work?ms=120&priority=low").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json,
        serde_json::json!({"ok": true, "ms": 120, "priority": "low"})
    );
    assert!(started.elapsed() >= Duration::from_millis(120));
    assert_eq!(app.post("/work?ms=0").await.status, 400);
    assert_eq!(app.post("/work?ms=2001").await.status, 400);
    assert_eq!(app.get("/work").await.status, 405);
}

#[actix_web::test]
async fn work_is_shed_by_priority_like_client() {
    let app = spawn_app(&[
        ("LOAD_SHED__ADMISSION__MAX_INFLIGHT", "3"),
        ("LOAD_SHED__ADMISSION__NORMAL_MAX_INFLIGHT", "2"),
        ("LOAD_SHED__ADMISSION__LOW_MAX_INFLIGHT", "1"),
    ])
    .await;
    let burning = send_and_leave_open(app.api, "POST", "/work?ms=600&priority=low");
    app.wait_for("admission_inflight", &[], 1.0, Duration::from_secs(2))
        .await;
    let r = app.post("/work?ms=1&priority=low").await;
    assert_eq!(r.status, 429);
    assert_eq!(app.post("/work?ms=1&priority=high").await.status, 200);
    drop(burning);
}

#[actix_web::test]
async fn a_work_permit_is_held_until_the_burn_ends_even_if_the_client_left() {
    let app = spawn_app(&[]).await;
    let stream = send_and_leave_open(app.api, "POST", "/work?ms=900");
    app.wait_for("admission_inflight", &[], 1.0, Duration::from_secs(2))
        .await;
    drop(stream);
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.metric("admission_inflight", &[]).await,
        Some(1.0),
        "released before the burn ended"
    );
    app.wait_for("admission_inflight", &[], 0.0, Duration::from_secs(3))
        .await;
}
