//! Clients that crawl, idle, abort mid-request or vanish: others are still served at their normal
//! latency, permits and probe slots come back, and nothing is counted as an upstream result. Blocking socket work runs off the test's thread: the in-process actors run on it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use actix_web::rt::task::spawn_blocking;

use crate::helpers::{client_decisions, send_and_leave_open, series_value, spawn_app};

fn connect_many(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n).map(|_| TcpStream::connect(addr).unwrap()).collect()
}

#[actix_web::test]
async fn hundreds_of_idle_and_slowloris_connections_do_not_slow_other_clients() {
    let app = spawn_app(&[("LOAD_SHED__SERVER__CLIENT_REQUEST_TIMEOUT_MS", "1000")]).await;
    let addr = app.api;
    // 300 connections that never send a byte.
    let idle = spawn_blocking(move || connect_many(addr, 300))
        .await
        .unwrap();
    // 100 that send a request head one byte at a time (slowloris), for at most 3 s.
    let stop = Arc::new(AtomicBool::new(false));
    let dripping = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut slow = connect_many(addr, 100);
            let head =
                b"GET /client?ms=0 HTTP/1.1\r\nHost: slow\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaa";
            let started = Instant::now();
            for byte in head.iter().cycle() {
                if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(3) {
                    break;
                }
                for s in &mut slow {
                    let _ = s.write_all(&[*byte]);
                }
                thread::sleep(Duration::from_millis(50));
            }
        })
    };
    actix_web::rt::time::sleep(Duration::from_millis(200)).await;

    let mut took = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        assert_eq!(app.get("/client?ms=0").await.status, 200);
        took.push(started.elapsed());
    }
    took.sort();
    assert!(
        took[10] < Duration::from_millis(20),
        "median {:?}",
        took[10]
    );
    assert!(
        took[19] < Duration::from_millis(200),
        "slowest {:?}",
        took[19]
    );

    // An idle connection is answered 408 and closed once client_request_timeout has passed.
    let answer = spawn_blocking(move || {
        let mut first = idle.into_iter().next().unwrap();
        first
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let mut answer = String::new();
        let _ = first.read_to_string(&mut answer);
        answer
    })
    .await
    .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "idle connection got {answer:?}"
    );
    stop.store(true, Ordering::Relaxed);
    spawn_blocking(move || dripping.join().unwrap())
        .await
        .unwrap();
}

/// One client: 50 requests of random latency and priority, leaving at a random moment about half
/// the time. Returns how many it waited for.
fn erratic_client(addr: SocketAddr) -> usize {
    let mut answered = 0;
    for _ in 0..50 {
        let ms = rand::random::<u64>() % 300;
        let priority = ["high", "normal", "low"][rand::random::<u32>() as usize % 3];
        let mut s = TcpStream::connect(addr).unwrap();
        let request = format!(
            "GET /client?ms={ms}&timeout_ms=1000&priority={priority} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        );
        s.write_all(request.as_bytes()).unwrap();
        if rand::random::<bool>() {
            thread::sleep(Duration::from_millis(rand::random::<u64>() % 200));
            drop(s);
        } else {
            let mut answer = String::new();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = s.read_to_string(&mut answer);
            assert!(
                answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.1 429"),
                "{answer:?}"
            );
            answered += 1;
        }
    }
    answered
}

#[actix_web::test]
async fn clients_vanishing_at_random_under_load_leak_no_permit() {
    let app = spawn_app(&[]).await;
    let addr = app.api;
    let answered: usize = spawn_blocking(move || {
        let clients: Vec<_> = (0..4)
            .map(|_| thread::spawn(move || erratic_client(addr)))
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).sum()
    })
    .await
    .unwrap();
    assert!(answered > 0);

    app.wait_for("admission_inflight", &[], 0.0, Duration::from_secs(3))
        .await;
    let text = app.metrics().await;
    for p in ["high", "normal", "low"] {
        let admitted = client_decisions(&text, p, "admitted").unwrap();
        let released = series_value(&text, "admission_released_total", &[("priority", p)]).unwrap();
        assert_eq!(
            admitted, released,
            "{p}: every admitted permit was released exactly once"
        );
    }
    assert_eq!(app.get("/client?ms=0").await.status, 200);
}

#[actix_web::test]
async fn permits_are_released_when_clients_abort_mid_request() {
    let app = spawn_app(&[("LOAD_SHED__BREAKER__FAILURE_THRESHOLD", "1")]).await;
    let streams: Vec<_> = (0..20)
        .map(|_| send_and_leave_open(app.api, "GET", "/client?ms=3000&timeout_ms=5000"))
        .collect();
    app.wait_for("admission_inflight", &[], 20.0, Duration::from_secs(3))
        .await;
    drop(streams);

    // Released at the disconnect, well before the upstream's 3 s would end.
    app.wait_for("admission_inflight", &[], 0.0, Duration::from_millis(1500))
        .await;
    app.wait_for(
        "http_requests_total",
        &[("method", "GET"), ("path", "/client"), ("status", "499")],
        20.0,
        Duration::from_secs(1),
    )
    .await;
    let text = app.metrics().await;
    for line in text
        .lines()
        .filter(|l| l.starts_with("upstream_requests_total"))
    {
        assert!(line.ends_with(" 0"), "an aborted call was counted: {line}");
    }
    // An abandoned call is no verdict: the breaker (threshold 1) stays closed and serves.
    assert_eq!(app.metric("circuit_breaker_state", &[]).await, Some(0.0));
    assert_eq!(app.get("/client?ms=0").await.status, 200);
}

#[actix_web::test]
async fn an_abandoned_probe_frees_its_slot_for_the_next_caller() {
    let app = spawn_app(&[
        ("LOAD_SHED__BREAKER__FAILURE_THRESHOLD", "1"),
        ("LOAD_SHED__BREAKER__OPEN_SECONDS", "1"),
    ])
    .await;
    assert_eq!(app.get("/client?ms=0&fail_rate=1").await.status, 502);
    app.wait_for("circuit_breaker_state", &[], 2.0, Duration::from_secs(3))
        .await;
    // This caller takes the only probe slot and leaves.
    let probe = send_and_leave_open(app.api, "GET", "/client?ms=3000&timeout_ms=5000");
    app.wait_for("admission_inflight", &[], 1.0, Duration::from_secs(2))
        .await;
    assert_eq!(app.get("/client?ms=0").await.status, 503);
    drop(probe);
    app.wait_for("admission_inflight", &[], 0.0, Duration::from_secs(2))
        .await;
    // The slot is free again: the next caller probes and closes the breaker.
    assert_eq!(app.get("/client?ms=0").await.status, 200);
    app.wait_for("circuit_breaker_state", &[], 0.0, Duration::from_secs(1))
        .await;
}
