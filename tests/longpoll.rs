//! Long-poll: the core contract of docs/protocol.md, over real sockets.

mod common;

use common::*;
use std::io::{BufReader, Write};
use std::time::{Duration, Instant};

#[test]
fn waiting_poll_wakes_on_publish_and_publish_counts_it() {
    let gw = Gateway::start("");
    let waiter = std::thread::spawn({
        let addr = gw.addr;
        move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /mailbox/alice HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                .unwrap();
            read_response(&mut BufReader::new(s)).unwrap()
        }
    });
    gw.wait_subscribers("alice", 1);
    assert_eq!(gw.publish("alice", br#"{"text":"hi"}"#), 1);
    let resp = waiter.join().unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(resp.header("cache-control"), Some("no-cache"));
    assert!(resp.header("date").is_some());
    assert!(resp.header("server").unwrap().starts_with("cometbox/"));
    let body = resp.json();
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["data"], r#"{"text":"hi"}"#);
    assert_eq!(body["cursor"], messages[0]["id"]);
    assert!(body.get("missed").is_none());
    // Nobody waits now: the message is retained, PUBLISH says 0.
    assert_eq!(gw.publish("alice", b"second"), 0);
}

#[test]
fn retained_mail_is_picked_up_at_once() {
    let gw = Gateway::start("");
    for i in 0..3 {
        assert_eq!(gw.publish("bob", format!("m{i}").as_bytes()), 0);
    }
    let started = Instant::now();
    let body = gw.get("/mailbox/bob").json();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered at once"
    );
    let data: Vec<_> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(data, vec!["m0", "m1", "m2"]);
    assert_eq!(body["cursor"], body["messages"][2]["id"]);
    // With the cursor, nothing is repeated: the next poll waits (and times out).
    let ids: Vec<String> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "ids increase, also as strings");
    let after_first = gw.get(&format!("/mailbox/bob?since={}", ids[0])).json();
    assert_eq!(after_first["messages"].as_array().unwrap().len(), 2);
    assert_eq!(after_first["messages"][0]["data"], "m1");
}

