//! `autoscaling_load_ratio` live: the demand over the replica's capacity, from real requests.

use std::time::Duration;

use crate::helpers::{series_value, spawn_app};

/// Sends `rate` requests a second to `path`, evenly spread, for `seconds`, without waiting for
/// the answers (open loop); returns the gauge read just before the load stops.
async fn offer(app: &crate::helpers::TestApp, path: &str, rate: u32, seconds: u32) -> f64 {
    let mut tick = actix_web::rt::time::interval(Duration::from_secs(1) / rate);
    for _ in 0..rate * seconds {
        tick.tick().await;
        let request = app.client.get(app.url(path)).send();
        actix_web::rt::spawn(async move {
            if let Ok(mut res) = request.await {
                let _ = res.body().await;
            }
        });
    }
    series_value(&app.metrics().await, "autoscaling_load_ratio", &[]).expect("the gauge")
}

#[actix_web::test]
async fn the_load_ratio_reads_zero_when_idle_and_demand_over_capacity_under_load() {
    // 4 slots of 50 ms serve 80 requests a second; 200 a second is 2.5 times that.
    let app = spawn_app(&[
        ("LOAD_SHED__ADMISSION__MAX_INFLIGHT", "4"),
        ("LOAD_SHED__ADMISSION__NORMAL_MAX_INFLIGHT", "3"),
        ("LOAD_SHED__ADMISSION__LOW_MAX_INFLIGHT", "2"),
    ])
    .await;
    assert_eq!(
        series_value(&app.metrics().await, "autoscaling_load_ratio", &[]),
        Some(0.0)
    );
    let ratio = offer(&app, "/client?ms=50", 200, 3).await;
    // The healthy latency is the call's 50 ms plus the hop; the rate is what was sent.
    assert!((2.0..3.5).contains(&ratio), "ratio {ratio}");
}

#[actix_web::test]
async fn in_adaptive_mode_the_capacity_is_the_limits_upper_bound() {
    // max_limit 10: 200 a second of 50 ms need 10 slots, exactly the replica's own capacity,
    // whatever the live limit has grown to meanwhile.
    let app = spawn_app(&[
        ("LOAD_SHED__ADMISSION__MODE", "adaptive"),
        ("LOAD_SHED__ADMISSION__MIN_LIMIT", "3"),
        ("LOAD_SHED__ADMISSION__MAX_LIMIT", "10"),
    ])
    .await;
    let ratio = offer(&app, "/client?ms=50", 200, 3).await;
    assert!((0.8..1.4).contains(&ratio), "ratio {ratio}");
}
