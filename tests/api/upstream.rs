//! The simulated dependency and its configured defaults.

use crate::helpers::{raw_request, spawn_app, spawn_upstream};

#[actix_web::test]
async fn injected_failures_carry_the_configured_retry_after() {
    for (seconds, want) in [("0", None), ("7", Some("7"))] {
        let addr = spawn_upstream(&[("LOAD_SHED__UPSTREAM__RETRY_AFTER_SECONDS", seconds)]).await;
        let client = awc::Client::default();
        let url = format!("http://{addr}/upstream?ms=0&fail_rate=1");
        let res = client.get(url).send().await.expect("answer");
        assert_eq!(res.status().as_u16(), 503);
        let header = res
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap());
        assert_eq!(header, want, "retry_after_seconds = {seconds}");
        // Successes never carry it.
        let ok = client
            .get(format!("http://{addr}/upstream?ms=0"))
            .send()
            .await
            .expect("answer");
        assert!(ok.headers().get("retry-after").is_none());
    }
}

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

mod modes {
    //! Each fault mode of the simulator, seen through `/client`: its status and result label.

    use std::time::{Duration, Instant};

    use crate::helpers::{spawn_app, spawn_upstream, TestApp};

    async fn result(app: &TestApp, label: &str) -> Option<f64> {
        app.metric("upstream_requests_total", &[("result", label)])
            .await
    }