#[test]
fn consumer_with_cursor_gets_500_messages_in_order_without_duplicates() {
    let gw = Gateway::start("mailbox.max-messages = 1000");
    let addr = gw.addr;
    let consumer = std::thread::spawn(move || {
        let s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut reader = BufReader::new(s.try_clone().unwrap());
        let mut writer = s;
        let mut cursor: Option<String> = None;
        let mut got = Vec::new();
        while got.len() < 500 {
            let target = match &cursor {
                Some(c) => format!("/mailbox/feed?since={c}"),
                None => "/mailbox/feed".to_string(),
            };
            // One keep-alive connection, as browsers do.
            write!(writer, "GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            let body = read_response(&mut reader).unwrap().json();
            for m in body["messages"].as_array().unwrap() {
                got.push(m["data"].as_str().unwrap().parse::<u32>().unwrap());
            }
            assert!(body.get("missed").is_none());
            cursor = Some(body["cursor"].as_str().unwrap().to_string());
        }
        got
    });
    gw.wait_subscribers("feed", 1);
    let mut backend = gw.backend();
    for i in 0..500u32 {
        backend.call(&[b"PUBLISH", b"feed", i.to_string().as_bytes()]);
        if i % 50 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let got = consumer.join().unwrap();
    assert_eq!(got, (0..500).collect::<Vec<_>>());
}

#[test]
fn poll_timeout_returns_empty_with_cursor_unchanged() {
    let gw = Gateway::start("mailbox.poll-timeout = 1");
    gw.publish("quiet", b"x");
    let first = gw.get("/mailbox/quiet").json();
    let cursor = first["cursor"].as_str().unwrap().to_string();
    let started = Instant::now();
    let resp = gw.get(&format!("/mailbox/quiet?since={cursor}"));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "held for the timeout, not {waited:?}"
    );
    assert!(waited < Duration::from_secs(5));
    let body = resp.json();
    assert_eq!(body["messages"], serde_json::json!([]));
    assert_eq!(body["cursor"], cursor.as_str());
    // A never-used mailbox also times out with a cursor to wait from.
    let empty = gw.get("/mailbox/never-used").json();
    assert_eq!(empty["messages"], serde_json::json!([]));
    assert!(empty["cursor"].as_str().unwrap().ends_with("-0000000000"));
}

#[test]
fn cursor_older_than_history_says_missed() {
    let gw = Gateway::start("mailbox.max-messages = 3");
    gw.publish("m", b"1");
    let first = gw.get("/mailbox/m").json();
    let cursor = first["cursor"].as_str().unwrap().to_string();
    for i in 2..=6 {
        gw.publish("m", i.to_string().as_bytes());
    }
    let body = gw.get(&format!("/mailbox/m?since={cursor}")).json();
    assert_eq!(body["missed"], true);
    let data: Vec<_> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(data, vec!["4", "5", "6"]);
    // A cursor of another store incarnation (a restart) is missed too.
    let foreign = "1.1-0000000001";
    let body = gw.get(&format!("/mailbox/m?since={foreign}")).json();
    assert_eq!(body["missed"], true);
    assert_eq!(body["messages"].as_array().unwrap().len(), 3);
}

#[test]
fn message_ttl_expiry_shows_as_missed() {
    let gw = Gateway::start("mailbox.message-ttl = 1\nmailbox.poll-timeout = 1");
    // An empty poll gives a cursor from before the message.
    let before = gw.get("/mailbox/ttl").json();
    let cursor = before["cursor"].as_str().unwrap().to_string();
    gw.publish("ttl", b"old");
    std::thread::sleep(Duration::from_millis(2200));
    let body = gw.get(&format!("/mailbox/ttl?since={cursor}")).json();
    assert_eq!(body["missed"], true, "the message expired unread");
    assert_eq!(body["messages"], serde_json::json!([]));
}

#[test]
fn payloads_arrive_byte_exact() {
    let gw = Gateway::start("");
    let big: Vec<u8> = (0..200 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    let cases: Vec<Vec<u8>> = vec![
        "héllo wörld ✓ 日本".as_bytes().to_vec(),
        b"line1\nline2\r\nline3\r".to_vec(),
        br#"quotes " and \ backslash and </script>"#.to_vec(),
        big,
        vec![],
        b"\x00nul\x00".to_vec(),
    ];
    for (i, payload) in cases.iter().enumerate() {
        let mailbox = format!("exact{i}");
        gw.publish(&mailbox, payload);
        let body = gw.get(&format!("/mailbox/{mailbox}")).json();
        let m = &body["messages"][0];
        assert!(m.get("encoding").is_none());
        assert_eq!(
            m["data"].as_str().unwrap().as_bytes(),
            payload.as_slice(),
            "case {i}"
        );
    }
    let binary = vec![0xff, 0xfe, 0x00, 0x80, b'a'];
    gw.publish("binary", &binary);
    let body = gw.get("/mailbox/binary").json();
    let m = &body["messages"][0];
    assert_eq!(m["encoding"], "base64");
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(m["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(decoded, binary);
}

#[test]
fn thousand_concurrent_waiting_polls_are_all_answered() {
    let gw = Gateway::start("server.max-connections = 5000");
    let mut clients = Vec::new();
    for _ in 0..1000 {
        let mut s = gw.connect();
        s.write_all(b"GET /mailbox/crowd HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        clients.push(s);
    }
    gw.wait_subscribers("crowd", 1000);
    assert_eq!(gw.publish("crowd", b"everyone"), 1000);
    for s in clients {
        let body = read_response(&mut BufReader::new(s)).unwrap().json();
        assert_eq!(body["messages"][0]["data"], "everyone");
    }
}

#[test]
fn disconnected_waiter_is_cleaned_up_at_once() {
    let gw = Gateway::start("");
    let mut s = gw.connect();
    s.write_all(b"GET /mailbox/gone HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    gw.wait_subscribers("gone", 1);
    drop(s);
    gw.wait_subscribers("gone", 0);
    assert_eq!(gw.publish("gone", b"x"), 0);
}

#[test]
fn head_and_keep_alive_pipelining() {
    let gw = Gateway::start("");
    gw.publish("p", b"one");
    let s = gw.connect();
    let mut writer = s.try_clone().unwrap();
    let mut reader = BufReader::new(s);
    // Three pipelined requests in one write, answered in order.
    writer
        .write_all(
            b"GET /mailbox/p HTTP/1.1\r\nHost: t\r\n\r\n\
              HEAD /mailbox/p HTTP/1.1\r\nHost: t\r\n\r\n\
              GET /nope HTTP/1.1\r\nHost: t\r\n\r\n",
        )
        .unwrap();
    let first = read_response(&mut reader).unwrap();
    assert_eq!(first.json()["messages"][0]["data"], "one");
    let head = read_head_response(&mut reader).unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("application/json"));
    let len: usize = head.header("content-length").unwrap().parse().unwrap();
    assert_eq!(len, first.body.len(), "HEAD announces the GET's length");
    let missing = read_response(&mut reader).unwrap();
    assert_eq!(missing.status, 404);
    // The connection is still usable.
    writer
        .write_all(b"GET /mailbox/p HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let last = read_response(&mut reader).unwrap();
    assert_eq!(last.status, 200);
    assert_eq!(last.header("connection"), Some("close"));
}

#[test]
fn redis_cli_publishes() {
    let gw = Gateway::start("");
    let out = std::process::Command::new("redis-cli")
        .arg("-s")
        .arg(&gw.socket)
        .args(["PUBLISH", "alice", r#"{"text":"hi"}"#])
        .output()
        .expect("redis-cli must be installed (Debian package redis-tools; tests/run-all.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
    let body = gw.get("/mailbox/alice").json();
    assert_eq!(body["messages"][0]["data"], r#"{"text":"hi"}"#);
}
