//! `POST /mailbox/{name}` with `mailbox.upstream`: the body reaches
//! backends on `__cometbox:upstream` like a WebSocket text frame; 405 when
//! off, 413 over mailbox.max-message-size, 401/403 without a `publish`
//! grant when auth is on, and the CORS preflight allows POST.

mod common;

use common::*;
use jsonwebtoken::{EncodingKey, Header, encode};
use std::time::{SystemTime, UNIX_EPOCH};

const SECRET: &str = "this-is-a-test-secret-of-32-bytes-or-more";

fn token(claims: serde_json::Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn exp() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600
}

fn with_auth(extra: &str) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("jwt.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let config = dir.path().join("gateway.conf");
    std::fs::write(
        &config,
        format!(
            "{}auth.required = \"enable\"\nauth.jwt-secret-file = \"{}\"\nauth.cookie = \"cbt\"\n{extra}\n",
            base_config(dir.path()),
            secret.display()
        ),
    )
    .unwrap();
    Gateway::start_with(dir, config).unwrap()
}

fn post(gw: &Gateway, target: &str, headers: &str, body: &str) -> Response {
    gw.request(&format!(
        "POST {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}

/// The next push on a subscribed backend connection: its payload's JSON.
fn next_event(b: &mut Resp) -> serde_json::Value {
    loop {
        let Reply::Array(items) = b.read() else {
            continue;
        };
        if items[0].bulk_text() == "message" {
            let Reply::Bulk(Some(p)) = &items[2] else {
                panic!("payload {:?}", items[2]);
            };
            return serde_json::from_slice(p).unwrap();
        }
    }
}

#[test]
fn a_posted_body_reaches_upstream_subscribers_and_is_answered_204() {
    let gw = Gateway::start("mailbox.upstream = \"enable\"\nmailbox.max-message-size = 32");
    let mut b = gw.backend();
    b.call(&[b"SUBSCRIBE", b"__cometbox:upstream"]);
    let resp = post(
        &gw,
        "/mailbox/chat/room1",
        "Content-Type: text/plain\r\n",
        "hi there",
    );
    assert_eq!(resp.status, 204, "{}", resp.text());
    assert_eq!(
        next_event(&mut b),
        serde_json::json!({"mailbox": "chat/room1", "subject": null, "data": "hi there"})
    );
    // Chunked, as fetch() with a stream or Node's http client sends.
    let resp = gw.request(
        "POST /mailbox/chat:2 HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n3\r\n\":1\r\n1\r\n}\r\n0\r\n\r\n",
    );
    assert_eq!(resp.status, 204);
    assert_eq!(
        next_event(&mut b)["data"],
        "{\"a\":1}",
        "the body is data, as text"
    );

    let resp = post(&gw, "/mailbox/chat:1", "", &"x".repeat(33));
    assert_eq!(resp.status, 413, "over mailbox.max-message-size");
    assert!(resp.text().contains("max-message-size"), "{}", resp.text());
    assert_eq!(
        post(&gw, "/mailbox/a,b", "", "x").status,
        400,
        "one mailbox"
    );
    // Another method: the 405 names POST among those a mailbox takes.
    let resp = gw.request(
        "PUT /mailbox/chat:1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(resp.status, 405);
    assert_eq!(resp.header("allow"), Some("GET, HEAD, POST, OPTIONS"));
    // The preflight a cross-origin fetch() with a JSON body makes.
    let gw = Gateway::start(
        "mailbox.upstream = \"enable\"\nmailbox.cors-origins = ( \"https://app.example\" )",
    );
    let resp = gw.request(
        "OPTIONS /mailbox/chat:1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\nOrigin: https://app.example\r\n\
         Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\n\r\n",
    );
    assert_eq!(resp.status, 204);
    assert_eq!(
        resp.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert!(
        resp.header("access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
    let resp = post(
        &gw,
        "/mailbox/chat:1",
        "Origin: https://app.example\r\n",
        "x",
    );
    assert_eq!(resp.status, 204);
    assert_eq!(
        resp.header("access-control-allow-origin"),
        Some("https://app.example")
    );
}

#[test]
fn post_is_405_when_upstream_is_off() {
    let gw = Gateway::start("");
    let mut b = gw.backend();
    b.call(&[b"SUBSCRIBE", b"__cometbox:upstream"]);
    let resp = post(&gw, "/mailbox/chat:1", "", "hello");
    assert_eq!(resp.status, 405);
    assert!(resp.text().contains("mailbox.upstream"), "{}", resp.text());
    assert_eq!(resp.header("allow"), Some("GET, HEAD, OPTIONS"));
    // The gateway serves on, and the preflight does not offer POST.
    let gw2 = Gateway::start("mailbox.cors-origins = ( \"https://app.example\" )");
    let resp = gw2.request(
        "OPTIONS /mailbox/chat:1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\nOrigin: https://app.example\r\n\r\n",
    );
    assert!(
        !resp
            .header("access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
    assert_eq!(gw.publish("chat:1", b"x"), 0);
}

#[test]
fn with_auth_only_mailboxes_the_publish_claim_grants() {
    let gw = with_auth("mailbox.upstream = \"enable\"");
    let mut b = gw.backend();
    b.call(&[b"SUBSCRIBE", b"__cometbox:upstream"]);
    let reader = token(serde_json::json!({"exp": exp(), "mailboxes": ["room:*"], "sub": "bob"}));
    let writer = token(serde_json::json!({
        "exp": exp(), "mailboxes": ["room:*"], "publish": ["room:1"], "sub": "alice"
    }));
    let bearer = |t: &str| format!("Authorization: Bearer {t}\r\n");
    assert_eq!(post(&gw, "/mailbox/room:1", "", "x").status, 401);
    let resp = post(&gw, "/mailbox/room:1", &bearer(&reader), "x");
    assert_eq!(resp.status, 403, "reading is not publishing");
    let resp = post(&gw, "/mailbox/room:2", &bearer(&writer), "x");
    assert_eq!(resp.status, 403, "room:2 is not in publish");
    // A cookie alone, from a page of another site: refused (a form on any
    // site would carry it).
    let resp = post(
        &gw,
        "/mailbox/room:1",
        &format!("Cookie: cbt={writer}\r\nOrigin: https://evil.example\r\n"),
        "x",
    );
    assert_eq!(resp.status, 403);
    let resp = post(&gw, "/mailbox/room:1", &bearer(&writer), "from alice");
    assert_eq!(resp.status, 204, "{}", resp.text());
    assert_eq!(
        next_event(&mut b),
        serde_json::json!({"mailbox": "room:1", "subject": "alice", "data": "from alice"})
    );
    let resp = post(
        &gw,
        &format!("/mailbox/room:1?token={writer}"),
        "",
        "by query",
    );
    assert_eq!(resp.status, 204);
    assert_eq!(next_event(&mut b)["data"], "by query");
}
