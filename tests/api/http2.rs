//! No listener speaks HTTP/2. The h2 crate is in the build only through awc's `http2` feature,
//! and `deny.toml` ignores its advisory RUSTSEC-2026-0258 for that reason: awc has no TLS, so it
//! never negotiates h2, and the listeners refuse both ways into cleartext HTTP/2 (h2c). If either
//! test fails, the ignore in `deny.toml` is no longer true.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use actix_web::rt::task::spawn_blocking;

use crate::helpers::spawn_app;

/// Sends `bytes` on a fresh connection to each listener of role `all` (api, then upstream) and
/// returns what each sent back before closing the connection or going quiet for a second.
async fn answers(bytes: &'static [u8]) -> Vec<(SocketAddr, Vec<u8>)> {
    let app = spawn_app(&[]).await;
    let mut answers = Vec::new();
    for addr in [app.api, app.upstream.expect("role all")] {
        let answer = spawn_blocking(move || exchange(addr, bytes)).await.unwrap();
        answers.push((addr, answer));
    }
    answers
}

fn exchange(addr: SocketAddr, bytes: &'static [u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    stream.write_all(bytes).expect("send");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    answer
}

/// The HTTP/2 connection preface and an empty SETTINGS frame (RFC 9113, 3.4 and 6.5).
const PRIOR_KNOWLEDGE: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// An HTTP/1.1 request asking to upgrade to h2c (RFC 7540, 3.2).
const UPGRADE: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n";

#[actix_web::test]
async fn a_listener_answers_no_http2_prior_knowledge_connection_with_http2() {
    for (addr, answer) in answers(PRIOR_KNOWLEDGE).await {
        // An HTTP/2 server's first frame is its SETTINGS: 9 bytes of header, type 0x4.
        assert!(
            answer.len() < 9 || answer[3] != 0x04,
            "{addr} answered the HTTP/2 preface with a SETTINGS frame: {answer:?}"
        );
        assert!(
            answer.is_empty() || answer.starts_with(b"HTTP/1.1 "),
            "{addr}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
}

#[actix_web::test]
async fn a_listener_answers_an_h2c_upgrade_in_http1() {
    for (addr, answer) in answers(UPGRADE).await {
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 200"), "{addr}: {text}");
        assert!(!text.contains("101 Switching"), "{addr}: {text}");
    }
}