    #[actix_web::test]
    async fn limited_concurrency_queues_requests_in_order_so_latency_grows_with_load() {
        let app = spawn_app(&[
            ("LOAD_SHED__UPSTREAM__CONCURRENCY", "2"),
            ("LOAD_SHED__UPSTREAM__LATENCY_MS", "200"),
            ("LOAD_SHED__TIMEOUTS__UPSTREAM_MS", "2000"),
        ])
        .await;
        let started = Instant::now();
        let calls = (0..4).map(|_| app.get("/client"));
        let replies = futures_util::future::join_all(calls).await;
        assert!(replies.iter().all(|r| r.status == 200));
        // Two slots, four calls of 200 ms: the second pair waits for the first.
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(390), "{took:?}");
        assert!(took < Duration::from_millis(1000), "{took:?}");
    }

    #[actix_web::test]
    async fn beyond_max_waiting_a_request_is_refused_at_once_with_503() {
        let upstream = spawn_upstream(&[
            ("LOAD_SHED__UPSTREAM__CONCURRENCY", "1"),
            ("LOAD_SHED__UPSTREAM__MAX_WAITING", "1"),
            ("LOAD_SHED__UPSTREAM__LATENCY_MS", "300"),
            ("LOAD_SHED__UPSTREAM__RETRY_AFTER_SECONDS", "2"),
        ])
        .await;
        let client = awc::Client::default();
        let url = format!("http://{upstream}/upstream");
        let call = || async {
            let started = Instant::now();
            let res = client.get(&url).send().await.expect("an answer");
            (
                res.status().as_u16(),
                res.headers().get("retry-after").cloned(),
                started.elapsed(),
            )
        };
        // One runs, one waits; the third finds the line full.
        let (a, b, c) = futures_util::future::join3(call(), call(), async {
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
            call().await
        })
        .await;
        assert_eq!((a.0, b.0), (200, 200));
        assert!(
            a.2.max(b.2) >= Duration::from_millis(590),
            "the second waited"
        );
        assert_eq!(c.0, 503);
        assert!(
            c.2 < Duration::from_millis(100),
            "refused at once: {:?}",
            c.2
        );
        assert_eq!(c.1.as_ref().and_then(|v| v.to_str().ok()), Some("2"));
        // The line empties: a later request is served again.
        assert_eq!(call().await.0, 200);
    }

    #[actix_web::test]
    async fn the_scheduled_capacity_loss_leaves_fewer_slots_after_its_delay() {
        let app = spawn_app(&[
            ("LOAD_SHED__UPSTREAM__CONCURRENCY", "4"),
            ("LOAD_SHED__UPSTREAM__DEGRADE_AFTER_SECONDS", "1"),
            ("LOAD_SHED__UPSTREAM__DEGRADED_CONCURRENCY", "1"),
            ("LOAD_SHED__UPSTREAM__LATENCY_MS", "150"),
            ("LOAD_SHED__TIMEOUTS__UPSTREAM_MS", "2000"),
        ])
        .await;
        let up = Instant::now();
        let four_at_once = || async {
            let started = Instant::now();
            let replies = futures_util::future::join_all((0..4).map(|_| app.get("/client"))).await;
            assert!(replies.iter().all(|r| r.status == 200));
            started.elapsed()
        };
        // Four slots: four calls of 150 ms run side by side.
        let before = four_at_once().await;
        assert!(before < Duration::from_millis(290), "{before:?}");
        actix_web::rt::time::sleep(Duration::from_millis(1200).saturating_sub(up.elapsed())).await;
        // One slot left: they run one after the other.
        let after = four_at_once().await;
        assert!(after >= Duration::from_millis(590), "{after:?}");
    }

    #[actix_web::test]
    async fn jitter_spreads_latency_around_the_configured_value() {
        let app = spawn_app(&[
            ("LOAD_SHED__UPSTREAM__LATENCY_MS", "50"),
            ("LOAD_SHED__UPSTREAM__JITTER_MS", "40"),
        ])
        .await;
        let mut took = Vec::new();
        for _ in 0..12 {
            let started = Instant::now();
            assert_eq!(app.get("/client").await.status, 200);
            took.push(started.elapsed());
        }
        took.sort();
        assert!(took[0] >= Duration::from_millis(10), "{took:?}");
        assert!(took[11] < Duration::from_millis(150), "{took:?}");
        assert!(
            took[11] - took[0] > Duration::from_millis(10),
            "no spread: {took:?}"
        );
    }

    #[actix_web::test]
    async fn a_long_tail_spike_past_the_timeout_is_a_504() {
        let app = spawn_app(&[
            ("LOAD_SHED__UPSTREAM__LATENCY_MS", "1"),
            ("LOAD_SHED__UPSTREAM__TAIL_RATE", "1.0"),
            ("LOAD_SHED__UPSTREAM__TAIL_MS", "400"),
        ])
        .await;
        assert_eq!(app.get("/client").await.status, 504);
        assert_eq!(result(&app, "timeout").await, Some(1.0));
    }

    #[actix_web::test]
    async fn the_configured_failure_status_reaches_the_caller() {
        let app = spawn_app(&[
            ("LOAD_SHED__UPSTREAM__FAIL_STATUS", "500"),
            ("LOAD_SHED__UPSTREAM__FAIL_RATE", "1.0"),
            ("LOAD_SHED__UPSTREAM__LATENCY_MS", "0"),
        ])
        .await;
        let r = app.get("/client").await;
        assert_eq!(
            (r.status, r.json["upstream_status"].as_u64()),
            (502, Some(500))
        );
        assert_eq!(result(&app, "error").await, Some(1.0));
    }

    #[actix_web::test]
    async fn a_hanging_upstream_is_a_504_within_the_timeout() {
        let app = spawn_app(&[("LOAD_SHED__UPSTREAM__HANG_RATE", "1.0")]).await;
        let started = Instant::now();
        assert_eq!(app.get("/client").await.status, 504);
        assert!(started.elapsed() < Duration::from_millis(700));
        assert_eq!(result(&app, "timeout").await, Some(1.0));
    }

    #[actix_web::test]
    async fn a_reset_mid_response_is_a_502_transport_failure() {
        let app = spawn_app(&[("LOAD_SHED__UPSTREAM__RESET_RATE", "1.0")]).await;
        let r = app.get("/client").await;
        assert_eq!(
            (r.status, r.json["error"].as_str()),
            (502, Some("upstream unavailable"))
        );
        assert_eq!(result(&app, "transport").await, Some(1.0));
    }

    #[actix_web::test]
    async fn with_overrides_disabled_no_caller_can_make_the_dependency_fail() {
        let app = spawn_app(&[
            ("LOAD_SHED__UPSTREAM__ALLOW_REQUEST_OVERRIDES", "false"),
            ("LOAD_SHED__BREAKER__FAILURE_THRESHOLD", "1"),
        ])
        .await;
        for path in [
            "/client?fail_rate=1.0",
            "/client?ms=3000",
            "/client?priority=low&ms=1",
        ] {
            let r = app.get(path).await;
            assert_eq!(r.status, 400, "{path}");
            assert!(
                r.json["error"].as_str().unwrap().contains("overrides"),
                "{path}"
            );
        }
        // The api refused them before the breaker: nothing was counted, it stays closed.
        assert_eq!(app.metric("circuit_breaker_state", &[]).await, Some(0.0));
        assert_eq!(app.get("/client?priority=high").await.status, 200);
        // The upstream refuses them too, to callers that reach it directly.
        let upstream = app.upstream.unwrap();
        let (status, _) = actix_web::web::block(move || {
            crate::helpers::raw_request(upstream, "GET", "/upstream?fail_rate=1").unwrap()
        })
        .await
        .unwrap();
        assert_eq!(status, 400);
    }
}

