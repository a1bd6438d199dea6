//! Backends in pub/sub mode: presence (join/leave) on `__cometbox:events`,
//! browsers' WebSocket messages on `__cometbox:upstream`.

mod common;

use common::*;
use std::io::Write;

/// The next `message`/`pmessage` push: (kind, channel, payload JSON).
fn next_event(b: &mut Resp) -> (String, String, serde_json::Value) {
    loop {
        let Reply::Array(items) = b.read() else {
            continue;
        };
        let kind = items[0].bulk_text();
        let n = items.len();
        if kind == "message" || kind == "pmessage" {
            let payload = match &items[n - 1] {
                Reply::Bulk(Some(p)) => serde_json::from_slice(p).unwrap(),
                other => panic!("payload {other:?}"),
            };
            return (kind, items[n - 2].bulk_text(), payload);
        }
    }
}

#[test]
fn join_and_leave_when_a_mailbox_gains_its_first_and_loses_its_last_subscriber() {
    let gw = Gateway::start("");
    let mut b = gw.backend();
    b.send(&[b"SUBSCRIBE", b"__cometbox:events"]);
    assert_eq!(
        b.read(),
        Reply::Array(vec![
            Reply::Bulk(Some(b"subscribe".to_vec())),
            Reply::Bulk(Some(b"__cometbox:events".to_vec())),
            Reply::Int(1)
        ])
    );
    let mut p = gw.backend();
    p.call(&[b"PSUBSCRIBE", b"__cometbox:events:room:*"]);

    let first = ws::connect(&gw, "/mailbox/room:1");
    let (kind, channel, event) = next_event(&mut b);
    assert_eq!(
        (kind.as_str(), channel.as_str()),
        ("message", "__cometbox:events")
    );
    assert_eq!(
        event,
        serde_json::json!({"event":"join","mailbox":"room:1","transport":"websocket","subject":null})
    );
    let (kind, channel, _) = next_event(&mut p);
    assert_eq!(
        (kind.as_str(), channel.as_str()),
        ("pmessage", "__cometbox:events:room:1")
    );

    // A second subscriber is no news; its going is none either.
    let second = ws::connect(&gw, "/mailbox/room:1");
    gw.wait_subscribers("room:1", 2);
    drop(second);
    gw.wait_subscribers("room:1", 1);
    drop(first);
    let (_, _, event) = next_event(&mut b);
    assert_eq!(event["event"], "leave", "{event}");
    assert_eq!(event["mailbox"], "room:1");
    // Other commands are refused in RESP2 pub/sub mode, as Redis does.
    b.send(&[b"PUBLISH", b"x", b"y"]);
    assert!(matches!(b.read(), Reply::Error(e) if e.contains("only (P|S)SUBSCRIBE")));
}

#[test]
fn websocket_text_frames_reach_upstream_subscribers_only_when_enabled() {
    let gw = Gateway::start("mailbox.upstream = \"enable\"");
    let mut b = gw.backend();
    b.call(&[b"SUBSCRIBE", b"__cometbox:upstream"]);
    let mut single = ws::connect(&gw, "/mailbox/chat:1");
    single.send_text("hello from the browser");
    let (_, channel, event) = next_event(&mut b);
    assert_eq!(channel, "__cometbox:upstream");
    assert_eq!(
        event,
        serde_json::json!({"mailbox":"chat:1","subject":null,"data":"hello from the browser"})
    );
    let mut multi = ws::connect(&gw, "/mailbox/chat:1,chat:2");
    multi.send_text(r#"{"mailbox":"chat:9","data":"not followed"}"#);
    multi.send_text(r#"{"mailbox":"chat:2","data":"to two"}"#);
    let (_, _, event) = next_event(&mut b);
    assert_eq!(event["mailbox"], "chat:2", "the unfollowed one was dropped");
    assert_eq!(event["data"], "to two");

    let off = Gateway::start("");
    let mut b = off.backend();
    b.call(&[b"SUBSCRIBE", b"__cometbox:upstream"]);
    let mut ws = ws::connect(&off, "/mailbox/chat:1");
    ws.send_text("ignored");
    ws.w.write_all(&[0x88, 0x80, 1, 2, 3, 4]).unwrap(); // close
    b.writer
        .set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .unwrap();
    b.reader
        .get_ref()
        .set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .unwrap();
    assert!(
        read_reply(&mut b.reader).is_err(),
        "nothing goes upstream when off"
    );
}

#[test]
fn per_subscriber_presence_when_configured() {
    let gw = Gateway::start("mailbox.presence-per-subscriber = \"enable\"");
    let mut b = gw.backend();
    b.call(&[b"SUBSCRIBE", b"__cometbox:events:desk"]);
    let one = ws::connect(&gw, "/mailbox/desk");
    let two = ws::connect(&gw, "/mailbox/desk");
    let kinds: Vec<String> = (0..2)
        .map(|_| next_event(&mut b).2["event"].to_string())
        .collect();
    assert_eq!(kinds, ["\"join\"", "\"join\""]);
    drop(two);
    assert_eq!(
        next_event(&mut b).2["event"],
        "leave",
        "every subscriber, not just the last"
    );
    drop(one);
    assert_eq!(next_event(&mut b).2["event"], "leave");
}
