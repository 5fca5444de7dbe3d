//! Every row of the contract's `/client` outcome table, over real HTTP.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use crate::helpers::{spawn_api_against, spawn_app, spawn_upstream};

#[actix_web::test]
async fn a_healthy_upstream_answers_200_with_its_latency_and_the_priority() {
    let app = spawn_app(&[]).await;
    let r = app.get("/client?ms=3&priority=high").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        r.json,
        serde_json::json!({"ok": true, "ms": 3, "priority": "high"})
    );
    // With no ms the upstream applies its own default (50) and reports it.
    let r = app.get("/client").await;
    assert_eq!(
        r.json,
        serde_json::json!({"ok": true, "ms": 50, "priority": "normal"})
    );
    assert_eq!(
        app.metric("upstream_requests_total", &[("result", "ok")])
            .await,
        Some(2.0)
    );
}

#[actix_web::test]
async fn every_bad_parameter_is_a_400_that_names_it_and_counts_in_no_admission_or_upstream_metric()
{
    let app = spawn_app(&[]).await;
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        ("/client?ms=nan", &[], "ms"),
        ("/client?ms=-1", &[], "ms"),
        ("/client?ms=5001", &[], "ms"),
        ("/client?ms=ten", &[], "ms"),
        ("/client?fail_rate=nan", &[], "fail_rate"),
        ("/client?fail_rate=inf", &[], "fail_rate"),
        ("/client?fail_rate=-inf", &[], "fail_rate"),
        ("/client?fail_rate=1.5", &[], "fail_rate"),
        ("/client?fail_rate=half", &[], "fail_rate"),
        ("/client?timeout_ms=0", &[], "timeout_ms"),
        ("/client?timeout_ms=10001", &[], "timeout_ms"),
        ("/client?timeout_ms=1e3", &[], "timeout_ms"),
        ("/client?priority=urgent", &[], "priority"),
        ("/client?priority=High", &[], "priority"),
        ("/client?ms=1&ms=2", &[], "ms"),
        ("/client?msx=1", &[], "msx"),
        ("/client", &[("X-Priority", "urgent")], "X-Priority"),
        (
            "/client",
            &[("X-Request-Timeout-Ms", "-5")],
            "X-Request-Timeout-Ms",
        ),
    ];
    for (path, headers, param) in cases {
        let r = app.get_with(path, headers).await;
        assert_eq!(r.status, 400, "{path} {headers:?}: {:?}", r.json);
        assert_eq!(r.json["param"], *param, "{path}");
        assert!(r.json["error"].is_string(), "{path}");
    }
    let metrics = app.metrics().await;
    for line in metrics.lines().filter(|l| {
        l.starts_with("admission_requests_total") || l.starts_with("upstream_requests_total")
    }) {
        assert!(line.ends_with(" 0"), "a 400 was counted: {line}");
    }
}

#[actix_web::test]
async fn an_upstream_error_is_a_502_with_its_status() {
    let app = spawn_app(&[]).await;
    let r = app.get("/client?ms=0&fail_rate=1.0").await;
    assert_eq!(r.status, 502);
    assert_eq!(
        r.json,
        serde_json::json!({"error": "upstream error", "upstream_status": 503})
    );
    assert_eq!(
        app.metric("upstream_requests_total", &[("result", "error")])
            .await,
        Some(1.0)
    );
}

#[actix_web::test]
async fn a_refused_connection_is_a_502_upstream_unavailable() {
    let closed_port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let app = spawn_api_against(([127, 0, 0, 1], closed_port).into(), &[]).await;
    let r = app.get("/client").await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json, serde_json::json!({"error": "upstream unavailable"}));
    assert_eq!(
        app.metric("upstream_requests_total", &[("result", "transport")])
            .await,
        Some(1.0)
    );
}

#[actix_web::test]
async fn a_slow_upstream_is_a_504_within_the_timeout() {
    let app = spawn_app(&[]).await;
    let started = Instant::now();
    let r = app.get("/client?ms=2000&timeout_ms=150").await;
    let took = started.elapsed();
    assert_eq!(r.status, 504);
    assert_eq!(r.json, serde_json::json!({"error": "upstream timeout"}));
    assert!(took >= Duration::from_millis(150), "{took:?}");
    assert!(
        took < Duration::from_millis(1000),
        "answered after {took:?}"
    );
    assert_eq!(
        app.metric("upstream_requests_total", &[("result", "timeout")])
            .await,
        Some(1.0)
    );
}

#[actix_web::test]
async fn the_budget_header_caps_the_timeout() {
    let app = spawn_app(&[]).await;
    let started = Instant::now();
    let r = app
        .get_with(
            "/client?ms=2000&timeout_ms=5000",
            &[("X-Request-Timeout-Ms", "100")],
        )
        .await;
    assert_eq!(r.status, 504);
    assert!(started.elapsed() < Duration::from_millis(1000));
}

