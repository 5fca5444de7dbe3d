//! The optional LIFO backlog (`admission.queue_size`, `admission.queue_timeout_ms`) over real HTTP.

use std::time::{Duration, Instant};

use crate::helpers::{client_decisions, spawn_app, TestApp};

/// Three slots (high 3, normal 2, low 1) in front of a 2-second upstream timeout.
fn env(
    queue_size: &'static str,
    queue_timeout_ms: &'static str,
) -> Vec<(&'static str, &'static str)> {
    vec![
        ("LOAD_SHED__ADMISSION__MAX_INFLIGHT", "3"),
        ("LOAD_SHED__ADMISSION__NORMAL_MAX_INFLIGHT", "2"),
        ("LOAD_SHED__ADMISSION__LOW_MAX_INFLIGHT", "1"),
        ("LOAD_SHED__ADMISSION__QUEUE_SIZE", queue_size),
        ("LOAD_SHED__ADMISSION__QUEUE_TIMEOUT_MS", queue_timeout_ms),
        ("LOAD_SHED__TIMEOUTS__UPSTREAM_MS", "2000"),
    ]
}

/// Sends `path` after `delay`, on its own connection; returns (status, when it was answered).
fn send_after(
    app: &TestApp,
    path: &str,
    delay: Duration,
) -> actix_web::rt::task::JoinHandle<(u16, Instant)> {
    let url = app.url(path);
    actix_web::rt::spawn(async move {
        actix_web::rt::time::sleep(delay).await;
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(10))
            .finish();
        let mut res = client.get(url).send().await.expect("request");
        let _ = res.body().await;
        (res.status().as_u16(), Instant::now())
    })
}

async fn statuses(app: &TestApp, n: usize, path: &str) -> Vec<u16> {
    let calls: Vec<_> = (0..n)
        .map(|_| send_after(app, path, Duration::ZERO))
        .collect();
    let mut out = Vec::new();
    for c in calls {
        out.push(c.await.unwrap().0);
    }
    out.sort();
    out
}

/// Waits until nothing is in flight or queued, then checks the counts reconcile for `priority`.
async fn settled(app: &TestApp, priority: &str) -> (f64, f64) {
    app.wait_for("admission_inflight", &[], 0.0, Duration::from_secs(5))
        .await;
    app.wait_for("admission_queued", &[], 0.0, Duration::from_secs(5))
        .await;
    let text = app.metrics().await;
    let admitted = client_decisions(&text, priority, "admitted").unwrap_or(0.0);
    let shed = client_decisions(&text, priority, "shed").unwrap_or(0.0);
    let released =
        crate::helpers::series_value(&text, "admission_released_total", &[("priority", priority)])
            .unwrap_or(0.0);
    assert_eq!(admitted, released, "admitted = released for {priority}");
    (admitted, shed)
}

#[actix_web::test]
async fn a_burst_that_fits_a_moment_later_waits_instead_of_getting_429() {
    let path = "/client?ms=100&priority=high";
    // Without a backlog, six at once on three slots: three are shed.
    let app = spawn_app(&env("0", "1000")).await;
    let got = statuses(&app, 6, path).await;
    assert!(got.contains(&429), "{got:?}");
    // With one, the second three wait about 100 ms and are served.
    let app = spawn_app(&env("8", "1000")).await;
    let started = Instant::now();
    let got = statuses(&app, 6, path).await;
    assert_eq!(got, vec![200; 6]);
    assert!(
        started.elapsed() >= Duration::from_millis(190),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(settled(&app, "high").await, (6.0, 0.0));
}

#[actix_web::test]
async fn a_request_that_waited_past_the_queue_timeout_is_shed_never_served_late() {
    let app = spawn_app(&env("8", "100")).await;
    let start = Instant::now();
    let holders: Vec<_> = (0..3)
        .map(|_| send_after(&app, "/client?ms=500&priority=high", Duration::ZERO))
        .collect();
    let late: Vec<_> = (0..2)
        .map(|_| {
            send_after(
                &app,
                "/client?ms=0&priority=high",
                Duration::from_millis(50),
            )
        })
        .collect();
    for l in late {
        let (status, at) = l.await.unwrap();
        assert_eq!(status, 429);
        let waited = at - start;
        // Asked at 50 ms, shed at about 150 ms: after its queue timeout, long before a slot frees.
        assert!(waited >= Duration::from_millis(140), "{waited:?}");
        assert!(waited < Duration::from_millis(450), "{waited:?}");
    }
    for h in holders {
        assert_eq!(h.await.unwrap().0, 200);
    }
    assert_eq!(settled(&app, "high").await, (3.0, 2.0));
}

#[actix_web::test]
async fn the_newest_waiter_gets_the_next_free_slot() {
    let app = spawn_app(&env("8", "2000")).await;
    let t0 = Instant::now();
    // One slot frees at about 200 ms, the other two at about 900 ms.
    let _short = send_after(&app, "/client?ms=200&priority=high", Duration::ZERO);
    let _long: Vec<_> = (0..2)
        .map(|_| send_after(&app, "/client?ms=900&priority=high", Duration::ZERO))
        .collect();
    // Two waiters of 300 ms each: the one served first holds the slot it gets for 300 ms.
    let older = send_after(
        &app,
        "/client?ms=300&priority=high",
        Duration::from_millis(50),
    );
    let newer = send_after(
        &app,
        "/client?ms=300&priority=high",
        Duration::from_millis(100),
    );
    let (older, newer) = (older.await.unwrap(), newer.await.unwrap());
    assert_eq!((older.0, newer.0), (200, 200));
    assert!(
        older.1 > newer.1 + Duration::from_millis(200),
        "the newer request was served first, at the first free slot: older {:?}, newer {:?}",
        older.1 - t0,
        newer.1 - t0
    );
    settled(&app, "high").await;
}

#[actix_web::test]
async fn a_full_backlog_sheds_its_oldest_waiter_and_clients_that_leave_leak_nothing() {
    let app = spawn_app(&env("1", "2000")).await;
    let start = Instant::now();
    let _holders: Vec<_> = (0..3)
        .map(|_| send_after(&app, "/client?ms=300&priority=high", Duration::ZERO))
        .collect();
    let oldest = send_after(
        &app,
        "/client?ms=0&priority=high",
        Duration::from_millis(50),
    );
    let newest = send_after(
        &app,
        "/client?ms=0&priority=high",
        Duration::from_millis(100),
    );
    let (status, at) = oldest.await.unwrap();
    assert_eq!(status, 429);
    assert!(
        at - start < Duration::from_millis(250),
        "shed when the newcomer came, not later"
    );
    assert_eq!(newest.await.unwrap().0, 200);
    // A client that gives up while queued: its place is dropped, no permit leaks.
    let _holders: Vec<_> = (0..3)
        .map(|_| send_after(&app, "/client?ms=300&priority=high", Duration::ZERO))
        .collect();
    actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    let impatient = awc::Client::builder()
        .timeout(Duration::from_millis(50))
        .finish();
    assert!(impatient
        .get(app.url("/client?ms=0&priority=high"))
        .send()
        .await
        .is_err());
    let (admitted, shed) = settled(&app, "high").await;
    assert_eq!(admitted + shed, 9.0, "every request decided once");
}
