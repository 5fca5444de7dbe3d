//! Priority ceilings over real HTTP, with the metrics reconciling.

use std::time::Duration;

use crate::helpers::{spawn_app, TestApp};

const HOLD: &str = "/client?ms=700&timeout_ms=3000";

async fn inflight_reaches(app: &TestApp, n: f64) {
    app.wait_for("admission_inflight", &[], n, Duration::from_secs(3))
        .await;
}

fn hold(app: &TestApp, priority: &'static str) -> actix_web::rt::task::JoinHandle<u16> {
    let url = app.url(&format!("{HOLD}&priority={priority}"));
    actix_web::rt::spawn(async move {
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(10))
            .finish();
        let mut res = client.get(url).send().await.expect("held request");
        let _ = res.body().await;
        res.status().as_u16()
    })
}

#[actix_web::test]
async fn each_priority_is_shed_at_its_own_ceiling_and_the_counts_reconcile() {
    let app = spawn_app(&[
        ("LOAD_SHED__ADMISSION__MAX_INFLIGHT", "4"),
        ("LOAD_SHED__ADMISSION__NORMAL_MAX_INFLIGHT", "3"),
        ("LOAD_SHED__ADMISSION__LOW_MAX_INFLIGHT", "2"),
    ])
    .await;
    let mut held = vec![hold(&app, "low"), hold(&app, "low")];
    inflight_reaches(&app, 2.0).await;

    let r = app.get("/client?ms=0&priority=low").await;
    assert_eq!(r.status, 429);
    assert_eq!(
        r.json,
        serde_json::json!({"error": "overloaded", "priority": "low", "reason": "capacity"})
    );
    let secs: u64 = r.retry_after.expect("Retry-After").parse().unwrap();
    assert!(secs >= 1);

    held.push(hold(&app, "normal"));
    inflight_reaches(&app, 3.0).await;
    assert_eq!(app.get("/client?ms=0&priority=normal").await.status, 429);
    assert_eq!(
        app.get_with("/client?ms=0", &[("X-Priority", "low")])
            .await
            .status,
        429
    );

    held.push(hold(&app, "high"));
    inflight_reaches(&app, 4.0).await;
    let r = app
        .get_with("/client?ms=0", &[("X-Priority", "high")])
        .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json["priority"], "high");

    for h in held {
        assert_eq!(h.await.unwrap(), 200);
    }
    inflight_reaches(&app, 0.0).await;

    // offered = admitted + shed, per class.
    let text = app.metrics().await;
    let count = |p: &str, d: &str| crate::helpers::client_decisions(&text, p, d).unwrap();
    for (priority, offered, admitted) in
        [("low", 4.0, 2.0), ("normal", 2.0, 1.0), ("high", 2.0, 1.0)]
    {
        assert_eq!(count(priority, "admitted"), admitted, "{priority}");
        assert_eq!(
            count(priority, "admitted") + count(priority, "shed"),
            offered,
            "{priority}"
        );
    }
    for (p, limit) in [("high", 4.0), ("normal", 3.0), ("low", 2.0)] {
        assert_eq!(
            crate::helpers::series_value(&text, "admission_limit", &[("priority", p)]),
            Some(limit)
        );
    }
    let http_429 = crate::helpers::series_value(
        &text,
        "http_requests_total",
        &[("method", "GET"), ("path", "/client"), ("status", "429")],
    );
    assert_eq!(http_429, Some(4.0));
    let shed =
        |reason| crate::helpers::series_value(&text, "admission_shed_total", &[("reason", reason)]);
    assert_eq!(shed("capacity"), Some(4.0));
    assert_eq!(shed("tenant_share"), Some(0.0));
    // Tenant fairness is off: no tenant gauge.
    assert_eq!(
        crate::helpers::series_value(&text, "admission_tenants_active", &[]),
        None
    );
}

#[actix_web::test]
async fn a_shed_request_is_answered_at_once() {
    let app = spawn_app(&[
        ("LOAD_SHED__ADMISSION__MAX_INFLIGHT", "3"),
        ("LOAD_SHED__ADMISSION__NORMAL_MAX_INFLIGHT", "2"),
        ("LOAD_SHED__ADMISSION__LOW_MAX_INFLIGHT", "1"),
    ])
    .await;
    let held = hold(&app, "low");
    inflight_reaches(&app, 1.0).await;
    let started = std::time::Instant::now();
    assert_eq!(app.get("/client?ms=0&priority=low").await.status, 429);
    assert!(started.elapsed() < Duration::from_millis(300));
    assert_eq!(held.await.unwrap(), 200);
}

