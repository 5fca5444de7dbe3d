//! The simulated dependency and its configured defaults.

use crate::helpers::{raw_request, spawn_app, spawn_upstream};

#[actix_web::test]
async fn the_upstream_waits_then_answers_or_fails_as_asked() {
    let addr = spawn_upstream(&[]).await;
    let get =
        |path: &'static str| actix_web::web::block(move || raw_request(addr, "GET", path).unwrap());
    let (status, body) = get("/upstream?ms=0").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, r#"{"ms":0,"ok":true}"#);
    let (status, body) = get("/upstream?ms=0&fail_rate=1").await.unwrap();
    assert_eq!(status, 503);
    assert_eq!(body, r#"{"error":"injected failure"}"#);
    let started = std::time::Instant::now();
    assert_eq!(get("/upstream?ms=120").await.unwrap().0, 200);
    assert!(started.elapsed() >= std::time::Duration::from_millis(120));
    for bad in [
        "/upstream?ms=5001",
        "/upstream?fail_rate=nan",
        "/upstream?ms=1&ms=1",
    ] {
        assert_eq!(get(bad).await.unwrap().0, 400, "{bad}");
    }
}

#[actix_web::test]
async fn the_upstreams_configured_defaults_apply_to_every_caller() {
    let app = spawn_app(&[
        ("LOAD_SHED__UPSTREAM__FAIL_RATE", "1.0"),
        ("LOAD_SHED__UPSTREAM__LATENCY_MS", "0"),
    ])
    .await;
    // The api passes no fail_rate, so the upstream's configured 1.0 applies.
    assert_eq!(app.get("/client").await.status, 502);
    // A caller's explicit value still wins.
    assert_eq!(app.get("/client?fail_rate=0").await.status, 200);
}
