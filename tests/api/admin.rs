//! The admin listener and its kill switch, from outside: `GET /admin/state`, `POST /admin/breaker`
//! with every mode, the expiry, the token rules, hostile requests (each a clear 4xx with nothing
//! changed), and `load-shed-api admin` from the real binary.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{binary, spawn_app, start_binary, TestApp};

/// One request to the admin listener: status and JSON body.
async fn admin(app: &TestApp, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    admin_with_body(app, method, path, headers, "").await
}

async fn admin_with_body(
    app: &TestApp,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    let url = format!("http://{}{path}", app.admin.expect("an admin listener"));
    let mut req = match method {
        "GET" => app.client.get(url),
        "POST" => app.client.post(url),
        "PUT" => app.client.put(url),
        other => panic!("{other}"),
    };
    for (k, v) in headers {
        req = req.insert_header((*k, *v));
    }
    let mut res = req
        .send_body(body.to_string())
        .await
        .expect("the admin listener answers");
    let body = res.body().await.expect("a body");
    (
        res.status().as_u16(),
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

async fn post(app: &TestApp, path: &str) -> (u16, Value) {
    admin(app, "POST", path, &[]).await
}

async fn held(app: &TestApp, kind: &str) -> Option<f64> {
    app.metric(
        "admin_override",
        &[("component", "breaker"), ("kind", kind)],
    )
    .await
}

#[actix_web::test]
async fn the_state_shows_the_breaker_admission_and_no_override() {
    let app = spawn_app(&[]).await;
    assert_eq!(app.get("/client?ms=0").await.status, 200);
    let (status, state) = admin(&app, "GET", "/admin/state", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(state["role"], "all");
    assert_eq!(state["breaker"]["view"]["state"], "closed");
    assert_eq!(state["breaker"]["view"]["override"], Value::Null);
    assert_eq!(state["breaker"]["enforced"], true);
    assert_eq!(state["admission"]["limits"]["high"], 50);
    assert_eq!(state["admission"]["limits"]["low"], 35);
    assert_eq!(state["admission"]["inflight"], 0);
    assert_eq!(state["retry_budget_left"], Value::Null, "retries are off");
    // An override gauge appears only while one is held.
    assert!(!app.metrics().await.contains("admin_override"));
}

#[actix_web::test]
async fn force_open_refuses_every_call_until_auto_restores_service_at_once() {
    let app = spawn_app(&[]).await;
    let (status, view) = post(&app, "/admin/breaker?mode=force-open").await;
    assert_eq!(status, 200);
    assert_eq!(view["override"]["kind"], "force_open");
    assert_eq!(held(&app, "force_open").await, Some(1.0));
    for _ in 0..5 {
        let r = app.get("/client?ms=0").await;
        assert_eq!(r.status, 503);
        assert!(r.retry_after.is_some(), "503 with Retry-After");
    }
    // Not one call reached the dependency.
    assert_eq!(
        app.metric("upstream_requests_total", &[("result", "ok")])
            .await,
        Some(0.0)
    );
    let (status, view) = post(&app, "/admin/breaker?mode=auto").await;
    assert_eq!((status, view["override"].clone()), (200, Value::Null));
    assert_eq!(app.get("/client?ms=0").await.status, 200);
    assert_eq!(held(&app, "force_open").await, None);
}

#[actix_web::test]
async fn force_closed_lets_calls_through_while_the_breaker_it_would_be_is_shown() {
    let app = spawn_app(&[("LOAD_SHED__BREAKER__OPEN_SECONDS", "30")]).await;
    assert_eq!(post(&app, "/admin/breaker?mode=force-closed").await.0, 200);
    for _ in 0..8 {
        assert_eq!(app.get("/client?ms=0&fail_rate=1").await.status, 502);
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    // Outcomes still count: the breaker itself opened after five.
    let (_, state) = admin(&app, "GET", "/admin/state", &[]).await;
    assert_eq!(state["breaker"]["view"]["state"], "open");
    assert_eq!(state["breaker"]["view"]["override"]["kind"], "force_closed");
    assert_eq!(app.metric("circuit_breaker_state", &[]).await, Some(1.0));
    // Released: the breaker's own state (open) answers again.
    assert_eq!(post(&app, "/admin/breaker?mode=auto").await.0, 200);
    assert_eq!(app.get("/client?ms=0").await.status, 503);
}

#[actix_web::test]
async fn an_override_with_an_expiry_lifts_by_itself() {
    let app = spawn_app(&[]).await;
    let (status, view) = post(&app, "/admin/breaker?mode=force-open&for=1s").await;
    assert_eq!(status, 200);
    assert!(view["override"]["expires_in_seconds"].as_f64() <= Some(1.0));
    assert_eq!(app.get("/client?ms=0").await.status, 503);
    actix_web::rt::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(app.get("/client?ms=0").await.status, 200);
    assert_eq!(held(&app, "force_open").await, None);
    let (_, state) = admin(&app, "GET", "/admin/state", &[]).await;
    assert!(state["breaker"]["view"]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("expired")));
}

#[actix_web::test]
async fn hostile_admin_requests_get_a_clear_4xx_and_change_nothing() {
    let app = spawn_app(&[]).await;
    let big = "x".repeat(4096);
    for (method, path, headers, status) in [
        ("POST", "/admin/breaker", &[][..], 400),
        ("POST", "/admin/breaker?mode=open", &[][..], 400),
        (
            "POST",
            "/admin/breaker?mode=force-open&for=0s",
            &[][..],
            400,
        ),
        (
            "POST",
            "/admin/breaker?mode=force-open&for=25h",
            &[][..],
            400,
        ),
        (
            "POST",
            "/admin/breaker?mode=force-open&for=soon",
            &[][..],
            400,
        ),
        ("POST", "/admin/breaker?mode=auto&for=1m", &[][..], 400),
        (
            "POST",
            "/admin/breaker?mode=force-open&mode=auto",
            &[][..],
            400,
        ),
        ("POST", "/admin/breaker?mode=force-open&x=1", &[][..], 400),
        ("GET", "/admin/breaker?mode=force-open", &[][..], 405),
        ("PUT", "/admin/state", &[][..], 405),
        ("GET", "/admin/nothing", &[][..], 404),
    ] {
        let (got, body) = admin(&app, method, path, headers).await;
        assert_eq!(got, status, "{method} {path}: {body}");
        assert!(body["error"].is_string(), "{method} {path}: {body}");
    }
    // A body (none is ever read) larger than 1 KiB.
    let (got, body) =
        admin_with_body(&app, "POST", "/admin/breaker?mode=force-open", &[], &big).await;
    assert_eq!(got, 413, "{body}");
    let (_, state) = admin(&app, "GET", "/admin/state", &[]).await;
    assert_eq!(state["breaker"]["view"]["override"], Value::Null);
    assert_eq!(app.get("/client?ms=0").await.status, 200);
    assert!(!app.metrics().await.contains("admin_override"));
}

#[actix_web::test]
async fn with_a_token_every_admin_request_needs_it() {
    let token = "s3cret-token-0123456789";
    let app = spawn_app(&[("LOAD_SHED__ADMIN__TOKEN", token)]).await;
    let bearer = format!("Bearer {token}");
    for headers in [
        &[][..],
        &[("authorization", "Bearer wrong-token-0123456789")][..],
        &[("authorization", token)][..],
    ] {
        assert_eq!(admin(&app, "GET", "/admin/state", headers).await.0, 401);
        assert_eq!(
            admin(&app, "POST", "/admin/breaker?mode=force-open", headers)
                .await
                .0,
            401
        );
    }
    assert_eq!(app.get("/client?ms=0").await.status, 200, "nothing changed");
    let ok = [("authorization", bearer.as_str())];
    assert_eq!(admin(&app, "GET", "/admin/state", &ok).await.0, 200);
    assert_eq!(
        admin(&app, "POST", "/admin/breaker?mode=force-open", &ok)
            .await
            .0,
        200
    );
    assert_eq!(app.get("/client?ms=0").await.status, 503);
}

#[test]
fn a_non_loopback_admin_listener_without_a_token_is_refused_at_start_up() {
    let out = binary()
        .env("LOAD_SHED__ADMIN__LISTEN", "0.0.0.0:0")
        .output()
        .expect("the binary runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("admin.listen"), "{stderr}");
    assert!(stderr.contains("admin.token"), "{stderr}");
    // A short token is refused too, and never echoed.
    let out = binary()
        .env("LOAD_SHED__ADMIN__TOKEN", "short-secret")
        .output()
        .expect("the binary runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("short-secret"));
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    listener.local_addr().expect("its address")
}

#[test]
fn the_cli_holds_and_releases_the_breaker_of_a_running_binary() {
    let addr = free_port().to_string();
    let app = start_binary(&[("LOAD_SHED__ADMIN__LISTEN", addr.as_str())]);
    let api = app.api.expect("an api");
    let cli = |args: &[&str]| {
        let out = binary()
            .env("LOAD_SHED__ADMIN__LISTEN", addr.as_str())
            .arg("admin")
            .args(args)
            .output()
            .expect("the cli runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let client = |path: &str| {
        crate::helpers::raw_request(api, "GET", path)
            .expect("an answer")
            .0
    };
    // The listener may still be starting: retry the first call for a moment.
    let mut state = cli(&["state"]);
    for _ in 0..50 {
        if state.0 == Some(0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        state = cli(&["state"]);
    }
    assert_eq!(state.0, Some(0), "{state:?}");
    assert!(state.1.contains(r#""state":"closed""#), "{state:?}");

    let (code, out, _) = cli(&["breaker", "force-open", "--for", "10m"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("force_open"), "{out}");
    assert_eq!(client("/client?ms=0"), 503);
    let (code, _, _) = cli(&["breaker", "auto"]);
    assert_eq!(code, Some(0));
    assert_eq!(client("/client?ms=0"), 200);

    // Usage mistakes exit 2 with the usage; an unreachable listener exits 1, one line.
    let (code, _, err) = cli(&["breaker", "frobnicate"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--help"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let (code, _, err) = cli(&["--addr", "127.0.0.1:1", "state"]);
    assert_eq!(code, Some(1));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let out = binary()
        .env("LOAD_SHED__ADMIN__LISTEN", "")
        .args(["admin", "state"])
        .output()
        .expect("the cli runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("off"));
}

async fn limits(app: &TestApp) -> (f64, f64, f64) {
    let read = |p| async move {
        app.metric("admission_limit", &[("priority", p)])
            .await
            .unwrap_or(f64::NAN)
    };
    (read("high").await, read("normal").await, read("low").await)
}

#[actix_web::test]
async fn a_pinned_limit_holds_in_flight_under_it_until_auto_hands_it_back() {
    let app = spawn_app(&[("LOAD_SHED__TIMEOUTS__UPSTREAM_MS", "2000")]).await;
    let (status, view) = post(&app, "/admin/admission/limit?value=10").await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["pinned"]["limit"], 10);
    // The classes keep the configuration's shares (45/50, 35/50).
    assert_eq!(limits(&app).await, (10.0, 9.0, 7.0));
    assert_eq!(
        app.metric(
            "admin_override",
            &[("component", "admission"), ("kind", "limit")]
        )
        .await,
        Some(1.0)
    );
    let calls = futures_util::future::join_all((0..12).map(|_| app.get("/client?ms=300")));
    let mut statuses: Vec<u16> = calls.await.iter().map(|r| r.status).collect();
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [[200; 9].as_slice(), &[429; 3]].concat(),
        "normal: 9 slots"
    );
    let (status, view) = post(&app, "/admin/admission/limit?value=auto").await;
    assert_eq!((status, view["pinned"].clone()), (200, Value::Null));
    assert_eq!(limits(&app).await, (50.0, 45.0, 35.0));
    assert!(!app.metrics().await.contains("admin_override"));
}

#[actix_web::test]
async fn a_pin_holds_against_the_adaptive_limiter_and_lifts_by_itself() {
    let app = spawn_app(&[("LOAD_SHED__ADMISSION__MODE", "adaptive")]).await;
    assert_eq!(post(&app, "/admin/admission/limit?value=60").await.0, 200);
    // The limiter keeps learning from these calls, but the pin is what is in force.
    for _ in 0..40 {
        assert_eq!(app.get("/client?ms=1").await.status, 200);
    }
    assert_eq!(limits(&app).await.0, 60.0);
    // Pinned again for 1 s: it lifts by itself.
    assert_eq!(
        post(&app, "/admin/admission/limit?value=60&for=1s").await.0,
        200
    );
    actix_web::rt::time::sleep(Duration::from_millis(1300)).await;
    let (_, state) = admin(&app, "GET", "/admin/state", &[]).await;
    assert_eq!(state["admission"]["pinned"], Value::Null);
    // The limiter's own limit again: it starts at min_limit (5) and 40 calls cannot take it to 60.
    assert!(limits(&app).await.0 < 60.0);
    // Bad values change nothing.
    for path in [
        "/admin/admission/limit?value=2",
        "/admin/admission/limit?value=auto&for=1m",
        "/admin/admission/limit",
    ] {
        assert_eq!(post(&app, path).await.0, 400, "{path}");
    }
    assert_eq!(
        admin(&app, "GET", "/admin/admission/limit?value=5", &[])
            .await
            .0,
        405
    );
    assert_eq!(state["admission"]["pinned"], Value::Null);
}

#[actix_web::test]
async fn shadow_mode_switches_at_run_time_and_back_by_itself() {
    let app = spawn_app(&[
        ("LOAD_SHED__ADMISSION__MAX_INFLIGHT", "3"),
        ("LOAD_SHED__ADMISSION__NORMAL_MAX_INFLIGHT", "2"),
        ("LOAD_SHED__ADMISSION__LOW_MAX_INFLIGHT", "1"),
        ("LOAD_SHED__TIMEOUTS__UPSTREAM_MS", "2000"),
    ])
    .await;
    let six = || async {
        let calls = futures_util::future::join_all((0..6).map(|_| app.get("/client?ms=200")));
        let mut statuses: Vec<u16> = calls.await.iter().map(|r| r.status).collect();
        statuses.sort_unstable();
        statuses
    };
    assert_eq!(six().await, [200, 200, 429, 429, 429, 429], "enforcing");
    let (status, body) = post(&app, "/admin/shadow?component=admission&on=true&for=3s").await;
    assert_eq!((status, body["shadow"].clone()), (200, Value::Bool(true)));
    assert_eq!(
        app.metric(
            "admin_override",
            &[("component", "admission"), ("kind", "shadow")]
        )
        .await,
        Some(1.0)
    );
    assert_eq!(six().await, [200; 6], "shadow mode: every request goes on");
    assert_eq!(
        app.metric("admission_shadow_total", &[("reason", "capacity")])
            .await,
        Some(4.0)
    );
    let (_, state) = admin(&app, "GET", "/admin/state", &[]).await;
    assert_eq!(state["admission"]["enforced"], false);
    let held = &state["admission_shadow_override"];
    assert_eq!(held["shadow"], true);
    assert!(held["by"]
        .as_str()
        .is_some_and(|by| by.starts_with("127.0.0.1:")));
    assert!(held["expires_in_seconds"].as_f64() <= Some(3.0));
    // After 3 s it enforces again by itself.
    actix_web::rt::time::sleep(Duration::from_millis(3300)).await;
    let (_, state) = admin(&app, "GET", "/admin/state", &[]).await;
    assert_eq!(state["admission"]["enforced"], true);
    assert_eq!(state["admission_shadow_override"], Value::Null);
    assert_eq!(
        six().await,
        [200, 200, 429, 429, 429, 429],
        "enforcing again"
    );

    // The breaker too: switched on, a failing dependency is still called, and off again at once.
    assert_eq!(
        post(&app, "/admin/shadow?component=breaker&on=true")
            .await
            .0,
        200
    );
    for _ in 0..10 {
        assert_eq!(app.get("/client?ms=0&fail_rate=1").await.status, 502);
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        app.metric("circuit_breaker_shadow_rejections_total", &[])
            .await,
        Some(5.0)
    );
    assert_eq!(
        post(&app, "/admin/shadow?component=breaker&on=false")
            .await
            .0,
        200
    );
    assert_eq!(app.get("/client?ms=0").await.status, 503, "open, enforced");
    assert!(!app.metrics().await.contains(r#"kind="shadow""#));
    assert_eq!(
        post(&app, "/admin/shadow?component=breaker&on=maybe")
            .await
            .0,
        400
    );
}
