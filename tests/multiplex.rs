//! Many mailboxes on one connection: one SSE, one WebSocket and one
//! long-poll client each follow three mailboxes; every message arrives
//! exactly once, in order per mailbox, naming its mailbox; a DEL of one
//! mailbox is reported as `missed` for that mailbox alone.

mod common;

use common::*;
use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::Duration;

const BOXES: [&str; 3] = ["mx:a", "mx:b", "mx:c"];
const PATH: &str = "/mailbox/mx:a,mx:b,mx:c";

/// What a client saw: per mailbox, the data in order; and the mailboxes
/// reported missed.
#[derive(Default, Debug)]
struct Seen {
    data: HashMap<String, Vec<String>>,
    missed: Vec<String>,
    count: usize,
}

impl Seen {
    fn take(&mut self, v: &serde_json::Value) {
        let mailbox = v["mailbox"]
            .as_str()
            .expect("every message names its mailbox");
        if v["missed"] == true {
            self.missed.push(mailbox.to_string());
            return;
        }
        let data = v["data"].as_str().unwrap().to_string();
        self.data.entry(mailbox.to_string()).or_default().push(data);
        self.count += 1;
    }
}

fn sse_open(gw: &Gateway) -> BufReader<TcpStream> {
    let s = gw.connect();
    let mut w = s.try_clone().unwrap();
    write!(
        w,
        "GET {PATH} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let (status, _) = read_head(&mut r).unwrap();
    assert_eq!(status, 200);
    r
}

/// Reads SSE chunks until `done` holds.
fn sse_until(r: &mut BufReader<TcpStream>, seen: &mut Seen, done: impl Fn(&Seen) -> bool) {
    let mut pending = String::new();
    while !done(seen) {
        let chunk = read_chunk(r).unwrap().expect("the stream stays open");
        pending.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = pending.find("\n\n") {
            let block: String = pending.drain(..end + 2).collect();
            for line in block.lines() {
                if let Some(json) = line.strip_prefix("data: ") {
                    seen.take(&serde_json::from_str(json).unwrap());
                }
            }
        }
    }
}

fn ws_until(ws: &mut ws::Ws, seen: &mut Seen, done: impl Fn(&Seen) -> bool) {
    while !done(seen) {
        seen.take(&ws.json());
    }
}

/// A long-poll client in its own thread: polls, resumes with the cursor,
/// reports each answer.
fn long_poller(gw: &Gateway) -> mpsc::Receiver<serde_json::Value> {
    let (tx, rx) = mpsc::channel();
    let addr = gw.addr;
    std::thread::spawn(move || {
        let mut cursor: Option<String> = None;
        loop {
            let target = match &cursor {
                Some(c) => format!("{PATH}?since={c}"),
                None => PATH.to_string(),
            };
            let s = TcpStream::connect(addr).unwrap();
            let mut w = s.try_clone().unwrap();
            if write!(
                w,
                "GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            )
            .is_err()
            {
                return;
            }
            let Ok(resp) = read_response(&mut BufReader::new(s)) else {
                return;
            };
            let body = resp.json();
            cursor = Some(body["cursor"].as_str().unwrap().to_string());
            if tx.send(body).is_err() {
                return;
            }
        }
    });
    rx
}

fn poll_until(
    rx: &mpsc::Receiver<serde_json::Value>,
    seen: &mut Seen,
    done: impl Fn(&Seen) -> bool,
) {
    while !done(seen) {
        let body = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("a poll answer");
        for m in body["messages"].as_array().unwrap() {
            seen.take(m);
        }
        if let Some(missed) = body["missed"].as_array() {
            seen.missed
                .extend(missed.iter().map(|m| m.as_str().unwrap().to_string()));
        }
    }
}

#[test]
fn sse_websocket_and_long_poll_each_follow_three_mailboxes_exactly_once_with_per_mailbox_missed() {
    let gw = Gateway::start("mailbox.poll-timeout = 5");
    let mut sse = sse_open(&gw);
    let mut websocket = ws::connect(&gw, PATH);
    let polls = long_poller(&gw);
    for name in BOXES {
        gw.wait_subscribers(name, 3);
    }
    // Interleaved: a1 b1 c1 a2 …; the long-poller re-polls between answers,
    // and its cursor must carry it over every gap.
    for round in 1..=4 {
        for name in BOXES {
            let payload = format!("{}{round}", &name[3..]);
            gw.publish(name, payload.as_bytes());
        }
    }
    let twelve = |s: &Seen| s.count >= 12;
    let (mut a, mut b, mut c) = (Seen::default(), Seen::default(), Seen::default());
    sse_until(&mut sse, &mut a, twelve);
    ws_until(&mut websocket, &mut b, twelve);
    poll_until(&polls, &mut c, twelve);
    for (client, seen) in [("sse", &a), ("websocket", &b), ("long-poll", &c)] {
        assert_eq!(seen.count, 12, "{client}: {seen:?}");
        for name in BOXES {
            let want: Vec<String> = (1..=4).map(|r| format!("{}{r}", &name[3..])).collect();
            assert_eq!(
                seen.data[name], want,
                "{client}: {name} exactly once, in order"
            );
        }
        assert!(seen.missed.is_empty(), "{client}: nothing missed yet");
    }

    // DEL starts a new incarnation of mx:b: every cursor into the old one
    // has missed something; mx:a and mx:c are untouched.
    let mut backend = gw.backend();
    assert_eq!(backend.call(&[b"DEL", b"mx:b"]), Reply::Int(1));
    gw.publish("mx:b", b"b5");
    gw.publish("mx:c", b"c5");
    let fourteen = |s: &Seen| s.count >= 14 && !s.missed.is_empty();
    sse_until(&mut sse, &mut a, fourteen);
    ws_until(&mut websocket, &mut b, fourteen);
    poll_until(&polls, &mut c, fourteen);
    for (client, seen) in [("sse", &a), ("websocket", &b), ("long-poll", &c)] {
        assert_eq!(seen.missed, ["mx:b"], "{client}: missed names the mailbox");
        assert_eq!(seen.data["mx:b"].last().unwrap(), "b5", "{client}");
        assert_eq!(seen.data["mx:c"].last().unwrap(), "c5", "{client}");
        assert_eq!(seen.count, 14, "{client}: still exactly once: {seen:?}");
    }
}