#[actix_web::test]
async fn a_client_is_never_shed_by_the_slot_of_its_own_previous_request() {
    // Low priority may hold one slot. Back-to-back requests from one client each find the slot
    // of the previous one already free, however late the actor processes its release.
    let app = spawn_app(&[
        ("LOAD_SHED__ADMISSION__MAX_INFLIGHT", "3"),
        ("LOAD_SHED__ADMISSION__NORMAL_MAX_INFLIGHT", "2"),
        ("LOAD_SHED__ADMISSION__LOW_MAX_INFLIGHT", "1"),
    ])
    .await;
    let mut shed = 0;
    for _ in 0..300 {
        let status = app.get("/client?ms=0&priority=low").await.status;
        assert!(status == 200 || status == 429, "{status}");
        shed += usize::from(status == 429);
    }
    assert_eq!(shed, 0, "{shed} of 300 sequential requests were shed");
}

/// 40 clients for `seconds` against a dependency serving `slots` calls at once (50 ms each), with
/// adaptive admission; returns the metrics text at the end and the highest limit seen.
async fn adaptive_run(slots: &str, seconds: u64) -> (String, f64) {
    let app = spawn_app(&[
        ("LOAD_SHED__ADMISSION__MODE", "adaptive"),
        ("LOAD_SHED__UPSTREAM__CONCURRENCY", slots),
        ("LOAD_SHED__UPSTREAM__LATENCY_MS", "50"),
        ("LOAD_SHED__TIMEOUTS__UPSTREAM_MS", "5000"),
    ])
    .await;
    let text = app.metrics().await;
    assert_eq!(
        high(&text),
        5.0,
        "starts at min_limit, measuring the baseline"
    );
    // Lower classes get their fractions of the live limit.
    assert_eq!(
        crate::helpers::series_value(&text, "admission_limit", &[("priority", "low")]),
        Some(3.0)
    );
    let url = app.url("/client?priority=high");
    let until = std::time::Instant::now() + Duration::from_secs(seconds);
    let clients: Vec<_> = (0..40)
        .map(|_| {
            let url = url.clone();
            actix_web::rt::spawn(async move {
                let client = awc::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .finish();
                while std::time::Instant::now() < until {
                    if let Ok(mut res) = client.get(&url).send().await {
                        let _ = res.body().await;
                    }
                }
            })
        })
        .collect();
    let mut highest: f64 = 0.0;
    while std::time::Instant::now() < until {
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        highest = highest.max(high(&app.metrics().await));
    }
    for c in clients {
        c.await.unwrap();
    }
    (app.metrics().await, highest)
}

fn high(text: &str) -> f64 {
    crate::helpers::series_value(text, "admission_limit", &[("priority", "high")]).unwrap()
}

fn latency(text: &str, window: &str) -> f64 {
    crate::helpers::series_value(text, "admission_latency_seconds", &[("window", window)]).unwrap()
}

#[actix_web::test]
async fn the_adaptive_limit_stays_near_a_small_dependencys_capacity() {
    // 4 calls at once, 50 ms each: 80 calls/s. 40 clients would queue ~10 deep with static ceilings.
    let (text, highest) = adaptive_run("4", 3).await;
    let limit = high(&text);
    assert!((5.0..=12.0).contains(&limit), "limit {limit}");
    assert!(highest <= 16.0, "never far above the capacity: {highest}");
    let (recent, baseline) = (latency(&text, "short"), latency(&text, "long"));
    assert!(
        (0.045..0.1).contains(&baseline),
        "the baseline is the latency without queueing: {baseline}"
    );
    assert!(
        recent < baseline * 2.5,
        "a short queue, not 40 deep: {recent} vs {baseline}"
    );
    // The excess was shed with 429s instead of waiting in the dependency's queue.
    assert!(crate::helpers::client_decisions(&text, "high", "shed").unwrap() > 0.0);
}

#[actix_web::test]
async fn the_adaptive_limit_grows_while_the_dependency_keeps_up() {
    // 100 calls at once: 40 clients never make it queue, so the limit climbs past their number.
    // (5 s of load: the climb takes ~1.5 s alone, longer when the parallel suite holds the cores.)
    let (text, highest) = adaptive_run("100", 5).await;
    assert!(highest >= 40.0, "grew from 5 to {highest}");
    assert!(latency(&text, "short") < latency(&text, "long") * 1.5);
}
