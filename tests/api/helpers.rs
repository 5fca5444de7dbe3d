//! Starts the real servers on 127.0.0.1:0 (or the real binary) and talks HTTP to them.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use load_shed_api::settings::Settings;
use load_shed_api::startup::Application;

pub struct TestApp {
    pub api: SocketAddr,
    pub upstream: Option<SocketAddr>,
    /// The admin listener (on a port of its own; `LOAD_SHED__ADMIN__LISTEN=""` turns it off).
    pub admin: Option<SocketAddr>,
    pub client: awc::Client,
}

/// A response as the tests look at it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    pub content_type: Option<String>,
    pub json: serde_json::Value,
}

/// Starts role `all` (or what `env` says) in this process, one worker per server, ports 0.
pub async fn spawn_app(env: &[(&str, &str)]) -> TestApp {
    let mut pairs = vec![
        ("LOAD_SHED__API__LISTEN", "127.0.0.1:0"),
        ("LOAD_SHED__UPSTREAM__LISTEN", "127.0.0.1:0"),
        ("LOAD_SHED__API__WORKERS", "1"),
        ("LOAD_SHED__UPSTREAM__WORKERS", "1"),
        ("LOAD_SHED__SHUTDOWN__GRACE_SECONDS", "1"),
        ("LOAD_SHED__ADMIN__LISTEN", "127.0.0.1:0"),
    ];
    pairs.extend_from_slice(env);
    let settings = Settings::from_env_pairs(&pairs).expect("test settings are valid");
    let app = Application::build(&settings).expect("the app binds");
    let api = app.api_addr().expect("an api listener");
    let upstream = app.upstream_addr();
    let admin = app.admin_addr();
    actix_web::rt::spawn(app.run_until_stopped(std::future::pending()));
    TestApp {
        api,
        upstream,
        admin,
        client: awc::Client::builder()
            .timeout(Duration::from_secs(15))
            .finish(),
    }
}

/// Starts only an upstream (role `upstream`) and returns its address.
pub async fn spawn_upstream(env: &[(&str, &str)]) -> SocketAddr {
    let mut pairs = vec![
        ("LOAD_SHED__ROLE", "upstream"),
        ("LOAD_SHED__UPSTREAM__LISTEN", "127.0.0.1:0"),
        ("LOAD_SHED__UPSTREAM__WORKERS", "1"),
    ];
    pairs.extend_from_slice(env);
    let settings = Settings::from_env_pairs(&pairs).expect("test settings are valid");
    let app = Application::build(&settings).expect("the upstream binds");
    let addr = app.upstream_addr().expect("an upstream listener");
    actix_web::rt::spawn(app.run_until_stopped(std::future::pending()));
    addr
}

/// Starts role `api` pointed at the dependency at `upstream`, with `env` on top.
pub async fn spawn_api_against(upstream: SocketAddr, env: &[(&str, &str)]) -> TestApp {
    let url = format!("http://{upstream}");
    let mut pairs = vec![
        ("LOAD_SHED__ROLE", "api"),
        ("LOAD_SHED__API__UPSTREAM_URL", url.as_str()),
    ];
    pairs.extend_from_slice(env);
    spawn_app(&pairs).await
}

/// A raw-TCP fake dependency on a loopback port: each connection is handed to `serve` on a thread
/// of its own, which must end by itself.
pub fn fake_upstream<F>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream) + Clone + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let serve = serve.clone();
            std::thread::spawn(move || serve(stream));
        }
    });
    addr
}

