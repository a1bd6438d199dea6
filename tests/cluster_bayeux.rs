//! Bayeux in cluster mode (`cluster.redis`, docs/cluster.md): a client
//! pinned to node A receives what backends PUBLISH on node B, with its
//! cursors kept across connects; client publishes go through Redis to every
//! node; wildcards find mailboxes published on other nodes; a session lives
//! on its node only. Two real gateway processes and a real redis-server.

mod common;

use common::redis::Redis;
use common::*;
use serde_json::{Value, json};
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn nodes(redis: &Redis, extra: &str) -> (Gateway, Gateway) {
    (
        Gateway::start(&redis.config(extra)),
        Gateway::start(&redis.config(extra)),
    )
}

/// POSTs a batch and returns the reply array.
fn post(gw: &Gateway, body: Value) -> Vec<Value> {
    let body = body.to_string();
    let resp = gw.request(&format!(
        "POST /bayeux HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json().as_array().expect("a JSON array").clone()
}

fn handshake(gw: &Gateway) -> String {
    let replies = post(
        gw,
        json!([{"channel": "/meta/handshake", "version": "1.0",
                "supportedConnectionTypes": ["long-polling"], "id": "h"}]),
    );
    assert_eq!(replies[0]["successful"], true, "{replies:?}");
    replies[0]["clientId"].as_str().unwrap().to_string()
}

fn subscribe(gw: &Gateway, client: &str, channel: &str) -> Value {
    post(
        gw,
        json!([{"channel": "/meta/subscribe", "clientId": client, "subscription": channel, "id": "s"}]),
    )
    .remove(0)
}

/// A connect (held until mail or the poll timeout, or answered at once
/// with `now`): its reply, then the deliveries.
fn connect(gw: &Gateway, client: &str, now: bool) -> (Value, Vec<Value>) {
    let mut message = json!({"channel": "/meta/connect", "clientId": client,
                             "connectionType": "long-polling", "id": "c"});
    if now {
        message["advice"] = json!({"timeout": 0});
    }
    let mut replies = post(gw, json!([message]));
    let reply = replies.remove(0);
    assert_eq!(reply["channel"], "/meta/connect", "{reply}");
    (reply, replies)
}

/// Connects until `n` deliveries came (a node hears another node's publish
/// a pub/sub hop after it was stored).
fn collect(gw: &Gateway, client: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut all = Vec::new();
    while all.len() < n {
        assert!(Instant::now() < deadline, "only {all:?} came");
        let (reply, got) = connect(gw, client, false);
        assert_eq!(reply["successful"], true, "{reply}");
        all.extend(got);
    }
    all
}

fn data(deliveries: &[Value]) -> Vec<Value> {
    deliveries.iter().map(|d| d["data"].clone()).collect()
}

#[test]
fn a_publish_on_node_b_reaches_a_bayeux_client_on_node_a_and_history_does_not() {
    let redis = Redis::start();
    let (a, b) = nodes(&redis, "mailbox.poll-timeout = 5");
    // Published before the subscription: not the subscriber's.
    b.publish("chat/room1", b"old");
    let client = handshake(&a);
    let reply = subscribe(&a, &client, "/chat/room1");
    assert_eq!(reply["successful"], true, "{reply}");
    assert_eq!(reply["subscription"], "/chat/room1");
    // Published right after the subscribe's reply, on the other node: the
    // subscription already stands where the mailbox stood in Redis.
    b.publish("chat/room1", br#"{"n":1}"#);
    let got = collect(&a, &client, 1);
    assert_eq!(data(&got), [json!({"n": 1})]);
    assert_eq!(got[0]["channel"], "/chat/room1");
    assert!(
        got[0]["id"].as_str().unwrap().ends_with("-0000000002"),
        "{got:?}"
    );
    // A held connect on A wakes on a publish on B.
    let waiter = std::thread::spawn({
        let addr = a.addr;
        let client = client.clone();
        move || {
            let mut s = TcpStream::connect(addr).unwrap();
            let body = json!([{"channel": "/meta/connect", "clientId": client,
                               "connectionType": "long-polling", "id": "held"}])
            .to_string();
            write!(
                s,
                "POST /bayeux/connect HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            let t0 = Instant::now();
            (read_response(&mut BufReader::new(s)).unwrap(), t0.elapsed())
        }
    });
    a.wait_subscribers("chat/room1", 1);
    b.publish("chat/room1", b"three");
    let (resp, waited) = waiter.join().unwrap();
    assert!(waited < Duration::from_secs(4), "woken, not timed out");
    let replies = resp.json();
    let replies = replies.as_array().unwrap();
    assert_eq!(replies[0]["id"], "held");
    assert_eq!(data(&replies[1..]), [json!("three")]);
    // Nothing repeated.
    let (_, got) = connect(&a, &client, true);
    assert!(got.is_empty(), "{got:?}");
}

#[test]
fn a_burst_of_20_from_another_node_arrives_once_in_order_across_connects() {
    let redis = Redis::start();
    let (a, b) = nodes(&redis, "mailbox.poll-timeout = 5");
    let client = handshake(&a);
    assert_eq!(subscribe(&a, &client, "/burst")["successful"], true);
    let mut backend = b.backend();
    for i in 1..=10 {
        backend.send(&[b"PUBLISH", b"burst", i.to_string().as_bytes()]);
    }
    for _ in 1..=10 {
        assert!(matches!(backend.read(), Reply::Int(_)));
    }
    // Some arrive in the first connects, the rest after more publishes.
    let mut got = collect(&a, &client, 1);
    for i in 11..=20 {
        backend.send(&[b"PUBLISH", b"burst", i.to_string().as_bytes()]);
    }
    for _ in 11..=20 {
        assert!(matches!(backend.read(), Reply::Int(_)));
    }
    let more = 20 - got.len();
    got.extend(collect(&a, &client, more));
    let expected: Vec<Value> = (1..=20).map(|i| json!(i)).collect();
    assert_eq!(data(&got), expected);
    std::thread::sleep(Duration::from_millis(300));
    let (_, extra) = connect(&a, &client, true);
    assert!(extra.is_empty(), "repeated: {extra:?}");
}

#[test]
fn client_publish_goes_through_redis_to_every_node_and_refusals_say_why() {
    let redis = Redis::start();
    let (a, b) = nodes(
        &redis,
        "bayeux.client-publish = \"enable\"\nmailbox.max-message-size = 64\nmailbox.poll-timeout = 5",
    );
    let reader = handshake(&a);
    assert_eq!(subscribe(&a, &reader, "/room/7")["successful"], true);
    let writer = handshake(&b);
    let replies = post(
        &b,
        json!([{"channel": "/room/7", "clientId": writer, "data": {"text": "hi"}, "id": "p"}]),
    );
    assert_eq!(
        replies[0],
        json!({"channel": "/room/7", "successful": true, "id": "p"})
    );
    let got = collect(&a, &reader, 1);
    assert_eq!(data(&got), [json!({"text": "hi"})]);
    // Stored in the mailbox: a plain long-poll on either node reads it.
    for node in [&a, &b] {
        let plain = node.get("/mailbox/room/7");
        assert_eq!(plain.status, 200);
        assert_eq!(plain.json()["messages"][0]["data"], r#"{"text":"hi"}"#);
    }
    // Too large for mailbox.max-message-size: refused, nothing stored.
    let big = "x".repeat(100);
    let replies = post(
        &b,
        json!([{"channel": "/room/7", "clientId": writer, "data": big, "id": "big"}]),
    );
    assert_eq!(replies[0]["successful"], false);
    assert!(
        replies[0]["error"].as_str().unwrap().starts_with("413::"),
        "{replies:?}"
    );
    // With Redis gone, a publish is answered 503 within the store's timeout.
    drop(redis);
    let replies = post(
        &b,
        json!([{"channel": "/room/7", "clientId": writer, "data": 1, "id": "down"}]),
    );
    assert_eq!(replies[0]["successful"], false);
    assert!(
        replies[0]["error"].as_str().unwrap().starts_with("503::"),
        "{replies:?}"
    );
    // So is a subscription, whose position only Redis knows.
    let reply = subscribe(&b, &writer, "/room/8");
    assert_eq!(reply["successful"], false);
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .starts_with("503::cluster store unavailable"),
        "{reply}"
    );
}

#[test]
fn wildcards_find_mailboxes_first_published_on_another_node() {
    let redis = Redis::start();
    let (a, b) = nodes(&redis, "mailbox.poll-timeout = 5");
    let client = handshake(&a);
    assert_eq!(subscribe(&a, &client, "/news/*")["successful"], true);
    assert_eq!(subscribe(&a, &client, "/deep/**")["successful"], true);
    // Neither mailbox exists anywhere yet, and node A caches neither.
    b.publish("news/sport", b"goal");
    b.publish("deep/a/b/c", br#"[1,2]"#);
    b.publish("news/sport/extra", b"not one segment");
    let mut got = collect(&a, &client, 2);
    got.sort_by_key(|d| d["channel"].as_str().unwrap().to_string());
    assert_eq!(got[0]["channel"], "/deep/a/b/c");
    assert_eq!(got[0]["data"], json!([1, 2]));
    assert_eq!(got[1]["channel"], "/news/sport");
    assert_eq!(got[1]["data"], "goal");
    std::thread::sleep(Duration::from_millis(300));
    let (_, extra) = connect(&a, &client, true);
    assert!(extra.is_empty(), "{extra:?}");
}

#[test]
fn a_session_lives_on_its_node_and_another_node_asks_for_a_handshake() {
    let redis = Redis::start();
    let (a, b) = nodes(&redis, "mailbox.poll-timeout = 5");
    let client = handshake(&a);
    assert_eq!(subscribe(&a, &client, "/pinned")["successful"], true);
    let (reply, _) = connect(&b, &client, true);
    assert_eq!(reply["successful"], false);
    assert_eq!(reply["error"], "402::session_unknown");
    assert_eq!(reply["advice"]["reconnect"], "handshake");
    // On its own node it goes on as before.
    let (reply, _) = connect(&a, &client, true);
    assert_eq!(reply["successful"], true);
}

// ----- Bayeux over WebSocket -----------------------------------------------

struct Ws {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Ws {
    fn open(gw: &Gateway) -> Ws {
        let s = gw.connect();
        let mut w = s.try_clone().unwrap();
        write!(
            w,
            "GET /bayeux HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut r = BufReader::new(s);
        let (status, _) = read_head(&mut r).unwrap();
        assert_eq!(status, 101);
        Ws { r, w }
    }

    /// The messages of the next text frame (pings skipped).
    fn next(&mut self) -> Vec<Value> {
        loop {
            let mut h = [0u8; 2];
            self.r.read_exact(&mut h).unwrap();
            let mut len = (h[1] & 0x7f) as usize;
            if len == 126 {
                let mut b = [0u8; 2];
                self.r.read_exact(&mut b).unwrap();
                len = u16::from_be_bytes(b) as usize;
            }
            let mut payload = vec![0; len];
            self.r.read_exact(&mut payload).unwrap();
            if h[0] & 0x0f == 1 {
                let v: Value = serde_json::from_slice(&payload).unwrap();
                return v.as_array().unwrap().clone();
            }
        }
    }

    fn send(&mut self, message: &Value) {
        let payload = message.to_string().into_bytes();
        let mut f = vec![0x81];
        if payload.len() < 126 {
            f.push(0x80 | payload.len() as u8);
        } else {
            f.push(0x80 | 126);
            f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        let key = [7u8, 1, 9, 3];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        self.w.write_all(&f).unwrap();
    }
}

#[test]
fn a_bayeux_websocket_on_node_a_receives_publishes_from_node_b() {
    let redis = Redis::start();
    let (a, b) = nodes(&redis, "mailbox.heartbeat = 1\nmailbox.poll-timeout = 3");
    b.publish("ws/room", b"before");
    let mut ws = Ws::open(&a);
    ws.send(&json!([{"channel": "/meta/handshake", "version": "1.0",
                     "supportedConnectionTypes": ["websocket"], "id": "1"}]));
    let hs = ws.next();
    assert_eq!(hs[0]["successful"], true);
    let client = hs[0]["clientId"].as_str().unwrap().to_string();
    ws.send(&json!([
        {"channel": "/meta/subscribe", "clientId": client, "subscription": "/ws/room", "id": "2"},
        {"channel": "/meta/subscribe", "clientId": client, "subscription": "/ws/wild/**", "id": "3"},
        {"channel": "/meta/connect", "clientId": client, "connectionType": "websocket",
         "advice": {"timeout": 0}, "id": "4"},
    ]));
    // The connect is answered at once, the subscribes once Redis told
    // where the mailboxes stand: all three come, in whatever frames.
    let mut ids = Vec::new();
    while ids.len() < 3 {
        for m in ws.next() {
            assert_eq!(m["successful"], true, "{m}");
            ids.push(m["id"].as_str().unwrap().to_string());
        }
    }
    ids.sort();
    assert_eq!(ids, ["2", "3", "4"]);
    ws.send(&json!([{"channel": "/meta/connect", "clientId": client,
                     "connectionType": "websocket", "id": "5"}]));
    a.wait_subscribers("ws/room", 1);
    for i in 1..=20 {
        b.publish("ws/room", i.to_string().as_bytes());
    }
    b.publish("ws/wild/x/y", b"deep");
    let mut room = Vec::new();
    let mut wild = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while room.len() < 20 || wild.is_empty() {
        assert!(Instant::now() < deadline, "{room:?} {wild:?}");
        for m in ws.next() {
            match m["channel"].as_str().unwrap() {
                "/ws/room" => room.push(m["data"].clone()),
                "/ws/wild/x/y" => wild.push(m["data"].clone()),
                "/meta/connect" => {
                    // Answered at the heartbeat: connect again, as clients do.
                    ws.send(&json!([{"channel": "/meta/connect", "clientId": client,
                                     "connectionType": "websocket", "id": "6"}]));
                }
                other => panic!("{other}: {m}"),
            }
        }
    }
    let expected: Vec<Value> = (1..=20).map(|i| json!(i)).collect();
    assert_eq!(room, expected, "once each, in order, not the old one");
    assert_eq!(wild, [json!("deep")]);
}
