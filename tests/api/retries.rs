//! Retries, the retry budget and hedging, one rule per test: off by default nothing changes; a
//! retry happens only when the budget, the breaker, the caller's deadline and the admission slot
//! allow it; a hedge's loser is cancelled and its connection to the dependency closed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::helpers::{client_decisions, fake_upstream, read_head, spawn_api_against, TestApp};

/// What a scripted dependency does with its n-th request (from 0); every answer closes the
/// connection, so each attempt is one connection.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// 200 after this many ms.
    Ok(u64),
    /// 503 after this many ms.
    Fail(u64),
    /// 503 at once, with `Retry-After` of this many seconds.
    FailRetryAfter(u64),
    /// Reads the request and never answers; the connection's closing is recorded.
    Hang,
}

/// A raw-TCP dependency that follows `script` (the last step repeats), and records when the
/// connections it held open (`Step::Hang`) were closed by the caller.
struct Scripted {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    hung_closed: Arc<Mutex<Vec<Instant>>>,
}

fn scripted(script: &'static [Step]) -> Scripted {
    let requests = Arc::new(AtomicUsize::new(0));
    let hung_closed = Arc::new(Mutex::new(Vec::new()));
    let (count, closed) = (requests.clone(), hung_closed.clone());
    let addr = fake_upstream(move |stream| serve(stream, script, &count, &closed));
    Scripted {
        addr,
        requests,
        hung_closed,
    }
}