#[actix_web::test]
async fn an_open_breaker_is_a_503_with_retry_after_until_the_probe() {
    let app = spawn_app(&[
        ("LOAD_SHED__BREAKER__FAILURE_THRESHOLD", "2"),
        ("LOAD_SHED__BREAKER__OPEN_SECONDS", "7"),
    ])
    .await;
    for _ in 0..2 {
        assert_eq!(app.get("/client?ms=0&fail_rate=1").await.status, 502);
    }
    // Verdicts reach the actor just after the answer.
    app.wait_for("circuit_breaker_state", &[], 1.0, Duration::from_secs(1))
        .await;
    let r = app.get("/client?ms=0").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json, serde_json::json!({"error": "circuit open"}));
    let secs: u64 = r.retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=7).contains(&secs), "Retry-After {secs}");
    assert_eq!(
        app.metric("upstream_requests_total", &[("result", "breaker_open")])
            .await,
        Some(1.0)
    );
}

#[actix_web::test]
async fn a_callers_own_short_timeout_does_not_open_the_breaker() {
    let app = spawn_app(&[("LOAD_SHED__BREAKER__FAILURE_THRESHOLD", "2")]).await;
    for _ in 0..4 {
        assert_eq!(app.get("/client?ms=1000&timeout_ms=30").await.status, 504);
    }
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(app.metric("circuit_breaker_state", &[]).await, Some(0.0));
    assert_eq!(app.get("/client?ms=0").await.status, 200);
    // Timeouts at the default (200 ms) do count.
    for _ in 0..2 {
        assert_eq!(app.get("/client?ms=1000").await.status, 504);
    }
    app.wait_for("circuit_breaker_state", &[], 1.0, Duration::from_secs(1))
        .await;
}

#[actix_web::test]
async fn an_oversized_upstream_body_is_a_502_transport_failure() {
    // The upstream's 2xx body (~30 bytes) exceeds this cap.
    let upstream = spawn_upstream(&[]).await;
    let app = spawn_api_against(
        upstream,
        &[("LOAD_SHED__API__MAX_UPSTREAM_BODY_BYTES", "8")],
    )
    .await;
    let r = app.get("/client?ms=0").await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json["error"], "upstream unavailable");
}

#[actix_web::test]
async fn the_api_role_calls_the_configured_upstream_url() {
    let upstream = spawn_upstream(&[("LOAD_SHED__UPSTREAM__LATENCY_MS", "1")]).await;
    let url = format!("http://{upstream}/");
    let app = spawn_app(&[
        ("LOAD_SHED__ROLE", "api"),
        ("LOAD_SHED__API__UPSTREAM_URL", &url),
    ])
    .await;
    let r = app.get("/client").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["ms"], 1);
}

#[actix_web::test]
async fn unknown_paths_and_methods_get_json_errors() {
    let app = spawn_app(&[]).await;
    let r = app.get("/nope/../%ff?x=%zz").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    let r = app.post("/client").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.json["error"], "method not allowed");
}

#[actix_web::test]
async fn admission_is_decided_before_the_breaker_even_while_it_is_open() {
    let app = spawn_app(&[
        ("LOAD_SHED__BREAKER__FAILURE_THRESHOLD", "1"),
        ("LOAD_SHED__ADMISSION__MAX_INFLIGHT", "3"),
        ("LOAD_SHED__ADMISSION__NORMAL_MAX_INFLIGHT", "2"),
        ("LOAD_SHED__ADMISSION__LOW_MAX_INFLIGHT", "1"),
    ])
    .await;
    assert_eq!(app.get("/client?ms=0&fail_rate=1").await.status, 502);
    app.wait_for("circuit_breaker_state", &[], 1.0, Duration::from_secs(1))
        .await;
    // A CPU burn holds the only low-priority slot.
    let burn = crate::helpers::send_and_leave_open(app.api, "POST", "/work?ms=800&priority=low");
    app.wait_for("admission_inflight", &[], 1.0, Duration::from_secs(2))
        .await;
    let r = app.get("/client?ms=0&priority=low").await;
    assert_eq!(r.status, 429, "admission answers first: {:?}", r.json);
    let r = app.get("/client?ms=0&priority=high").await;
    assert_eq!(r.status, 503, "{:?}", r.json);
    let text = app.metrics().await;
    let count = |p: &str, d: &str| crate::helpers::client_decisions(&text, p, d);
    assert_eq!(count("low", "shed"), Some(1.0));
    assert_eq!(count("high", "admitted"), Some(1.0));
    // Admitted while the breaker was open: a permit held for no time, released at once.
    assert_eq!(
        crate::helpers::series_value(&text, "admission_released_total", &[("priority", "high")]),
        Some(1.0)
    );
    drop(burn);
}
