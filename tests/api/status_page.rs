//! The status page on the admin listener, from outside: the page and its assets are served with
//! their headers (a strict Content-Security-Policy, nosniff), `/admin/status` serves the state
//! and the per-second samples, the token rules hold (Bearer, or Basic with the token as password),
//! and hostile requests get a clear 4xx. The page in a real browser is `.ci/status_page.cjs`.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{spawn_app, TestApp};

/// One request to the admin listener: status, headers and body.
async fn fetch(
    app: &TestApp,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, awc::http::header::HeaderMap, Vec<u8>) {
    let url = format!("http://{}{path}", app.admin.expect("an admin listener"));
    let mut req = match method {
        "GET" => app.client.get(url),
        "POST" => app.client.post(url),
        "DELETE" => app.client.delete(url),
        other => panic!("{other}"),
    };
    for (k, v) in headers {
        req = req.insert_header((*k, *v));
    }
    let mut res = req.send().await.expect("the admin listener answers");
    let body = res.body().limit(1 << 20).await.expect("a body").to_vec();
    (res.status().as_u16(), res.headers().clone(), body)
}

fn header<'h>(headers: &'h awc::http::header::HeaderMap, name: &str) -> &'h str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

#[actix_web::test]
async fn the_page_and_its_assets_are_served_with_a_strict_policy() {
    let app = spawn_app(&[]).await;
    for (path, kind, needle) in [
        ("/", "text/html", "<script src=\"/status.js\""),
        ("/status.js", "text/javascript", "/admin/status?since="),
        ("/status.css", "text/css", "--ok"),
        ("/favicon.svg", "image/svg+xml", "<svg"),
    ] {
        let (status, headers, body) = fetch(&app, "GET", path, &[]).await;
        assert_eq!(status, 200, "{path}");
        assert!(header(&headers, "content-type").starts_with(kind), "{path}");
        assert!(String::from_utf8_lossy(&body).contains(needle), "{path}");
        let csp = header(&headers, "content-security-policy");
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
    }
    // The page loads nothing from elsewhere and runs no inline script.
    let (_, _, html) = fetch(&app, "GET", "/", &[]).await;
    let html = String::from_utf8_lossy(&html);
    assert!(!html.contains("http://") && !html.contains("https://"));
    assert!(!html.contains("<script>"));
    assert!(!html.contains("style=\""));
    // Every admin answer carries the headers, errors too.
    let (status, headers, _) = fetch(&app, "GET", "/nope", &[]).await;
    assert_eq!(status, 404);
    assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
}

#[actix_web::test]
async fn the_status_serves_the_state_and_a_sample_per_second() {
    let app = spawn_app(&[]).await;
    for _ in 0..5 {
        assert_eq!(app.get("/client?ms=0").await.status, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let samples = loop {
        let (status, _, body) = fetch(&app, "GET", "/admin/status", &[]).await;
        assert_eq!(status, 200);
        let status: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(status["state"]["breaker"]["view"]["state"], "closed");
        assert_eq!(status["rules"]["breaker"]["mode"], "consecutive");
        assert_eq!(status["history_seconds"], 300);
        let samples = status["samples"].as_array().cloned().unwrap_or_default();
        let ok: f64 = samples.iter().filter_map(|s| s["ok"].as_f64()).sum();
        if ok >= 5.0 {
            break samples;
        }
        assert!(
            Instant::now() < deadline,
            "no sample counted the 5 requests: {samples:?}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    };
    // `since` returns only the later samples.
    let last = samples
        .last()
        .and_then(|s| s["t"].as_f64())
        .unwrap_or_default();
    let (_, _, body) = fetch(&app, "GET", &format!("/admin/status?since={last}"), &[]).await;
    let later: Value = serde_json::from_slice(&body).expect("JSON");
    assert!(later["samples"]
        .as_array()
        .is_some_and(|s| s.iter().all(|x| x["t"].as_f64() > Some(last))));
}

#[actix_web::test]
async fn hostile_requests_to_the_page_get_a_clear_4xx() {
    let app = spawn_app(&[]).await;
    for (method, path, want) in [
        ("GET", "/?x=1", 400),
        ("GET", "/status.js?v=2", 400),
        ("POST", "/", 405),
        ("DELETE", "/status.css", 405),
        ("POST", "/admin/status", 405),
        ("GET", "/admin/status?since=-1", 400),
        ("GET", "/admin/status?since=abc", 400),
        ("GET", "/admin/status?since=inf", 400),
        ("GET", "/admin/status?since=NaN", 400),
        ("GET", "/admin/status?since=1&since=2", 400),
        ("GET", "/admin/status?until=1", 400),
        ("GET", "/status.js/", 404),
        ("GET", "/../admin/state", 404),
    ] {
        let (status, headers, _) = fetch(&app, method, path, &[]).await;
        assert_eq!(status, want, "{method} {path}");
        assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
    }
    // A body is refused, as on the rest of the admin listener.
    let url = format!("http://{}/", app.admin.unwrap());
    let res = app
        .client
        .get(url)
        .send_body("x".repeat(2048))
        .await
        .expect("an answer");
    assert_eq!(res.status().as_u16(), 413);
}

#[actix_web::test]
async fn with_a_token_the_page_asks_the_browser_and_takes_basic_or_bearer() {
    let token = "s3cret-token-0123456789";
    let app = spawn_app(&[("LOAD_SHED__ADMIN__TOKEN", token)]).await;
    // Without credentials: 401 with a Basic challenge, so a browser prompts.
    for path in ["/", "/status.js", "/admin/status"] {
        let (status, headers, body) = fetch(&app, "GET", path, &[]).await;
        assert_eq!(status, 401, "{path}");
        assert!(header(&headers, "www-authenticate").starts_with("Basic"));
        assert!(!String::from_utf8_lossy(&body).contains(token));
    }
    // JSON endpoints keep their Bearer challenge.
    let (_, headers, _) = fetch(&app, "GET", "/admin/state", &[]).await;
    assert_eq!(header(&headers, "www-authenticate"), "Bearer");
    let basic = |user: &str, password: &str| {
        format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
    };
    for (credentials, want) in [
        (basic("admin", token), 200),
        (basic("", token), 200),
        (format!("Bearer {token}"), 200),
        (basic("admin", "wrong-token-0123456789"), 401),
        (basic(token, ""), 401),
        ("Basic !!!not-base64!!!".to_string(), 401),
        ("Basic ".to_string(), 401),
        (format!("Basic {}", "QUFB".repeat(2000)), 401),
    ] {
        for path in ["/", "/admin/status", "/admin/state"] {
            let (status, _, _) = fetch(&app, "GET", path, &[("authorization", &credentials)]).await;
            assert_eq!(status, want, "{path} with {credentials:.40}");
        }
    }
}

/// Standard base64 with padding (the test's own, to check the server's decoder against).
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
