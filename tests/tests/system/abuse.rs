//! Hostile clients against the real binary: each scenario prints its figure.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tripline_tests::unique_name;

use crate::harness::*;

/// `GET /healthz` on a fresh connection: whether it answered 200 within `wait`.
fn healthz(http: &str, wait: Duration) -> bool {
    let Ok(mut stream) = TcpStream::connect(http) else { return false };
    let _ = stream.set_read_timeout(Some(wait));
    if write!(stream, "GET /healthz HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200")
}

#[test]
fn a_slow_loris_ties_up_the_http_listener_for_no_longer_than_the_header_timeout() {
    let dir = std::env::temp_dir().join(unique_name("loris"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("tripline.toml"),
        "[http]\nlisten = \"127.0.0.1:0\"\nmax_connections = 200\nheader_timeout_ms = 1000\n",
    )
    .unwrap();
    let running = start_roles_until(&dir, "api", "query API on");
    let http = running.http();
    assert!(healthz(&http, Duration::from_secs(5)), "answers before");

    // 2,000 connections that each send half a request line and then nothing.
    let sockets: Vec<TcpStream> = (0..2_000)
        .filter_map(|_| {
            let mut stream = TcpStream::connect(&http).ok()?;
            stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: loris").ok()?;
            Some(stream)
        })
        .collect();
    let attacked = Instant::now();
    while !healthz(&http, Duration::from_secs(1)) {
        assert!(attacked.elapsed() < Duration::from_secs(10), "the listener stayed blocked by the slow clients");
        std::thread::sleep(Duration::from_millis(50));
    }
    let answered_after = attacked.elapsed();
    // The held connections were closed by the server (their headers never completed).
    let mut first = sockets.into_iter().next().unwrap();
    first.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    let closed = first.read_to_end(&mut rest).is_ok();
    eprintln!("slow-loris of 2,000 sockets: /healthz answered again after {answered_after:?}");
    assert!(closed, "a slow client's connection is closed");
    assert!(answered_after < Duration::from_secs(3), "within the header timeout and a margin: {answered_after:?}");
    drop(running);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `GET path` with a bearer key on a fresh connection: the status code.
fn status_with_key(http: &str, path: &str, key: &str) -> u16 {
    let mut stream = TcpStream::connect(http).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {http}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
}

#[test]
fn an_address_guessing_keys_is_answered_429_after_its_burst_of_failures() {
    let dir = std::env::temp_dir().join(unique_name("guess"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tripline.toml"), "[http]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let running = start_roles_until(&dir, "api", "query API on");
    let http = running.http();
    let statuses: Vec<u16> = (0..25).map(|n| status_with_key(&http, "/v1/trips", &format!("guess-{n}"))).collect();
    let unauthorized = statuses.iter().filter(|s| **s == 401).count();
    eprintln!("25 wrong keys from one address: {unauthorized} answered 401, then 429: {statuses:?}");
    assert_eq!(&statuses[..20], &[401; 20], "the burst of failures is answered");
    // Then 429 without a key lookup (a failure a second may come back meanwhile).
    assert!(statuses[20..].iter().all(|s| *s == 429 || *s == 401), "{statuses:?}");
    assert!(unauthorized <= 22 && statuses[24] == 429, "{statuses:?}");
    assert_eq!(status_with_key(&http, "/healthz", "anything"), 200, "health is not behind the key");
    drop(running);
    let _ = std::fs::remove_dir_all(&dir);
}
