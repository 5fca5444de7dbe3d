//! The throttling policy (`breaker.mode = "throttle"`) seen from outside: a share of calls is
//! refused with 503 `{"error":"throttled"}` and `Retry-After: 1`, counted and shown; it never
//! opens, and it lets calls through again once the failures leave its window. Off (the default),
//! none of its series exist.

use std::time::Duration;

use crate::helpers::spawn_app;

fn throttled(env: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut pairs = vec![
        ("LOAD_SHED__BREAKER__MODE", "throttle"),
        ("LOAD_SHED__BREAKER__THROTTLE_WINDOW_SECONDS", "2"),
    ];
    pairs.extend_from_slice(env);
    pairs
}

#[actix_web::test]
async fn a_failing_dependency_is_throttled_up_to_the_cap_and_every_refusal_is_counted() {
    let app = spawn_app(&throttled(&[(
        "LOAD_SHED__BREAKER__THROTTLE_MAX_PROBABILITY",
        "0.9",
    )]))
    .await;
    let (mut sent, mut refused) = (0.0, 0.0);
    for _ in 0..80 {
        let r = app.get("/client?ms=0&fail_rate=1").await;
        match r.status {
            502 => sent += 1.0,
            503 => {
                refused += 1.0;
                assert_eq!(r.json, serde_json::json!({"error": "throttled"}));
                assert_eq!(r.retry_after.as_deref(), Some("1"));
            }
            other => panic!("unexpected {other}: {:?}", r.json),
        }
    }
    // P reaches the 0.9 cap within a few failures: most of the 80 are refused, never all.
    assert!(refused >= 50.0, "{refused} refused, {sent} sent");
    assert!(sent >= 3.0, "{refused} refused, {sent} sent");
    for (result, n) in [
        ("throttled", refused),
        ("error", sent),
        ("breaker_open", 0.0),
    ] {
        assert_eq!(
            app.metric("upstream_requests_total", &[("result", result)])
                .await,
            Some(n),
            "{result}"
        );
    }
    // Verdicts reach the actor just after the answers.
    app.wait_for(
        "circuit_breaker_rejection_probability",
        &[],
        0.9,
        Duration::from_secs(1),
    )
    .await;
    // At the cap the state reads open (1), having passed through half-open (2).
    assert_eq!(app.metric("circuit_breaker_state", &[]).await, Some(1.0));
    for to in ["half_open", "open"] {
        let n = app
            .metric("circuit_breaker_transitions_total", &[("to", to)])
            .await;
        assert!(n >= Some(1.0), "{to}: {n:?}");
    }
}

#[actix_web::test]
async fn once_the_failures_leave_the_window_every_call_goes_through_again() {
    let app = spawn_app(&throttled(&[])).await;
    for _ in 0..30 {
        let status = app.get("/client?ms=0&fail_rate=1").await.status;
        assert!(status == 502 || status == 503, "{status}");
    }
    app.wait_for("circuit_breaker_state", &[], 1.0, Duration::from_secs(1))
        .await;
    // The 2 s window forgets the failures by itself (the gauges refresh with no traffic).
    app.wait_for(
        "circuit_breaker_rejection_probability",
        &[],
        0.0,
        Duration::from_secs(4),
    )
    .await;
    assert_eq!(app.metric("circuit_breaker_state", &[]).await, Some(0.0));
    for _ in 0..30 {
        assert_eq!(app.get("/client?ms=0").await.status, 200);
    }
    assert_eq!(
        app.metric("circuit_breaker_rejection_probability", &[])
            .await,
        Some(0.0),
        "calls that all succeed refuse nothing"
    );
}

#[actix_web::test]
async fn a_callers_own_short_timeout_does_not_count_against_the_dependency() {
    let app = spawn_app(&throttled(&[])).await;
    // 40 calls that outlast the caller's own 5 ms timeout: neutral, so nothing is refused.
    for _ in 0..40 {
        assert_eq!(app.get("/client?ms=50&timeout_ms=5").await.status, 504);
    }
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        app.metric("circuit_breaker_rejection_probability", &[])
            .await,
        Some(0.0)
    );
    assert_eq!(
        app.metric("upstream_requests_total", &[("result", "throttled")])
            .await,
        Some(0.0)
    );
}

#[actix_web::test]
async fn off_by_default_none_of_its_series_exist() {
    let app = spawn_app(&[]).await;
    assert_eq!(app.get("/client?ms=0").await.status, 200);
    let text = app.metrics().await;
    assert!(!text.contains("circuit_breaker_rejection_probability"));
    assert!(!text.contains(r#"result="throttled""#));
}