fn serve(
    mut stream: TcpStream,
    script: &[Step],
    count: &AtomicUsize,
    closed: &Mutex<Vec<Instant>>,
) {
    if !read_head(&mut stream, Duration::from_secs(5)) {
        return;
    }
    let mut buf = [0u8; 64];
    let n = count.fetch_add(1, Ordering::SeqCst);
    let step = script[n.min(script.len() - 1)];
    let mut extra = String::new();
    let (status, wait) = match step {
        Step::Ok(ms) => ("200 OK", ms),
        Step::Fail(ms) => ("503 Service Unavailable", ms),
        Step::FailRetryAfter(seconds) => {
            extra = format!("retry-after: {seconds}\r\n");
            ("503 Service Unavailable", 0)
        }
        Step::Hang => {
            // Blocks until the caller closes the connection (read returns 0) or 5 s pass.
            if let Ok(0) = stream.read(&mut buf) {
                closed.lock().unwrap().push(Instant::now());
            }
            return;
        }
    };
    thread::sleep(Duration::from_millis(wait));
    let body = r#"{"ok":true,"ms":1}"#;
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

async fn api(upstream: SocketAddr, env: &[(&str, &str)]) -> TestApp {
    let mut pairs = vec![
        ("LOAD_SHED__RETRY__BACKOFF_BASE_MS", "1"),
        ("LOAD_SHED__RETRY__BACKOFF_MAX_MS", "5"),
    ];
    pairs.extend_from_slice(env);
    spawn_api_against(upstream, &pairs).await
}

async fn attempts(app: &TestApp, kind: &str, result: &str) -> f64 {
    app.metric(
        "upstream_attempts_total",
        &[("kind", kind), ("result", result)],
    )
    .await
    .unwrap_or(f64::NAN)
}

#[actix_web::test]
async fn retries_are_off_by_default_so_a_failure_is_answered_after_one_attempt() {
    let up = scripted(&[Step::Fail(0), Step::Ok(0)]);
    let app = api(up.addr, &[]).await;
    let r = app.get("/client").await;
    assert_eq!(r.status, 502);
    assert_eq!(up.requests.load(Ordering::SeqCst), 1);
    assert_eq!(attempts(&app, "first", "error").await, 1.0);
    assert_eq!(attempts(&app, "retry", "ok").await, 0.0);
    let upstream_total = app
        .metric("upstream_requests_total", &[("result", "error")])
        .await;
    assert_eq!(upstream_total, Some(1.0));
}

#[actix_web::test]
async fn a_failed_attempt_is_retried_and_each_attempt_is_counted() {
    let up = scripted(&[Step::Fail(0), Step::Ok(0)]);
    let app = api(up.addr, &[("LOAD_SHED__RETRY__MAX_ATTEMPTS", "3")]).await;
    let r = app.get("/client").await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    assert_eq!(up.requests.load(Ordering::SeqCst), 2);
    assert_eq!(attempts(&app, "first", "error").await, 1.0);
    assert_eq!(attempts(&app, "retry", "ok").await, 1.0);
    // upstream_requests_total counts attempts once retries are on.
    for (result, n) in [("error", 1.0), ("ok", 1.0)] {
        let got = app
            .metric("upstream_requests_total", &[("result", result)])
            .await;
        assert_eq!(got, Some(n), "{result}");
    }
}

#[actix_web::test]
async fn no_retry_without_a_token_in_the_budget() {
    let up = scripted(&[Step::Fail(0), Step::Ok(0)]);
    let app = api(
        up.addr,
        &[
            ("LOAD_SHED__RETRY__MAX_ATTEMPTS", "3"),
            ("LOAD_SHED__RETRY__BUDGET_RATIO", "0"),
            ("LOAD_SHED__RETRY__MIN_PER_SECOND", "0"),
        ],
    )
    .await;
    assert_eq!(app.get("/client").await.status, 502);
    assert_eq!(up.requests.load(Ordering::SeqCst), 1);
    assert_eq!(
        app.metric("retry_budget_exhausted_total", &[]).await,
        Some(1.0)
    );
    assert_eq!(attempts(&app, "retry", "ok").await, 0.0);
    assert_eq!(app.metric("retry_budget_remaining", &[]).await, Some(0.0));
}

#[actix_web::test]
async fn no_retry_once_the_breaker_is_open() {
    let up = scripted(&[Step::Fail(0), Step::Ok(0)]);
    let app = api(
        up.addr,
        &[
            ("LOAD_SHED__RETRY__MAX_ATTEMPTS", "3"),
            ("LOAD_SHED__BREAKER__FAILURE_THRESHOLD", "1"),
            // No backoff: the retry is decided the moment the first attempt fails, before the
            // published gate may show the breaker open.
            ("LOAD_SHED__RETRY__BACKOFF_BASE_MS", "0"),
            ("LOAD_SHED__RETRY__BACKOFF_MAX_MS", "0"),
        ],
    )
    .await;
    // The first attempt's failure opens the breaker; the retry would go through it: not made.
    let r = app.get("/client").await;
    app.wait_for("circuit_breaker_state", &[], 1.0, Duration::from_secs(2))
        .await;
    assert_eq!(r.status, 502, "the first attempt's answer: {:?}", r.json);
    assert_eq!(up.requests.load(Ordering::SeqCst), 1);
    assert_eq!(attempts(&app, "retry", "ok").await, 0.0);
    assert_eq!(attempts(&app, "retry", "error").await, 0.0);
}

#[actix_web::test]
async fn no_retry_when_the_deadline_leaves_too_little_time() {
    // The first attempt fails after 150 ms of a 200 ms timeout: 50 ms left.
    let script: &'static [Step] = &[Step::Fail(150), Step::Ok(0)];
    let up = scripted(script);
    let app = api(
        up.addr,
        &[
            ("LOAD_SHED__RETRY__MAX_ATTEMPTS", "3"),
            ("LOAD_SHED__TIMEOUTS__MIN_BUDGET_MS", "100"),
        ],
    )
    .await;
    assert_eq!(app.get("/client").await.status, 502);
    assert_eq!(up.requests.load(Ordering::SeqCst), 1);
    // The same with no minimum: 50 ms is worth a retry, which succeeds.
    let up = scripted(script);
    let app = api(up.addr, &[("LOAD_SHED__RETRY__MAX_ATTEMPTS", "3")]).await;
    let started = Instant::now();
    assert_eq!(app.get("/client").await.status, 200);
    assert_eq!(up.requests.load(Ordering::SeqCst), 2);
    assert!(started.elapsed() < Duration::from_millis(600));
}

#[actix_web::test]
async fn retries_keep_the_one_admission_slot_and_take_no_other() {
    // Every attempt fails after 100 ms: three attempts hold the request's slot ~300 ms.
    let up = scripted(&[Step::Fail(100)]);
    let app = api(
        up.addr,
        &[
            ("LOAD_SHED__RETRY__MAX_ATTEMPTS", "3"),
            ("LOAD_SHED__TIMEOUTS__UPSTREAM_MS", "2000"),
            ("LOAD_SHED__ADMISSION__MAX_INFLIGHT", "3"),
            ("LOAD_SHED__ADMISSION__NORMAL_MAX_INFLIGHT", "2"),
            ("LOAD_SHED__ADMISSION__LOW_MAX_INFLIGHT", "1"),
        ],
    )
    .await;
    let first = {
        let url = app.url("/client?priority=low");
        actix_web::rt::spawn(async move {
            awc::Client::default()
                .get(url)
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    actix_web::rt::time::sleep(Duration::from_millis(150)).await;
    // Mid-retries: the one low slot is still held, by that request alone.
    assert_eq!(app.get("/client?priority=low").await.status, 429);
    assert_eq!(app.metric("admission_inflight", &[]).await, Some(1.0));
    assert_eq!(first.await.unwrap().unwrap(), 502);
    assert_eq!(up.requests.load(Ordering::SeqCst), 3);
    let text = app.metrics().await;
    assert_eq!(client_decisions(&text, "low", "admitted"), Some(1.0));
    app.wait_for("admission_inflight", &[], 0.0, Duration::from_secs(2))
        .await;
}

#[actix_web::test]
async fn a_hedge_answers_for_a_slow_first_attempt_whose_connection_is_then_closed() {
    let up = scripted(&[Step::Hang, Step::Ok(0)]);
    let app = api(
        up.addr,
        &[
            ("LOAD_SHED__RETRY__HEDGE_AFTER_MS", "50"),
            ("LOAD_SHED__TIMEOUTS__UPSTREAM_MS", "2000"),
        ],
    )
    .await;
    let started = Instant::now();
    let r = app.get("/client").await;
    let answered = Instant::now();
    assert_eq!(r.status, 200, "{:?}", r.json);
    assert!(
        answered - started < Duration::from_millis(1000),
        "the hedge answered after {:?}",
        answered - started
    );
    assert_eq!(attempts(&app, "hedge", "ok").await, 1.0);
    assert_eq!(attempts(&app, "first", "cancelled").await, 1.0);
    // The loser's connection is closed, so the dependency can stop its work.
    let deadline = Instant::now() + Duration::from_secs(2);
    while up.hung_closed.lock().unwrap().is_empty() && Instant::now() < deadline {
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    let closed = up.hung_closed.lock().unwrap().first().copied();
    let closed = closed.expect("the first attempt's connection was closed");
    assert!(closed.duration_since(answered) < Duration::from_millis(500));
}

#[actix_web::test]
async fn a_retry_is_not_sent_before_the_dependencys_retry_after() {
    let up = scripted(&[Step::FailRetryAfter(1), Step::Ok(0)]);
    let app = api(up.addr, &[("LOAD_SHED__RETRY__MAX_ATTEMPTS", "3")]).await;
    let started = Instant::now();
    let r = app.get("/client?timeout_ms=3000").await;
    assert_eq!(r.status, 200);
    assert_eq!(up.requests.load(Ordering::SeqCst), 2);
    // The backoff alone is at most 5 ms here: the second second is the dependency's.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(attempts(&app, "retry", "ok").await, 1.0);
}

#[actix_web::test]
async fn a_retry_the_deadline_cannot_wait_for_is_not_sent_at_all() {
    let up = scripted(&[Step::FailRetryAfter(2), Step::Ok(0)]);
    let app = api(up.addr, &[("LOAD_SHED__RETRY__MAX_ATTEMPTS", "3")]).await;
    let started = Instant::now();
    let r = app.get("/client?timeout_ms=1000").await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json["upstream_status"], 503);
    assert_eq!(up.requests.load(Ordering::SeqCst), 1);
    // Answered at once, not after waiting for a retry it could not make.
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(attempts(&app, "retry", "ok").await, 0.0);
    assert_eq!(attempts(&app, "retry", "error").await, 0.0);
}

#[actix_web::test]
async fn a_retry_after_keeps_the_breaker_it_opens_open_that_long() {
    let up = scripted(&[Step::FailRetryAfter(3)]);
    let app = api(
        up.addr,
        &[
            ("LOAD_SHED__BREAKER__FAILURE_THRESHOLD", "1"),
            ("LOAD_SHED__BREAKER__OPEN_SECONDS", "1"),
        ],
    )
    .await;
    assert_eq!(app.get("/client").await.status, 502);
    let refused = app.get("/client").await;
    assert_eq!(refused.status, 503);
    let wait: u64 = refused.retry_after.expect("Retry-After").parse().unwrap();
    assert!(
        wait >= 2,
        "the dependency asked for 3 s, open_seconds is 1: {wait}"
    );
    // Past open_seconds, still open: no probe reaches the dependency.
    actix_web::rt::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(app.get("/client").await.status, 503);
    assert_eq!(up.requests.load(Ordering::SeqCst), 1);
}

#[actix_web::test]
async fn a_throttled_attempt_is_not_retried() {
    let up = scripted(&[Step::Fail(0)]);
    let app = api(
        up.addr,
        &[
            ("LOAD_SHED__BREAKER__MODE", "throttle"),
            ("LOAD_SHED__BREAKER__THROTTLE_MAX_PROBABILITY", "0.95"),
            ("LOAD_SHED__RETRY__MAX_ATTEMPTS", "3"),
            ("LOAD_SHED__RETRY__MIN_PER_SECOND", "1000"),
        ],
    )
    .await;
    let mut throttled = 0;
    for _ in 0..40 {
        let before = up.requests.load(Ordering::SeqCst);
        let r = app.get("/client").await;
        let calls = up.requests.load(Ordering::SeqCst) - before;
        match r.status {
            // Refused at its first attempt: no call, and no retry after it.
            503 => {
                assert_eq!(r.json, serde_json::json!({"error": "throttled"}));
                assert_eq!(calls, 0);
                throttled += 1;
            }
            // Sent, failed, retried while the draws let it: a refused retry ends the request
            // with the answer it had.
            502 => assert!((1..=3).contains(&calls), "{calls} calls"),
            other => panic!("unexpected {other}: {:?}", r.json),
        }
    }
    assert!(throttled >= 20, "{throttled} of 40 throttled");
}
