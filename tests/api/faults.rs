//! A misbehaving dependency: a raw-TCP fake upstream (not the simulator) that half-answers, resets,
//! speaks garbage, floods or never answers. For each: the contract's status and result label, the
//! breaker counts a failure, the permit comes back, the answer arrives within the timeout, and the
//! api keeps serving.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use crate::helpers::{fake_upstream, read_head, spawn_api_against, TestApp};

/// What the fake does with each connection.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Sends a 200 head announcing 100 bytes, 3 of them, then stalls.
    StallBody,
    /// Sends a 200 head and part of the body, then resets the connection.
    ResetMidBody,
    /// Sends a 200 head announcing 100 bytes, 10 of them, then closes cleanly (body cut short).
    CloseMidBody,
    /// Answers something that is not HTTP.
    InvalidHttp,
    /// A 200 whose body (64 KiB) exceeds the api's cap.
    HugeBody,
    /// Accepts, reads the request, never answers.
    NeverAnswer,
    /// A valid 200 sent one byte every 30 ms.
    Drip,
    /// A 503 head, then a stalled body.
    ErrorThenStall,
}

const FAULT_LIFETIME: Duration = Duration::from_secs(3);

fn serve(mut stream: TcpStream, fault: Fault) {
    let body_of_100 =
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n";
    match fault {
        Fault::ResetMidBody => {
            // Leave the request unread: closing with unread input makes the kernel send RST.
            let mut first = [0u8; 1];
            let _ = stream.read(&mut first);
            let _ = stream.write_all(format!("{body_of_100}{{\"ok\":").as_bytes());
            thread::sleep(Duration::from_millis(20));
            drop(stream);
            return;
        }
        _ => {
            read_head(&mut stream, FAULT_LIFETIME);
        }
    }
    let _ = match fault {
        Fault::StallBody => stream.write_all(format!("{body_of_100}{{\"o").as_bytes()),
        Fault::CloseMidBody => stream.write_all(format!("{body_of_100}{{\"ok\":true").as_bytes()),
        Fault::InvalidHttp => stream.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n"),
        Fault::HugeBody => {
            let body = "x".repeat(64 * 1024);
            stream.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
        }
        Fault::NeverAnswer => Ok(()),
        Fault::Drip => {
            let response = "HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{\"ok\":true}";
            for byte in response.bytes() {
                if stream.write_all(&[byte]).is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(30));
            }
            Ok(())
        }
        Fault::ErrorThenStall => {
            stream.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 100\r\n\r\n{")
        }
        Fault::ResetMidBody => unreachable!(),
    };
    if !matches!(fault, Fault::CloseMidBody | Fault::InvalidHttp) {
        thread::sleep(FAULT_LIFETIME);
    }
}

/// The api against a fake that commits `fault` on every connection (each served on its own
/// thread, which ends by itself within FAULT_LIFETIME).
async fn api_against(fault: Fault) -> TestApp {
    let upstream = fake_upstream(move |stream| serve(stream, fault));
    spawn_api_against(
        upstream,
        &[
            ("LOAD_SHED__API__MAX_UPSTREAM_BODY_BYTES", "4096"),
            ("LOAD_SHED__BREAKER__FAILURE_THRESHOLD", "1"),
            ("LOAD_SHED__TIMEOUTS__UPSTREAM_MS", "300"),
        ],
    )
    .await
}

/// One call against the fault: its status, error, label and timing; then the breaker counted a
/// failure, the permit came back, and the api still answers.
async fn assert_fault(fault: Fault, status: u16, error: &str, result: &str) {
    let app = api_against(fault).await;
    let started = Instant::now();
    let r = app.get("/client").await;
    let took = started.elapsed();
    assert_eq!(r.status, status, "{fault:?}: {:?}", r.json);
    assert_eq!(r.json["error"], error, "{fault:?}");
    assert!(
        took < Duration::from_millis(300 + 400),
        "{fault:?} answered after {took:?}"
    );
    assert_eq!(
        app.metric("upstream_requests_total", &[("result", result)])
            .await,
        Some(1.0),
        "{fault:?}"
    );
    app.wait_for("circuit_breaker_state", &[], 1.0, Duration::from_secs(1))
        .await;
    app.wait_for("admission_inflight", &[], 0.0, Duration::from_secs(1))
        .await;
    assert_eq!(app.get("/healthz").await.status, 200);
    let r = app.get("/client").await;
    assert_eq!(r.status, 503, "{fault:?}: the open breaker answers at once");
}

#[actix_web::test]
async fn a_body_that_stalls_after_the_head_is_a_504_timeout() {
    assert_fault(Fault::StallBody, 504, "upstream timeout", "timeout").await;
}

#[actix_web::test]
async fn a_connection_reset_mid_body_is_a_502_transport_failure() {
    assert_fault(
        Fault::ResetMidBody,
        502,
        "upstream unavailable",
        "transport",
    )
    .await;
}

#[actix_web::test]
async fn a_body_cut_short_is_a_502_transport_failure() {
    assert_fault(
        Fault::CloseMidBody,
        502,
        "upstream unavailable",
        "transport",
    )
    .await;
}

#[actix_web::test]
async fn invalid_http_is_a_502_transport_failure() {
    assert_fault(Fault::InvalidHttp, 502, "upstream unavailable", "transport").await;
}

#[actix_web::test]
async fn a_body_larger_than_the_cap_is_a_502_transport_failure() {
    assert_fault(Fault::HugeBody, 502, "upstream unavailable", "transport").await;
}

#[actix_web::test]
async fn an_upstream_that_never_answers_is_a_504_within_the_timeout() {
    assert_fault(Fault::NeverAnswer, 504, "upstream timeout", "timeout").await;
}

#[actix_web::test]
async fn a_response_dripped_byte_by_byte_past_the_deadline_is_a_504() {
    assert_fault(Fault::Drip, 504, "upstream timeout", "timeout").await;
}

#[actix_web::test]
async fn an_error_status_counts_at_once_even_if_its_body_stalls() {
    assert_fault(Fault::ErrorThenStall, 502, "upstream error", "error").await;
}

#[actix_web::test]
async fn a_slow_but_timely_response_is_a_200() {
    // 50 bytes at 30 ms each (~1.5 s) within a 3 s timeout.
    let app = api_against(Fault::Drip).await;
    let r = app.get("/client?timeout_ms=3000").await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    assert_eq!(app.metric("circuit_breaker_state", &[]).await, Some(0.0));
}
