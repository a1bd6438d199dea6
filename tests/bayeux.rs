//! Bayeux at the wire: handshake, subscribe, held connects, cursors kept in
//! the session between connects, the transports' framings, tokens and
//! limits, over real sockets against the real binary. The npm clients
//! themselves are driven by tests/node/bayeux.test.mjs.

mod common;

use common::*;
use serde_json::{Value, json};
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn post_to(gw: &Gateway, path: &str, body: &Value) -> Response {
    let body = body.to_string();
    gw.request(&format!(
        "POST /bayeux{path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}

/// POSTs a batch and returns the reply array.
fn post(gw: &Gateway, body: Value) -> Vec<Value> {
    let resp = post_to(gw, "", &body);
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

fn connect_msg(client: &str, id: &str) -> Value {
    json!([{"channel": "/meta/connect", "clientId": client, "connectionType": "long-polling", "id": id}])
}

/// A connect, held until mail or the poll timeout: the reply first, then
/// the deliveries' data.
fn connect(gw: &Gateway, client: &str) -> (Value, Vec<Value>) {
    let mut replies = post(gw, connect_msg(client, "c"));
    let reply = replies.remove(0);
    assert_eq!(reply["channel"], "/meta/connect");
    (reply, replies)
}

fn data(deliveries: &[Value]) -> Vec<Value> {
    deliveries.iter().map(|d| d["data"].clone()).collect()
}

#[test]
fn nothing_published_between_connects_is_lost_or_repeated() {
    let gw = Gateway::start("mailbox.poll-timeout = 2");
    let client = handshake(&gw);
    assert_eq!(subscribe(&gw, &client, "/chat/room42")["successful"], true);
    // Published while no connect is held: kept for the next one.
    gw.publish("chat/room42", br#"{"n":1}"#);
    gw.publish("chat/room42", b"two");
    let (reply, got) = connect(&gw, &client);
    assert_eq!(reply["successful"], true);
    assert_eq!(reply["id"], "c");
    assert_eq!(data(&got), [json!({"n": 1}), json!("two")]);
    assert!(got[0]["id"].as_str().unwrap().ends_with("-0000000001"));
    // A held connect wakes on a publish, and carries only the new message.
    let waiter = std::thread::spawn({
        let addr = gw.addr;
        let client = client.clone();
        move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            let body = connect_msg(&client, "c2").to_string();
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
    gw.wait_subscribers("chat/room42", 1);
    gw.publish("chat/room42", b"3");
    let (resp, waited) = waiter.join().unwrap();
    assert!(waited < Duration::from_secs(1), "woken, not timed out");
    let replies = resp.json();
    assert_eq!(data(&replies.as_array().unwrap()[1..]), [json!(3)]);
    // Nothing new: the next connect times out empty.
    let (_, got) = connect(&gw, &client);
    assert!(got.is_empty(), "{got:?}");
    // The same mailbox, read with the plain long-poll of another transport.
    let plain = gw.get("/mailbox/chat/room42");
    assert_eq!(plain.json()["messages"].as_array().unwrap().len(), 3);
}

#[test]
fn a_subscribe_on_another_connection_wakes_the_held_connect() {
    let gw = Gateway::start("mailbox.poll-timeout = 20");
    let client = handshake(&gw);
    let waiter = std::thread::spawn({
        let addr = gw.addr;
        let client = client.clone();
        move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            let body = connect_msg(&client, "held").to_string();
            write!(
                s,
                "POST /bayeux HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            let t0 = Instant::now();
            let resp = read_response(&mut BufReader::new(s)).unwrap();
            (resp, t0.elapsed())
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(subscribe(&gw, &client, "/later")["successful"], true);
    let (resp, waited) = waiter.join().unwrap();
    assert!(waited < Duration::from_secs(5), "answered at {waited:?}");
    assert_eq!(resp.json()[0]["successful"], true);
    gw.publish("later", b"x");
    let (_, got) = connect(&gw, &client);
    assert_eq!(data(&got), [json!("x")]);
}

#[test]
fn a_cursor_that_fell_out_of_history_is_told_by_a_missed_marker() {
    let gw = Gateway::start("mailbox.max-messages = 2\nmailbox.poll-timeout = 2");
    let client = handshake(&gw);
    subscribe(&gw, &client, "/busy");
    for i in 0..5 {
        gw.publish("busy", format!("{i}").as_bytes());
    }
    let (_, got) = connect(&gw, &client);
    let missed: Vec<&Value> = got
        .iter()
        .filter(|m| m["ext"]["cometbox"]["missed"] == true)
        .collect();
    assert_eq!(missed.len(), 1, "{got:?}");
    assert_eq!(missed[0]["channel"], "/busy");
    let delivered: Vec<Value> = got
        .iter()
        .filter(|m| m.get("ext").is_none())
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(delivered, [json!(3), json!(4)]);
}

#[test]
fn callback_polling_chunked_and_form_posts_carry_the_same_messages() {
    let gw = Gateway::start("mailbox.cors-origins = ( \"https://app.example\" )");
    let message = json!([{"channel": "/meta/handshake", "version": "1.0",
                          "supportedConnectionTypes": ["callback-polling"], "id": "j"}]);
    let query: String = message
        .to_string()
        .bytes()
        .map(|b| format!("%{b:02X}"))
        .collect();
    let resp = gw.get(&format!("/bayeux?jsonp=__jsonp1__&message={query}"));
    assert_eq!(resp.status, 200);
    assert!(
        resp.header("content-type")
            .unwrap()
            .starts_with("application/javascript")
    );
    let text = resp.text();
    let inner = text
        .strip_prefix("/**/__jsonp1__(")
        .and_then(|t| t.strip_suffix(");"))
        .unwrap_or_else(|| panic!("{text}"));
    let v: Value = serde_json::from_str(inner).unwrap();
    assert_eq!(v[0]["successful"], true);
    assert_eq!(gw.get("/bayeux?jsonp=alert(1)&message=%5B%5D").status, 400);
    // Node's http client sends the body chunked (the CometD Node client does).
    let body = message.to_string();
    let (a, b) = body.split_at(10);
    let resp = gw.request(&format!(
        "POST /bayeux/handshake HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    ));
    assert_eq!(resp.json()[0]["successful"], true);
    // faye's cross-origin-long-polling: a form post with message=, CORS.
    let form = format!("message={query}");
    let resp = gw.request(&format!(
        "POST /bayeux HTTP/1.1\r\nHost: t\r\nConnection: close\r\nOrigin: https://app.example\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    ));
    assert_eq!(resp.json()[0]["successful"], true);
    assert_eq!(
        resp.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let preflight = gw.request(
        "OPTIONS /bayeux HTTP/1.1\r\nHost: t\r\nConnection: close\r\nOrigin: https://app.example\r\nAccess-Control-Request-Method: POST\r\n\r\n",
    );
    assert_eq!(preflight.status, 204);
    assert!(
        preflight
            .header("access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
}

#[test]
fn bad_input_is_a_bayeux_error_or_a_400_and_the_gateway_serves_on() {
    let gw = Gateway::start("");
    let client = handshake(&gw);
    let replies = post(
        &gw,
        json!([
            {"id": "1"},
            {"channel": "/a//b", "id": "2"},
            {"channel": "/meta/nope", "id": "3"},
            {"channel": "/meta/subscribe", "clientId": client, "subscription": "/a/*/b", "id": "4"},
            {"channel": "/meta/subscribe", "clientId": client, "subscription": "/meta/x", "id": "5"},
            {"channel": "/x", "clientId": client, "data": 1, "id": "6"},
            {"channel": "/meta/subscribe", "clientId": "stale", "subscription": "/a", "id": "7"},
        ]),
    );
    let by_id = |id: &str| replies.iter().find(|r| r["id"] == id).unwrap().clone();
    assert_eq!(by_id("1")["error"], "400::channel_missing");
    assert_eq!(by_id("2")["error"], "405::channel_invalid");
    assert_eq!(by_id("3")["error"], "400::unknown meta channel");
    assert_eq!(by_id("4")["error"], "405::channel_invalid");
    assert_eq!(by_id("5")["error"], "403::subscription_invalid");
    assert_eq!(by_id("6")["error"], "403::publish not allowed");
    assert!(by_id("6").get("data").is_none(), "acks carry no data");
    assert_eq!(by_id("7")["advice"]["reconnect"], "handshake");
    for body in ["{", "[1]", "null", "[]"] {
        let resp = gw.request(&format!(
            "POST /bayeux HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
        assert_eq!(resp.status, 400, "{body}");
    }
    // A bad upgrade is refused before any 101.
    let ws = gw.get_with(
        "/bayeux",
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    );
    assert_eq!(ws.status, 426);
    assert_eq!(handshake(&gw).len(), 32, "still serving");
}

#[test]
fn sessions_and_subscriptions_are_bounded() {
    let gw = Gateway::start("bayeux.max-sessions = 2\nbayeux.max-subscriptions = 2");
    let client = handshake(&gw);
    handshake(&gw);
    let refused = post(
        &gw,
        json!([{"channel": "/meta/handshake", "version": "1.0",
                "supportedConnectionTypes": ["long-polling"]}]),
    );
    assert_eq!(refused[0]["successful"], false);
    assert_eq!(refused[0]["error"], "503::too many sessions");
    assert_eq!(subscribe(&gw, &client, "/a")["successful"], true);
    assert_eq!(subscribe(&gw, &client, "/b/**")["successful"], true);
    let third = subscribe(&gw, &client, "/c");
    assert_eq!(third["successful"], false);
    assert!(third["error"].as_str().unwrap().starts_with("403::"));
    // A disconnect frees the session.
    post(
        &gw,
        json!([{"channel": "/meta/disconnect", "clientId": client}]),
    );
    handshake(&gw);
}

#[test]
fn the_path_is_configurable_and_off_when_empty() {
    let gw = Gateway::start("bayeux.path = \"\"");
    assert_eq!(post_to(&gw, "", &json!([])).status, 404);
    let gw = Gateway::start("bayeux.path = \"/cometd\"");
    let resp = gw.request(
        "POST /cometd/handshake HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()[0]["successful"], false);
}

// ----- Bayeux over WebSocket ---------------------------------------------------

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

    /// The next text frame's JSON (pings skipped).
    fn next(&mut self) -> Value {
        loop {
            let mut h = [0u8; 2];
            self.r.read_exact(&mut h).unwrap();
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
            if h[0] & 0x0f == 1 {
                return serde_json::from_slice(&payload).unwrap();
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
fn a_websocket_session_pushes_deliveries_and_paces_connects_by_the_heartbeat() {
    let gw = Gateway::start("mailbox.heartbeat = 1\nmailbox.poll-timeout = 3");
    let mut ws = Ws::open(&gw);
    ws.send(&json!([{"channel": "/meta/handshake", "version": "1.0",
                     "supportedConnectionTypes": ["websocket"], "id": "1"}]));
    let hs = ws.next();
    assert_eq!(hs[0]["successful"], true);
    assert!(
        hs[0]["supportedConnectionTypes"]
            .as_array()
            .unwrap()
            .contains(&json!("websocket"))
    );
    let client = hs[0]["clientId"].as_str().unwrap().to_string();
    // Several messages in one frame; the first connect is answered at once.
    ws.send(&json!([
        {"channel": "/meta/subscribe", "clientId": client, "subscription": "/ws/room", "id": "2"},
        {"channel": "/meta/subscribe", "clientId": client, "subscription": "/ws/wild/**", "id": "3"},
        {"channel": "/meta/connect", "clientId": client, "connectionType": "websocket",
         "advice": {"timeout": 0}, "id": "4"},
    ]));
    let replies = ws.next();
    let ids: Vec<&str> = replies
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["2", "3", "4"]);
    // The next connect waits; deliveries do not.
    ws.send(&json!([{"channel": "/meta/connect", "clientId": client,
                     "connectionType": "websocket", "id": "5"}]));
    let t0 = Instant::now();
    gw.publish("ws/room", br#"{"n":1}"#);
    gw.publish("ws/wild/a/b", b"deep");
    let mut deliveries = Vec::new();
    let mut connect_at = None;
    while deliveries.len() < 2 || connect_at.is_none() {
        for m in ws.next().as_array().unwrap() {
            if m["channel"] == "/meta/connect" {
                assert_eq!(m["id"], "5");
                connect_at = Some(t0.elapsed());
            } else {
                deliveries.push((m["channel"].clone(), m["data"].clone()));
            }
        }
    }
    assert_eq!(
        deliveries,
        [
            (json!("/ws/room"), json!({"n": 1})),
            (json!("/ws/wild/a/b"), json!("deep"))
        ]
    );
    assert!(
        connect_at.unwrap() <= Duration::from_secs(3),
        "{connect_at:?}"
    );
    // The socket goes away; the session keeps its cursors, so a long-poll
    // connect with the same clientId repeats nothing and gets what is new.
    drop(ws);
    std::thread::sleep(Duration::from_millis(200));
    gw.publish("ws/room", b"after");
    let (reply, got) = connect(&gw, &client);
    assert_eq!(reply["successful"], true);
    assert_eq!(data(&got), [json!("after")]);
}

// ----- tokens ----------------------------------------------------------------

const SECRET: &str = "this-is-a-test-secret-of-32-bytes-or-more";

fn token(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn auth_gateway(extra: &str) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("jwt.secret");
    std::fs::write(&secret, SECRET).unwrap();
    let config = dir.path().join("gateway.conf");
    std::fs::write(
        &config,
        format!(
            "{}auth.required = \"enable\"\nauth.jwt-secret-file = \"{}\"\n{extra}\n",
            base_config(dir.path()),
            secret.display()
        ),
    )
    .unwrap();
    Gateway::start_with(dir, config).unwrap()
}

#[test]
fn tokens_in_ext_grant_subscriptions_and_the_publish_claim_grants_publishing() {
    let gw = auth_gateway("bayeux.client-publish = \"enable\"\nmailbox.poll-timeout = 2");
    let exp = unix_now() + 600;
    let grant = token(json!({"exp": exp, "mailboxes": ["room/*"], "publish": ["room/out"]}));
    // The handshake's ext.token is kept for the session's subscribes.
    let replies = post(
        &gw,
        json!([{"channel": "/meta/handshake", "version": "1.0",
                "supportedConnectionTypes": ["long-polling"], "ext": {"token": grant}}]),
    );
    let client = replies[0]["clientId"].as_str().unwrap().to_string();
    assert_eq!(subscribe(&gw, &client, "/room/a")["successful"], true);
    assert_eq!(subscribe(&gw, &client, "/room/**")["successful"], true);
    let refused = subscribe(&gw, &client, "/other");
    assert_eq!(refused["successful"], false);
    assert_eq!(refused["error"], "403::mailbox not granted");
    assert_eq!(
        subscribe(&gw, &client, "/**")["error"],
        "403::mailbox not granted"
    );
    // Without any token: told why.
    let anonymous = handshake(&gw);
    assert_eq!(
        subscribe(&gw, &anonymous, "/room/a")["error"],
        "401::token required"
    );
    // A subscribe's own ext.token works too.
    let replies = post(
        &gw,
        json!([{"channel": "/meta/subscribe", "clientId": anonymous, "subscription": "/room/b",
                "ext": {"token": grant}}]),
    );
    assert_eq!(replies[0]["successful"], true);
    // Publishing: only where the publish claim says.
    let replies = post(
        &gw,
        json!([
            {"channel": "/room/out", "clientId": client, "data": {"ok": true}, "id": "p1"},
            {"channel": "/room/a", "clientId": client, "data": 1, "id": "p2"},
        ]),
    );
    let by_id = |id: &str| replies.iter().find(|r| r["id"] == id).unwrap().clone();
    assert_eq!(by_id("p1")["successful"], true);
    assert_eq!(by_id("p2")["error"], "403::publish not granted");
    // The client's own publish reaches it under its /room/** subscription.
    let (_, got) = connect(&gw, &client);
    assert_eq!(data(&got), [json!({"ok": true})]);
}
