//! Tenant fairness over real HTTP (`admission.tenant_header`): the header's rules, the fair share
//! (a tenant under its share waits for the next slot, one over it is shed), the quota and its
//! Retry-After, the overflow tenant, the reason in every 429 body and in
//! `admission_shed_total{reason}`, the admin state's tenants, and nothing of it when off.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{series_value, spawn_app, Reply, TestApp};

/// Four slots for every class of interest (high), a tenant header, and `extra`.
async fn app_with(extra: &[(&str, &str)]) -> TestApp {
    let mut env = vec![
        ("LOAD_SHED__ADMISSION__MAX_INFLIGHT", "4"),
        ("LOAD_SHED__ADMISSION__NORMAL_MAX_INFLIGHT", "3"),
        ("LOAD_SHED__ADMISSION__LOW_MAX_INFLIGHT", "2"),
        ("LOAD_SHED__TIMEOUTS__UPSTREAM_MS", "5000"),
    ];
    env.extend_from_slice(extra);
    spawn_app(&env).await
}

const FAIR: (&str, &str) = ("LOAD_SHED__ADMISSION__TENANT_HEADER", "X-Tenant");

/// A high-priority request of `tenant` that holds its slot for `ms`.
fn hold(app: &TestApp, tenant: &'static str, ms: u64) -> actix_web::rt::task::JoinHandle<Reply> {
    let url = app.url(&format!("/client?ms={ms}&priority=high"));
    actix_web::rt::spawn(async move {
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(10))
            .finish();
        let res = client
            .get(url)
            .insert_header(("X-Tenant", tenant))
            .send()
            .await
            .expect("held request");
        crate::helpers::reply(res).await
    })
}

async fn of(app: &TestApp, tenant: &str) -> Reply {
    app.get_with("/client?ms=0&priority=high", &[("X-Tenant", tenant)])
        .await
}

async fn inflight_reaches(app: &TestApp, n: f64) {
    app.wait_for("admission_inflight", &[], n, Duration::from_secs(3))
        .await;
}

async fn state(app: &TestApp) -> Value {
    let url = format!("http://{}/admin/state", app.admin.expect("admin listener"));
    let mut res = app.client.get(url).send().await.expect("state");
    serde_json::from_slice(&res.body().await.expect("body")).expect("JSON state")
}

