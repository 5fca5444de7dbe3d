//! `load-shed-api check [URL]`: probes a running api (`/healthz`, then one `/client`) and exits 0
//! when both answer 200, 1 otherwise. The chart's `helm test` runs it from the project's own image.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the probe against `base` (`http://host:port`); returns one line per step, or why it failed.
pub fn run(base: &str) -> Result<Vec<String>, String> {
    let authority = base
        .strip_prefix("http://")
        .ok_or_else(|| format!("{base}: only http:// URLs are supported"))?
        .trim_end_matches('/');
    let mut lines = Vec::new();
    for path in ["/healthz", "/client"] {
        let (status, body) = request(authority, "GET", path, None)?;
        let line = format!("GET {path} -> {status} {}", body.trim());
        if status != 200 {
            return Err(line);
        }
        lines.push(line);
    }
    Ok(lines)
}

/// One HTTP/1.1 request without a body and with `Connection: close` (and `Authorization: Bearer
/// <token>` when given); returns status and body. Shared with `load-shed-api admin`.
pub(crate) fn request(
    authority: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    let fail = |e: std::io::Error| format!("{method} http://{authority}{path}: {e}");
    let addr = authority
        .to_socket_addrs()
        .map_err(fail)?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(fail)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(fail)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(fail)?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(fail)?;
    let mut raw = Vec::new();
    stream.take(1 << 20).read_to_end(&mut raw).map_err(fail)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{method} http://{authority}{path}: not an HTTP response"))?;
    Ok((status, body.to_string()))
}