/// Reads a request head, up to its blank line, waiting at most `within` for each read. False if
/// the peer closed first or went quiet.
pub fn read_head(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    stream.set_read_timeout(Some(within)).ok();
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    true
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.api, path)
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.get_with(path, &[]).await
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = self.client.get(self.url(path));
        for h in headers {
            req = req.insert_header(*h);
        }
        reply(req.send().await.expect("request sent")).await
    }

    pub async fn post(&self, path: &str) -> Reply {
        reply(
            self.client
                .post(self.url(path))
                .send()
                .await
                .expect("request sent"),
        )
        .await
    }

    pub async fn metrics(&self) -> String {
        let mut res = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("scrape");
        assert_eq!(res.status().as_u16(), 200);
        let body = res.body().limit(16 << 20).await.expect("metrics body");
        String::from_utf8(body.to_vec()).expect("utf-8 metrics")
    }

    /// The value of one series; `labels` in any order. Absent series read as None.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        series_value(&self.metrics().await, name, labels)
    }

    /// Polls until the series has `want`, or panics after `within`.
    pub async fn wait_for(&self, name: &str, labels: &[(&str, &str)], want: f64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let got = self.metric(name, labels).await;
            if got == Some(want) {
                return;
            }
            if Instant::now() > deadline {
                panic!("{name}{labels:?} = {got:?}, expected {want} within {within:?}");
            }
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub async fn reply<S>(mut res: awc::ClientResponse<S>) -> Reply
where
    S: futures_util::Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>> + Unpin,
{
    let header = |n: &str| {
        res.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let retry_after = header("retry-after");
    let content_type = header("content-type");
    let status = res.status().as_u16();
    let body = res.body().await.expect("body");
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&body)));
    Reply {
        status,
        retry_after,
        content_type,
        json,
    }
}

/// Finds `name{labels}` in Prometheus text; label order does not matter.
pub fn series_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    want.sort();
    text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (n, rest) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}')?),
            None => (series, ""),
        };
        if n != name {
            return None;
        }
        let mut have: Vec<String> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split(',').map(str::to_string).collect()
        };
        have.sort();
        (have == want).then(|| value.parse().ok()).flatten()
    })
}

/// `admission_requests_total` for `/client`, one priority and decision.
pub fn client_decisions(text: &str, priority: &str, decision: &str) -> Option<f64> {
    series_value(
        text,
        "admission_requests_total",
        &[
            ("path", "/client"),
            ("priority", priority),
            ("decision", decision),
        ],
    )
}

/// One blocking HTTP/1.1 request with `Connection: close`: status and body.
pub fn raw_request(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {raw:?}")))?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Opens a connection and sends a request without waiting for the answer.
pub fn send_and_leave_open(addr: SocketAddr, method: &str, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n").expect("write");
    stream
}

/// The real binary, started with `env` on top of a clean environment.
pub struct Binary {
    pub child: Child,
    pub api: Option<SocketAddr>,
    pub upstream: Option<SocketAddr>,
}

pub fn binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_load-shed-api"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .current_dir(std::env::temp_dir());
    cmd
}

/// Starts the binary (role `all`, loopback ports 0 unless `env` says otherwise) and reads its
/// listening lines.
pub fn start_binary(env: &[(&str, &str)]) -> Binary {
    let mut cmd = binary();
    cmd.env("LOAD_SHED__API__LISTEN", "127.0.0.1:0")
        .env("LOAD_SHED__UPSTREAM__LISTEN", "127.0.0.1:0")
        .env("LOAD_SHED__API__WORKERS", "1")
        .env("LOAD_SHED__UPSTREAM__WORKERS", "1")
        // Tests that time the drain start it at once; the delay has tests of its own.
        .env("LOAD_SHED__SHUTDOWN__DRAIN_DELAY_SECONDS", "0")
        .env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let (mut api, mut upstream) = (None, None);
    let role = env
        .iter()
        .find(|(k, _)| *k == "LOAD_SHED__ROLE")
        .map_or("all", |(_, v)| *v);
    let expected = if role == "all" { 2 } else { 1 };
    for _ in 0..expected {
        let line = lines.next().expect("a listening line").expect("utf-8");
        let addr: SocketAddr = line
            .rsplit("addr=")
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected line {line:?}"));
        if line.contains("role=api") {
            api = Some(addr);
        } else {
            upstream = Some(addr);
        }
    }
    Binary {
        child,
        api,
        upstream,
    }
}

impl Binary {
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for exit up to `within`; kills and panics if it does not.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the binary did not exit within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
