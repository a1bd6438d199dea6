//! Every transport on the mailbox URL: SSE, WebSocket, NDJSON, iframe,
//! JSONP and CORS, over raw sockets. (Real third-party clients are used by
//! tests/interop/test_transports.py.)

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Opens a streaming request and returns the reader after the head.
fn open_stream(
    gw: &Gateway,
    target: &str,
    headers: &str,
) -> (Response, BufReader<TcpStream>, TcpStream) {
    let s = gw.connect();
    let mut w = s.try_clone().unwrap();
    write!(w, "GET {target} HTTP/1.1\r\nHost: t\r\n{headers}\r\n").unwrap();
    let mut r = BufReader::new(s);
    let (status, headers) = read_head(&mut r).unwrap();
    (
        Response {
            status,
            headers,
            body: vec![],
        },
        r,
        w,
    )
}

/// Reads chunks until `pred` holds for the accumulated text.
fn read_until(r: &mut BufReader<TcpStream>, mut pred: impl FnMut(&str) -> bool) -> String {
    let mut text = String::new();
    while !pred(&text) {
        match read_chunk(r).unwrap() {
            Some(chunk) => text.push_str(&String::from_utf8_lossy(&chunk)),
            None => panic!("stream ended early; got {text:?}"),
        }
    }
    text
}

/// Parses SSE text into (event, id, data) triples.
fn sse_events(text: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let (mut event, mut id, mut data, mut has_data) =
            (String::new(), String::new(), Vec::new(), false);
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event: ") {
                event = v.into();
            } else if let Some(v) = line.strip_prefix("id: ") {
                id = v.into();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push(v.to_string());
                has_data = true;
            }
        }
        if has_data {
            out.push((event, id, data.join("\n")));
        }
    }
    out
}

#[test]
fn sse_backlog_live_multiline_and_resume() {
    let gw = Gateway::start("mailbox.heartbeat = 1");
    gw.publish("s", b"retained");
    let (head, mut r, _w) = open_stream(&gw, "/mailbox/s", "Accept: text/event-stream\r\n");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    assert_eq!(head.header("cache-control"), Some("no-cache"));
    assert_eq!(head.header("x-accel-buffering"), Some("no"));
    let text = read_until(&mut r, |t| t.contains("data: retained"));
    assert!(text.starts_with("retry: "), "{text:?}");
    gw.wait_subscribers("s", 1);
    gw.publish("s", b"line one\nline two\r\nline three");
    gw.publish("s", &[0xff, 0x01]);
    let text = read_until(&mut r, |t| t.contains("event: base64"));
    let events = sse_events(&text);
    assert_eq!(events[0].2, "line one\nline two\nline three");
    assert_eq!(events[1].0, "base64");
    assert_eq!(events[1].2, "/wE=");
    let resume_from = events[0].1.clone();
    // Heartbeat comments keep the line alive.
    let beat = read_until(&mut r, |t| t.contains(":\n"));
    assert!(beat.contains(":\n"));
    drop(r);
    // Reconnect with Last-Event-ID: exactly what came after.
    let (_, mut r2, _w2) = open_stream(
        &gw,
        "/mailbox/s?transport=sse",
        &format!("Last-Event-ID: {resume_from}\r\n"),
    );
    let text = read_until(&mut r2, |t| t.contains("event: base64"));
    let events = sse_events(&text);
    assert_eq!(events.len(), 1, "{text:?}");
    assert_eq!(events[0].0, "base64");
}