mod deadlines {
    //! Deadline propagation: a caller's remaining budget caps the work done for it.

    use std::time::{Duration, Instant};

    use crate::helpers::{spawn_app, spawn_upstream};

    #[actix_web::test]
    async fn a_budget_below_the_minimum_is_refused_at_once_without_a_slot_or_a_call() {
        let app = spawn_app(&[("LOAD_SHED__TIMEOUTS__MIN_BUDGET_MS", "20")]).await;
        let r = app
            .get_with("/client", &[("X-Request-Timeout-Ms", "5")])
            .await;
        assert_eq!(r.status, 504);
        assert_eq!(r.json["error"], "deadline exceeded");
        let text = app.metrics().await;
        assert!(
            !text.contains(r#"path="/upstream""#),
            "the upstream was called"
        );
        assert_eq!(
            crate::helpers::client_decisions(&text, "normal", "admitted"),
            Some(0.0)
        );
        // Enough budget: served as usual.
        let r = app
            .get_with("/client?ms=1", &[("X-Request-Timeout-Ms", "500")])
            .await;
        assert_eq!(r.status, 200);
    }

    async fn get_with_budget(
        addr: std::net::SocketAddr,
        path: &'static str,
        budget: &'static str,
    ) -> (u16, Duration) {
        let client = awc::Client::default();
        let started = Instant::now();
        let res = client
            .get(format!("http://{addr}{path}"))
            .insert_header(("X-Request-Timeout-Ms", budget))
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), started.elapsed())
    }

    #[actix_web::test]
    async fn the_upstream_abandons_work_that_cannot_finish_within_the_budget() {
        let upstream = spawn_upstream(&[]).await;
        let (status, took) = get_with_budget(upstream, "/upstream?ms=2000", "150").await;
        assert_eq!(status, 504);
        assert!(
            took >= Duration::from_millis(140) && took < Duration::from_millis(1000),
            "{took:?}"
        );
        let (status, _) = get_with_budget(upstream, "/upstream?ms=10", "500").await;
        assert_eq!(status, 200);
    }

    #[actix_web::test]
    async fn waiting_for_a_slot_counts_against_the_budget() {
        let upstream = spawn_upstream(&[("LOAD_SHED__UPSTREAM__CONCURRENCY", "1")]).await;
        let holder = actix_web::rt::spawn(get_with_budget(upstream, "/upstream?ms=800", "5000"));
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        let (status, took) = get_with_budget(upstream, "/upstream?ms=10", "150").await;
        assert_eq!(status, 504, "it would have waited 700 ms for the slot");
        assert!(took < Duration::from_millis(500), "{took:?}");
        assert_eq!(holder.await.unwrap().0, 200);
    }
}

#[actix_web::test]
async fn a_saturated_dependency_serves_the_apis_high_priority_calls_first() {
    // One slot at the dependency: the api's calls queue there, and X-Priority orders the queue.
    let app = crate::helpers::spawn_app(&[
        ("LOAD_SHED__UPSTREAM__CONCURRENCY", "1"),
        ("LOAD_SHED__TIMEOUTS__UPSTREAM_MS", "5000"),
    ])
    .await;
    let call = |priority: &'static str, ms: u64| {
        let url = app.url(&format!("/client?ms={ms}&priority={priority}"));
        actix_web::rt::spawn(async move {
            let started = std::time::Instant::now();
            let client = awc::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .finish();
            let mut res = client.get(url).send().await.expect("answer");
            let _ = res.body().await;
            (res.status().as_u16(), started.elapsed())
        })
    };
    let first = call("low", 300);
    actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    let lows: Vec<_> = (0..3).map(|_| call("low", 300)).collect();
    actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    let high = call("high", 0);
    let (status, took) = high.await.unwrap();
    assert_eq!(status, 200);
    // Served when the first call ends (~250 ms from now), not after the three queued lows.
    assert!(
        took < std::time::Duration::from_millis(700),
        "the high-priority call waited {took:?}"
    );
    assert_eq!(first.await.unwrap().0, 200);
    for low in lows {
        assert_eq!(low.await.unwrap().0, 200);
    }
}