#[actix_web::test]
async fn bad_tenant_values_get_a_400_naming_the_header() {
    let app = app_with(&[FAIR]).await;
    let long = "t".repeat(65);
    let tab = "a\tb";
    for bad in ["", long.as_str(), tab] {
        let r = app.get_with("/client?ms=0", &[("X-Tenant", bad)]).await;
        assert_eq!(r.status, 400, "{bad:?}");
        assert_eq!(r.json["param"], "x-tenant", "{bad:?}");
    }
    // Not ASCII at all.
    let res = app
        .client
        .get(app.url("/client?ms=0"))
        .insert_header((
            "X-Tenant",
            actix_web::http::header::HeaderValue::from_bytes("caf\u{e9}".as_bytes()).unwrap(),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    // Repeated.
    let res = app
        .client
        .get(app.url("/client?ms=0"))
        .append_header(("X-Tenant", "a"))
        .append_header(("X-Tenant", "b"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    // /work follows the same rules.
    let res = app
        .client
        .post(app.url("/work?ms=1"))
        .insert_header(("X-Tenant", ""))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    // 64 printable characters, spaces included, are a tenant; no header is the anonymous one.
    let ok = format!("{} x", "t".repeat(62));
    assert_eq!(
        app.get_with("/client?ms=0", &[("X-Tenant", &ok)])
            .await
            .status,
        200
    );
    assert_eq!(app.get("/client?ms=0").await.status, 200);
    // Nothing was admitted or shed for the bad ones.
    let text = app.metrics().await;
    assert_eq!(
        crate::helpers::client_decisions(&text, "normal", "admitted"),
        Some(2.0)
    );
}

#[actix_web::test]
async fn a_tenant_alone_uses_the_pool_and_one_under_its_share_gets_the_next_free_slot() {
    let app = app_with(&[FAIR, ("LOAD_SHED__ADMISSION__QUEUE_TIMEOUT_MS", "3000")]).await;
    // a alone takes the whole pool (work-conserving).
    let held: Vec<_> = (0..4).map(|_| hold(&app, "a", 600)).collect();
    inflight_reaches(&app, 4.0).await;
    // b holds nothing, under its share (4 / 2 tenants = 2): it waits for the next freed slot.
    let started = Instant::now();
    let b = hold(&app, "b", 0);
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    // a holds 4, over its share: shed at once, never queued.
    let shed = of(&app, "a").await;
    assert_eq!(shed.status, 429);
    assert_eq!(shed.json["reason"], "tenant_share");
    assert_eq!(shed.retry_after.as_deref(), Some("1"));
    let b = b.await.unwrap();
    assert_eq!(b.status, 200, "{:?}", b.json);
    // It got a's first freed slot, not a timeout.
    assert!(started.elapsed() < Duration::from_millis(2500));
    for h in held {
        assert_eq!(h.await.unwrap().status, 200);
    }
    let text = app.metrics().await;
    assert_eq!(
        series_value(&text, "admission_shed_total", &[("reason", "tenant_share")]),
        Some(1.0)
    );
    assert_eq!(
        series_value(&text, "admission_tenants_active", &[]),
        Some(2.0)
    );
    inflight_reaches(&app, 0.0).await;
    // Within a second the state names the tenant being shed.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let s = state(&app).await;
        let tenants = &s["admission"]["tenants"];
        assert_eq!(tenants["header"], "x-tenant");
        if tenants["heaviest_shed_now"] == serde_json::json!([["a", 1]]) {
            break;
        }
        assert!(Instant::now() < deadline, "{tenants}");
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
}

#[actix_web::test]
async fn a_tenant_under_its_share_that_gets_no_slot_in_time_is_shed_for_queue_timeout() {
    let app = app_with(&[FAIR, ("LOAD_SHED__ADMISSION__QUEUE_TIMEOUT_MS", "100")]).await;
    let held: Vec<_> = (0..4).map(|_| hold(&app, "a", 800)).collect();
    inflight_reaches(&app, 4.0).await;
    let started = Instant::now();
    let r = of(&app, "b").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json["reason"], "queue_timeout");
    assert!(started.elapsed() >= Duration::from_millis(90));
    for h in held {
        assert_eq!(h.await.unwrap().status, 200);
    }
    assert_eq!(
        app.metric("admission_shed_total", &[("reason", "queue_timeout")])
            .await,
        Some(1.0)
    );
}

#[actix_web::test]
async fn the_quota_refuses_with_a_retry_after_after_which_a_request_is_admitted() {
    let app = app_with(&[
        FAIR,
        ("LOAD_SHED__ADMISSION__TENANT_RATE_PER_SECOND", "0.5"),
        ("LOAD_SHED__ADMISSION__TENANT_BURST", "2"),
    ])
    .await;
    assert_eq!(of(&app, "a").await.status, 200);
    assert_eq!(of(&app, "a").await.status, 200);
    let r = of(&app, "a").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json["reason"], "tenant_quota");
    assert_eq!(r.json["priority"], "high");
    // The next token comes in 2 s at 0.5 per second.
    let wait: u64 = r.retry_after.expect("Retry-After").parse().unwrap();
    assert_eq!(wait, 2);
    // Another tenant has its own bucket.
    assert_eq!(of(&app, "b").await.status, 200);
    actix_web::rt::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(of(&app, "a").await.status, 200);
    assert_eq!(
        app.metric("admission_shed_total", &[("reason", "tenant_quota")])
            .await,
        Some(1.0)
    );
}

#[actix_web::test]
async fn beyond_max_tenants_new_tenants_share_one_overflow_tenant() {
    let app = app_with(&[
        FAIR,
        ("LOAD_SHED__ADMISSION__MAX_TENANTS", "1"),
        ("LOAD_SHED__ADMISSION__TENANT_RATE_PER_SECOND", "0.1"),
        ("LOAD_SHED__ADMISSION__TENANT_BURST", "1"),
    ])
    .await;
    assert_eq!(of(&app, "a").await.status, 200);
    // b and c are beyond the cap: they share the overflow tenant's one token.
    assert_eq!(of(&app, "b").await.status, 200);
    let c = of(&app, "c").await;
    assert_eq!(c.status, 429);
    assert_eq!(c.json["reason"], "tenant_quota");
    // a has its own bucket, now empty.
    assert_eq!(of(&app, "a").await.status, 429);
    // The state's tenants are brought up to date once a second.
    let deadline = Instant::now() + Duration::from_secs(3);
    while state(&app).await["admission"]["tenants"]["tracked"] != 1 {
        assert!(Instant::now() < deadline, "{}", state(&app).await);
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
}

#[actix_web::test]
async fn without_a_tenant_header_the_tenant_is_ignored_and_admission_is_as_before() {
    let app = app_with(&[]).await;
    let held: Vec<_> = (0..4).map(|_| hold(&app, "a", 600)).collect();
    inflight_reaches(&app, 4.0).await;
    // Another tenant gets no special treatment: shed at once for capacity.
    let started = Instant::now();
    let r = of(&app, "b").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json["reason"], "capacity");
    assert!(started.elapsed() < Duration::from_millis(300));
    // Any value is accepted (it is not read).
    assert_eq!(
        app.get_with("/client?ms=0", &[("X-Tenant", "")])
            .await
            .status,
        429
    );
    for h in held {
        assert_eq!(h.await.unwrap().status, 200);
    }
    let text = app.metrics().await;
    assert_eq!(series_value(&text, "admission_tenants_active", &[]), None);
    assert_eq!(
        series_value(&text, "admission_shed_total", &[("reason", "capacity")]),
        Some(2.0)
    );
    assert_eq!(state(&app).await["admission"]["tenants"], Value::Null);
}

#[actix_web::test]
async fn a_backlog_timeout_is_reported_as_such_without_fairness() {
    let app = app_with(&[
        ("LOAD_SHED__ADMISSION__QUEUE_SIZE", "4"),
        ("LOAD_SHED__ADMISSION__QUEUE_TIMEOUT_MS", "50"),
    ])
    .await;
    let held: Vec<_> = (0..4).map(|_| hold(&app, "a", 500)).collect();
    inflight_reaches(&app, 4.0).await;
    let r = of(&app, "a").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json["reason"], "queue_timeout");
    for h in held {
        assert_eq!(h.await.unwrap().status, 200);
    }
}

#[actix_web::test]
async fn the_share_follows_the_limit_in_force_under_adaptive_admission() {
    let app = app_with(&[
        FAIR,
        ("LOAD_SHED__ADMISSION__MODE", "adaptive"),
        ("LOAD_SHED__ADMISSION__QUEUE_TIMEOUT_MS", "3000"),
    ])
    .await;
    // The live limit, pinned so the test knows it: 4 for high.
    let url = format!(
        "http://{}/admin/admission/limit?value=4",
        app.admin.expect("admin listener")
    );
    let res = app.client.post(url).send().await.expect("pinned");
    assert_eq!(res.status().as_u16(), 200);
    let held: Vec<_> = (0..4).map(|_| hold(&app, "a", 600)).collect();
    inflight_reaches(&app, 4.0).await;
    let b = hold(&app, "b", 0);
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    let shed = of(&app, "a").await;
    assert_eq!(shed.status, 429);
    assert_eq!(shed.json["reason"], "tenant_share");
    assert_eq!(b.await.unwrap().status, 200);
    for h in held {
        assert_eq!(h.await.unwrap().status, 200);
    }
}
