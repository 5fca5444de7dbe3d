//! The contract's metric names, types and labels, as scraped.

use crate::helpers::spawn_app;

#[actix_web::test]
async fn every_contract_metric_is_exposed_with_its_type() {
    let app = spawn_app(&[]).await;
    // Touch the HTTP metrics and an unmatched path first.
    assert_eq!(app.get("/client?ms=0").await.status, 200);
    assert_eq!(app.get("/does/not/exist").await.status, 404);
    let text = app.metrics().await;
    for (name, kind) in [
        ("http_requests_total", "counter"),
        ("http_request_duration_seconds", "histogram"),
        ("upstream_requests_total", "counter"),
        ("upstream_request_duration_seconds", "histogram"),
        ("circuit_breaker_state", "gauge"),
        ("circuit_breaker_transitions_total", "counter"),
        ("admission_requests_total", "counter"),
        ("admission_inflight", "gauge"),
        ("admission_limit", "gauge"),
        ("autoscaling_load_ratio", "gauge"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_cpu_seconds_total", "counter"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} {kind} missing"
        );
    }
    // The seed's selectors match.
    assert!(text.contains(r#"http_requests_total{method="GET",path="/client",status="200"} 1"#));
    assert!(text.contains(r#"http_request_duration_seconds_bucket{method="GET",path="/client",status="200",le="0.001"}"#));
    assert!(text.contains(
        r#"http_request_duration_seconds_bucket{method="GET",path="/client",status="200",le="10"}"#
    ));
    // Unmatched paths are masked, never raw.
    assert!(text.contains(r#"http_requests_total{method="GET",path="unmatched",status="404"} 1"#));
    assert!(!text.contains("/does/not/exist"));
    for result in ["ok", "error", "timeout", "transport", "breaker_open"] {
        assert!(
            text.contains(&format!("upstream_requests_total{{result=\"{result}\"}}")),
            "{result}"
        );
    }
}

#[actix_web::test]
async fn both_ports_of_role_all_serve_the_one_registry() {
    let app = spawn_app(&[]).await;
    assert_eq!(app.get("/client?ms=0").await.status, 200);
    let upstream = app.upstream.expect("role all has an upstream");
    let mut res = app
        .client
        .get(format!("http://{upstream}/metrics"))
        .send()
        .await
        .unwrap();
    let body = res.body().await.unwrap();
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains(r#"upstream_requests_total{result="ok"} 1"#));
    assert!(text.contains(r#"http_requests_total{method="GET",path="/client",status="200"} 1"#));
}

#[actix_web::test]
async fn health_and_readiness_answer_json() {
    let app = spawn_app(&[]).await;
    let r = app.get("/healthz").await;
    assert_eq!((r.status, r.json), (200, serde_json::json!({"ok": true})));
    let r = app.get("/readyz").await;
    assert_eq!(r.status, 200);
}
