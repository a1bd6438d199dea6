//! Every bad HTTP input gets its clear error, and the gateway keeps serving.

mod common;

use common::*;
use std::io::{BufReader, Read, Write};
use std::time::{Duration, Instant};

/// After each bad input, a normal client still gets its retained message.
fn still_serves(gw: &Gateway) {
    gw.publish("healthy", b"ok");
    let body = gw.get("/mailbox/healthy").json();
    assert_eq!(body["messages"][0]["data"], "ok");
}

fn raw(gw: &Gateway, bytes: &[u8]) -> Response {
    let mut s = gw.connect();
    s.write_all(bytes).unwrap();
    read_response(&mut BufReader::new(s)).expect("a response")
}

#[test]
fn bad_requests_get_clear_statuses() {
    let gw = Gateway::start("");
    let cases: &[(&[u8], u16)] = &[
        (b"NONSENSE\r\n\r\n", 400),
        (b"GET /mailbox/a HTTP/9.9\r\nHost: t\r\n\r\n", 505),
        (b"GET /mailbox/a HTTP/1.1\r\n\r\n", 400),
        (b"GET /mailbox/a HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"GET /mailbox/a HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400),
        (b"GET /mailbox/a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
        (b"GET /mailbox/a HTTP/1.1\r\nHost: t\r\nX: a\r\n folded\r\n\r\n", 400),
        (b"GET /mailbox/bad%20name HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        (b"GET /mailbox/a//b HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        (b"GET /mailbox/a/ HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        (b"GET /mailbox/ HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        (b"GET /mailbox/a?since=garbage HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        (b"GET /mailbox/a?callback=alert(1) HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        (b"POST /mailbox/a HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", 405),
        (b"DELETE /mailbox/a HTTP/1.1\r\nHost: t\r\n\r\n", 405),
        (b"GET /elsewhere HTTP/1.1\r\nHost: t\r\n\r\n", 404),
        (b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", 404),
    ];
    for (request, status) in cases {
        let resp = raw(&gw, request);
        assert_eq!(resp.status, *status, "{}", String::from_utf8_lossy(request));
        let body = resp.json();
        assert!(
            body["error"].is_string(),
            "JSON error body for {}",
            String::from_utf8_lossy(request)
        );
        if *status == 405 {
            assert_eq!(resp.header("allow"), Some("GET, HEAD, OPTIONS"));
        }
    }
    // A hostile callback is never reflected.
    let resp = raw(
        &gw,
        b"GET /mailbox/a?callback=%3Cscript%3E HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(resp.status, 400);
    assert!(!resp.text().contains("<script>"));
    still_serves(&gw);
}

#[test]
fn oversized_header_block_is_431() {
    let gw = Gateway::start("server.max-request-header-size = 2048");
    let request = format!(
        "GET /mailbox/a HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "b".repeat(4096)
    );
    let resp = raw(&gw, request.as_bytes());
    assert_eq!(resp.status, 431);
    still_serves(&gw);
}

#[test]
fn request_bodies_are_read_or_refused() {
    let gw = Gateway::start("server.max-request-body-size = 1024");
    gw.publish("body", b"m");
    // A small body is read and skipped; the pipelined request after it works.
    let s = gw.connect();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    w.write_all(b"GET /mailbox/body HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
        .unwrap();
    w.write_all(b"GET /mailbox/body HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut r).unwrap().status, 200);
    assert_eq!(read_response(&mut r).unwrap().status, 200);
    // A large one is refused.
    let resp = raw(
        &gw,
        b"GET /mailbox/body HTTP/1.1\r\nHost: t\r\nContent-Length: 999999\r\n\r\n",
    );
    assert_eq!(resp.status, 413);
    still_serves(&gw);
}

#[test]
fn slow_headers_are_cut_off() {
    let gw = Gateway::start("server.header-timeout = 1");
    let mut s = gw.connect();
    s.write_all(b"GET /mailbox/slow HTTP/1.1\r\n").unwrap();
    let started = Instant::now();
    // Trickle a byte at a time; the timeout counts from the first byte.
    let mut buf = Vec::new();
    for _ in 0..30 {
        if s.write_all(b"X").is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if started.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.read_to_end(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "cut off near the 1 s timeout"
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    still_serves(&gw);
}

#[test]
fn idle_keep_alive_connections_are_closed() {
    let gw = Gateway::start("server.keepalive-timeout = 1");
    gw.publish("idle", b"x");
    let mut s = gw.connect();
    s.write_all(b"GET /mailbox/idle HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    assert_eq!(read_response(&mut r).unwrap().status, 200);
    let started = Instant::now();
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[test]
fn too_many_connections_get_503_not_a_hang() {
    let gw = Gateway::start("server.max-connections = 20");
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut s = gw.connect();
        s.write_all(b"GET /mailbox/full HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        held.push(s);
    }
    gw.wait_subscribers("full", 20);
    let started = Instant::now();
    let mut s = gw.connect();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    drop(held);
    gw.wait_subscribers("full", 0);
    // Slots free up again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = gw.connect();
        s.write_all(
            b"GET /mailbox/x?since=garbage HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        if text.starts_with("HTTP/1.1 400") {
            break;
        }
        assert!(Instant::now() < deadline, "slots never freed: {text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn connection_close_and_http10() {
    let gw = Gateway::start("");
    gw.publish("v", b"x");
    let resp = raw(&gw, b"GET /mailbox/v HTTP/1.0\r\n\r\n");
    assert_eq!(resp.status, 200);
    assert!(resp.header("connection").is_none());
    assert_eq!(resp.json()["messages"][0]["data"], "x");
    let resp = raw(
        &gw,
        b"GET /mailbox/v HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.header("connection"), Some("close"));
}