#[test]
fn sse_missed_event_before_retained() {
    let gw = Gateway::start("mailbox.max-messages = 2");
    gw.publish("sm", b"1");
    let cursor = gw.get("/mailbox/sm").json()["cursor"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 2..=5 {
        gw.publish("sm", i.to_string().as_bytes());
    }
    let (_, mut r, _w) = open_stream(
        &gw,
        &format!("/mailbox/sm?transport=sse&since={cursor}"),
        "",
    );
    let text = read_until(&mut r, |t| t.contains("data: 5"));
    let events = sse_events(&text);
    assert_eq!(events[0].0, "missed");
    assert_eq!(events[1].2, "4");
    assert_eq!(events[2].2, "5");
}

#[test]
fn ndjson_stream() {
    let gw = Gateway::start("");
    gw.publish("nd", b"a");
    let (head, mut r, _w) = open_stream(&gw, "/mailbox/nd?transport=stream", "");
    assert_eq!(head.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    read_until(&mut r, |t| t.contains("\"a\""));
    gw.wait_subscribers("nd", 1);
    gw.publish("nd", b"b\nc");
    let text = read_until(&mut r, |t| t.contains("b\\nc"));
    let line = text.lines().find(|l| l.contains("b\\nc")).unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["data"], "b\nc");
    assert!(v["id"].is_string());
}

#[test]
fn forever_iframe_pads_and_escapes() {
    let gw = Gateway::start("");
    gw.publish("ifr", b"</script><script>alert(1)</script>");
    let (head, mut r, _w) = open_stream(&gw, "/mailbox/ifr?transport=iframe&callback=top.cb", "");
    assert_eq!(
        head.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let text = read_until(&mut r, |t| t.contains("</script>\n"));
    let first_script = text.find("<script>").unwrap();
    assert!(
        first_script >= 1024,
        "at least 1 KiB before the first script"
    );
    let script = &text[first_script..];
    assert!(script.starts_with("<script>parent.top.cb({"));
    assert_eq!(
        script.matches("</script>").count(),
        1,
        "payload cannot close the tag: {script}"
    );
    let json = &script["<script>parent.top.cb(".len()..script.find(");</script>").unwrap()];
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(v["data"], "</script><script>alert(1)</script>");
    assert_eq!(
        gw.get("/mailbox/ifr?transport=iframe").status,
        400,
        "callback required"
    );
}

#[test]
fn jsonp_long_poll() {
    let gw = Gateway::start("");
    gw.publish("jp", "\u{2028}<b>".as_bytes());
    let resp = gw.get("/mailbox/jp?callback=my.handler");
    assert_eq!(resp.status, 200);
    assert!(
        resp.header("content-type")
            .unwrap()
            .starts_with("application/javascript")
    );
    let text = resp.text();
    assert!(
        text.starts_with("my.handler({") && text.ends_with("});"),
        "{text}"
    );
    assert!(!text.contains('\u{2028}') && !text.contains('<'));
    let v: serde_json::Value =
        serde_json::from_str(&text["my.handler(".len()..text.len() - 2]).unwrap();
    assert_eq!(v["messages"][0]["data"], "\u{2028}<b>");
    for hostile in ["alert(1)", "a;b", "x%3Cy", "1abc", &"a".repeat(65)] {
        let resp = gw.get(&format!("/mailbox/jp?callback={hostile}"));
        assert_eq!(resp.status, 400, "{hostile}");
        assert!(!resp.text().contains(hostile));
    }
}

#[test]
fn streams_end_cleanly_after_max_duration() {
    let gw = Gateway::start("mailbox.stream-max-duration = 1");
    let (_, mut r, _w) = open_stream(&gw, "/mailbox/dur?transport=sse", "");
    let started = Instant::now();
    // Read until the final chunk: a clean end, not a reset.
    while read_chunk(&mut r).unwrap().is_some() {}
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
}

#[test]
fn streams_end_after_max_bytes() {
    let gw = Gateway::start("mailbox.stream-max-bytes = 10");
    gw.publish("by", b"0123456789abc");
    gw.publish("by", b"second");
    let (_, mut r, _w) = open_stream(&gw, "/mailbox/by?transport=stream", "");
    let mut text = String::new();
    while let Some(chunk) = read_chunk(&mut r).unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("0123456789abc"));
    assert!(!text.contains("second"), "ended after the byte cap");
}

#[test]
fn cors_allowed_foreign_and_preflight() {
    let gw = Gateway::start("mailbox.cors-origins = ( \"https://app.example\" )");
    gw.publish("c", b"x");
    let ok = gw.get_with("/mailbox/c", "Origin: https://app.example\r\n");
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(ok.header("vary"), Some("Origin"));
    let foreign = gw.get_with("/mailbox/c", "Origin: https://evil.example\r\n");
    assert_eq!(foreign.status, 200);
    assert!(foreign.header("access-control-allow-origin").is_none());
    let pre = gw.request(
        "OPTIONS /mailbox/c HTTP/1.1\r\nHost: t\r\nOrigin: https://app.example\r\n\
         Access-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: last-event-id\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(pre.status, 204);
    assert_eq!(
        pre.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert!(
        pre.header("access-control-allow-methods")
            .unwrap()
            .contains("GET")
    );
    assert!(
        pre.header("access-control-allow-headers")
            .unwrap()
            .contains("Last-Event-ID")
    );
}

#[test]
fn slow_reader_is_cut_off_while_others_keep_receiving() {
    let gw = Gateway::start(
        "mailbox.max-pending-bytes = 1200000\nmailbox.max-messages = 1000\nmailbox.max-mailbox-bytes = 100000000",
    );
    // The slow one never reads; the fast one reads everything.
    let slow = gw.connect();
    slow.set_read_timeout(None).unwrap();
    (&slow)
        .write_all(b"GET /mailbox/busy?transport=stream HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let (_, mut fast, _w) = open_stream(&gw, "/mailbox/busy?transport=stream", "");
    gw.wait_subscribers("busy", 2);
    let payload = vec![b'z'; 64 * 1024];
    // The publisher waits for the fast reader after each message, so only
    // the slow one falls behind.
    let (seen_tx, seen_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut seen = 0;
        let mut text = Vec::new();
        while seen < 200 {
            let chunk = read_chunk(&mut fast)
                .unwrap()
                .expect("fast stream stays open");
            text.extend_from_slice(&chunk);
            let now = text.iter().filter(|&&b| b == b'\n').count();
            if now > seen {
                seen = now;
                let _ = seen_tx.send(seen);
            }
        }
        seen
    });
    let mut backend = gw.backend();
    for i in 1..=200 {
        backend.call(&[b"PUBLISH", b"busy", &payload]);
        while seen_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("fast reader keeps up")
            < i
        {}
    }
    assert_eq!(reader.join().unwrap(), 200);
    gw.wait_subscribers("busy", 1);
    let info = backend.call(&[b"INFO"]).bulk_text();
    assert!(info.contains("slow_subscribers_closed:1"), "{info}");
    drop(slow);
}

// ----- WebSocket ---------------------------------------------------------

struct Ws {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

fn ws_connect(gw: &Gateway, target: &str) -> Ws {
    let s = gw.connect();
    let mut w = s.try_clone().unwrap();
    write!(
        w,
        "GET {target} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let (status, headers) = read_head(&mut r).unwrap();
    assert_eq!(status, 101);
    let accept = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-accept"))
        .unwrap();
    assert_eq!(accept.1, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    Ws { r, w }
}

impl Ws {
    fn frame(&mut self) -> (u8, Vec<u8>) {
        let mut h = [0u8; 2];
        self.r.read_exact(&mut h).unwrap();
        assert_eq!(h[1] & 0x80, 0, "server frames are unmasked");
        let mut len = (h[1] & 0x7f) as usize;
        if len == 126 {
            let mut b = [0u8; 2];
            self.r.read_exact(&mut b).unwrap();
            len = u16::from_be_bytes(b) as usize;
        } else if len == 127 {
            let mut b = [0u8; 8];
            self.r.read_exact(&mut b).unwrap();
            len = u64::from_be_bytes(b) as usize;
        }
        let mut payload = vec![0; len];
        self.r.read_exact(&mut payload).unwrap();
        (h[0] & 0x0f, payload)
    }

    fn send(&mut self, opcode: u8, payload: &[u8], masked: bool) {
        let mut f = vec![0x80 | opcode];
        let mask_bit = if masked { 0x80 } else { 0 };
        assert!(payload.len() < 126);
        f.push(mask_bit | payload.len() as u8);
        let key = [1u8, 2, 3, 4];
        if masked {
            f.extend_from_slice(&key);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            f.extend_from_slice(payload);
        }
        self.w.write_all(&f).unwrap();
    }
}

#[test]
fn websocket_messages_ping_pong_and_close() {
    let gw = Gateway::start("");
    gw.publish("ws", b"first");
    let mut ws = ws_connect(&gw, "/mailbox/ws");
    let (op, payload) = ws.frame();
    assert_eq!(op, 1);
    let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(v["data"], "first");
    gw.wait_subscribers("ws", 1);
    gw.publish("ws", &[0xc3, 0x28]);
    let (_, payload) = ws.frame();
    let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(v["encoding"], "base64");
    ws.send(0x9, b"are you there", true);
    assert_eq!(ws.frame(), (0xA, b"are you there".to_vec()));
    // Client data is accepted and ignored.
    ws.send(0x1, b"hello server", true);
    ws.send(0x8, &1000u16.to_be_bytes(), true);
    let (op, payload) = ws.frame();
    assert_eq!(op, 0x8);
    assert_eq!(&payload[..2], &1000u16.to_be_bytes());
    let mut rest = Vec::new();
    ws.r.read_to_end(&mut rest).unwrap();
    gw.wait_subscribers("ws", 0);
}

#[test]
fn websocket_resumes_with_since_and_sends_pings() {
    let gw = Gateway::start("mailbox.heartbeat = 1");
    gw.publish("wr", b"1");
    gw.publish("wr", b"2");
    let first = gw.get("/mailbox/wr").json();
    let cursor = first["messages"][0]["id"].as_str().unwrap().to_string();
    let mut ws = ws_connect(&gw, &format!("/mailbox/wr?since={cursor}"));
    let (_, payload) = ws.frame();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&payload).unwrap()["data"],
        "2"
    );
    let (op, _) = ws.frame();
    assert_eq!(op, 0x9, "the gateway pings to find dead peers");
    ws.send(0xA, b"", true);
}

#[test]
fn websocket_protocol_violations_get_close_codes() {
    let gw = Gateway::start("");
    let cases: &[(&[u8], u16)] = &[
        (&[0x81, 0x02, b'h', b'i'], 1002), // unmasked client frame
        (&[0x89, 0xFE, 0x00, 0x7E, 1, 2, 3, 4], 1002), // ping with 126-byte length
        (&[0x81, 0x82, 0, 0, 0, 0, 0xc3, 0x28], 1007), // invalid UTF-8 text
        (
            &[
                0x82, 0xFF, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0,
            ],
            1009,
        ), // claims 2^63 - 1 bytes
        (&[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 1002), // length with the top bit set
    ];
    for (frame, code) in cases {
        let mut ws = ws_connect(&gw, "/mailbox/viol");
        ws.w.write_all(frame).unwrap();
        let (op, payload) = ws.frame();
        assert_eq!(op, 0x8);
        assert_eq!(
            u16::from_be_bytes([payload[0], payload[1]]),
            *code,
            "{frame:?}"
        );
    }
    let mut line = String::new();
    let _ = BufReader::new(gw.connect()).read_line(&mut line);
    assert_eq!(gw.publish("viol", b"x"), 0, "no subscriber left behind");
}

#[test]
fn websocket_handshake_errors() {
    let gw = Gateway::start("");
    let resp = gw.request(
        "GET /mailbox/a HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
    );
    assert_eq!(resp.status, 426);
    assert_eq!(resp.header("sec-websocket-version"), Some("13"));
    let resp = gw.request(
        "GET /mailbox/a HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    assert_eq!(resp.status, 400);
}
