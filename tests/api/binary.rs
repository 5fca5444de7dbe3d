//! The real binary: configuration errors, signals, draining, the `check` subcommand.

use std::time::{Duration, Instant};

use crate::helpers::{binary, raw_request, start_binary};

#[test]
fn invalid_configuration_exits_2_with_one_line_naming_the_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "LOAD_SHED__BREAKER__FAILURE_THRESHOLD",
            "abc",
            "breaker.failure_threshold",
        ),
        (
            "LOAD_SHED__ADMISSION__LOW_MAX_INFLIGHT",
            "45",
            "admission.low_max_inflight",
        ),
        (
            "LOAD_SHED__ADMISSION__NORMAL_MAX_INFLIGHT",
            "60",
            "admission.normal_max_inflight",
        ),
        ("LOAD_SHED__UPSTREAM__FAIL_RATE", "2", "upstream.fail_rate"),
        ("LOAD_SHED__ROLE", "gateway", "role"),
        (
            "LOAD_SHED__API__UPSTREAM_URL",
            "localhost:8081",
            "api.upstream_url",
        ),
        (
            "LOAD_SHED__API__LISEN",
            "0.0.0.0:1",
            "LOAD_SHED__API__LISEN",
        ),
        (
            "LOAD_SHED__TIMEOUTS__UPSTREAM_MS",
            "",
            "timeouts.upstream_ms",
        ),
    ];
    for (var, value, key) in cases {
        let out = binary().env(var, value).output().expect("runs");
        assert_eq!(out.status.code(), Some(2), "{var}={value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{var}={value}: {stderr}");
        assert!(stderr.contains(key), "{var}={value}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn a_missing_config_file_and_unknown_arguments_exit_2() {
    let out = binary()
        .env("LOAD_SHED_CONFIG", "/no/such.toml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("LOAD_SHED_CONFIG"));
    let out = binary().arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_config_file_named_by_load_shed_config_is_layered_under_the_environment() {
    let path = std::env::temp_dir().join(format!("load-shed-test-{}.toml", std::process::id()));
    std::fs::write(&path, "[breaker]\nopen_seconds = 3\nfailure_thresold = 1\n").unwrap();
    let out = binary().env("LOAD_SHED_CONFIG", &path).output().unwrap();
    let _ = std::fs::remove_file(&path);
    // A typo in a file is as fatal as one in the environment.
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("failure_thresold"));
}

/// Starts the binary with `env` (and a grace time of 5 s), calls `before` with the api's address,
/// sends a request of 800 ms, signals the process while it runs: the request is answered 200, the
/// process exits 0 within the grace time and its listener is closed.
fn drains_in_flight_requests_on(
    signal: &str,
    env: &[(&str, &str)],
    before: impl FnOnce(std::net::SocketAddr),
) {
    let mut env = env.to_vec();
    env.push(("LOAD_SHED__SHUTDOWN__GRACE_SECONDS", "5"));
    let mut app = start_binary(&env);
    let api = app.api.unwrap();
    before(api);
    let in_flight =
        std::thread::spawn(move || raw_request(api, "GET", "/client?ms=800&timeout_ms=3000"));
    std::thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    app.signal(signal);
    let (status, body) = in_flight
        .join()
        .unwrap()
        .expect("the in-flight request got an answer");
    assert_eq!(status, 200, "{body}");
    let exit = app.wait_exit(Duration::from_secs(5));
    assert_eq!(exit.code(), Some(0));
    assert!(signalled.elapsed() < Duration::from_secs(4));
    // The listener is closed.
    assert!(raw_request(api, "GET", "/healthz").is_err());
}

/// The actors live on the first api worker, which stops at once when it has no connection left.
/// A request admitted on the other worker still finishes: after admission it needs the actors
/// only for messages that may be lost at exit (its slot's release, its verdict).
#[test]
fn a_request_on_the_other_worker_finishes_after_the_actors_worker_has_stopped() {
    drains_in_flight_requests_on("INT", &[("LOAD_SHED__API__WORKERS", "2")], |api| {
        // Connections go to the workers in turn: this one (closed at once) to the first, the
        // actors'.
        assert_eq!(raw_request(api, "GET", "/healthz").unwrap().0, 200);
    });
}

#[test]
fn sigterm_drains_in_flight_requests_and_exits_0() {
    drains_in_flight_requests_on("TERM", &[], |_| {});
}

#[test]
fn sigint_drains_in_flight_requests_and_exits_0() {
    drains_in_flight_requests_on("INT", &[], |_| {});
}

#[test]
fn after_sigterm_readyz_is_503_while_the_listener_serves_for_the_drain_delay() {
    let mut app = start_binary(&[
        ("LOAD_SHED__SHUTDOWN__DRAIN_DELAY_SECONDS", "2"),
        ("LOAD_SHED__SHUTDOWN__GRACE_SECONDS", "1"),
    ]);
    let api = app.api.unwrap();
    assert_eq!(raw_request(api, "GET", "/readyz").unwrap().0, 200);
    let signalled = Instant::now();
    app.signal("TERM");
    std::thread::sleep(Duration::from_millis(200));
    // Unready at once, but new connections are still accepted and served.
    assert_eq!(raw_request(api, "GET", "/readyz").unwrap().0, 503);
    assert_eq!(raw_request(api, "GET", "/client?ms=1").unwrap().0, 200);
    std::thread::sleep(Duration::from_millis(1300));
    assert!(signalled.elapsed() < Duration::from_millis(1900));
    assert_eq!(raw_request(api, "GET", "/client?ms=1").unwrap().0, 200);
    // Then the drain: the listener closes and the process exits 0.
    let exit = app.wait_exit(Duration::from_secs(5));
    assert_eq!(exit.code(), Some(0));
    assert!(
        signalled.elapsed() >= Duration::from_secs(2),
        "stopped after {:?}, before the drain delay was over",
        signalled.elapsed()
    );
    assert!(raw_request(api, "GET", "/healthz").is_err());
}

#[test]
fn sigint_skips_the_drain_delay() {
    let mut app = start_binary(&[("LOAD_SHED__SHUTDOWN__DRAIN_DELAY_SECONDS", "5")]);
    let signalled = Instant::now();
    app.signal("INT");
    let exit = app.wait_exit(Duration::from_secs(4));
    assert_eq!(exit.code(), Some(0));
    assert!(signalled.elapsed() < Duration::from_secs(3));
}

#[test]
fn requests_still_running_after_the_grace_time_are_cut_off_and_the_exit_is_0() {
    let mut app = start_binary(&[("LOAD_SHED__SHUTDOWN__GRACE_SECONDS", "1")]);
    let api = app.api.unwrap();
    let in_flight =
        std::thread::spawn(move || raw_request(api, "GET", "/client?ms=5000&timeout_ms=8000"));
    std::thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    app.signal("TERM");
    let exit = app.wait_exit(Duration::from_secs(5));
    assert_eq!(exit.code(), Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(4),
        "took {:?}",
        signalled.elapsed()
    );
    assert!(
        in_flight.join().unwrap().is_err(),
        "a cut-off request has no answer"
    );
}

#[test]
fn the_check_subcommand_passes_against_a_running_api_and_fails_without_one() {
    let app = start_binary(&[]);
    let url = format!("http://{}", app.api.unwrap());
    let out = binary().args(["check", &url]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("GET /client -> 200"));
    drop(app);
    let out = binary().args(["check", &url]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn the_binary_starts_from_any_directory_on_its_embedded_defaults() {
    // start_binary runs in the temp dir, where no config/default.toml exists.
    let app = start_binary(&[("LOAD_SHED__ROLE", "upstream")]);
    let (status, _) = raw_request(app.upstream.unwrap(), "GET", "/upstream?ms=0").unwrap();
    assert_eq!(status, 200);
}

#[test]
fn an_injected_reset_leaves_a_debug_line_not_an_error() {
    use std::io::{BufRead, BufReader};
    use std::net::SocketAddr;
    use std::process::Stdio;

    let run = |rust_log: &str| {
        let mut child = binary()
            .env("LOAD_SHED__ROLE", "upstream")
            .env("LOAD_SHED__UPSTREAM__LISTEN", "127.0.0.1:0")
            .env("LOAD_SHED__UPSTREAM__WORKERS", "1")
            .env("LOAD_SHED__UPSTREAM__RESET_RATE", "1")
            .env("LOAD_SHED__SHUTDOWN__DRAIN_DELAY_SECONDS", "0")
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let line = BufReader::new(child.stdout.take().expect("stdout"))
            .lines()
            .next()
            .expect("a listening line")
            .expect("utf-8");
        let addr: SocketAddr = line.rsplit("addr=").next().unwrap().parse().unwrap();
        for _ in 0..5 {
            // The connection is closed mid-answer: no complete response.
            assert!(raw_request(addr, "GET", "/upstream?ms=0").is_err());
        }
        let kill = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(kill.success());
        let out = child.wait_with_output().expect("it exits");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // At the default level the five resets leave nothing.
    let info = run("info");
    assert!(!info.contains("injected reset"), "{info}");
    assert!(!info.contains("ERROR"), "{info}");
    // At debug each is one debug line.
    let debug = run("debug");
    let lines: Vec<&str> = debug
        .lines()
        .filter(|l| l.contains("injected reset"))
        .collect();
    assert_eq!(lines.len(), 5, "{debug}");
    assert!(lines.iter().all(|l| l.contains("DEBUG")), "{debug}");
}
