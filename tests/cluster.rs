//! Cluster mode (`cluster.redis`): several gateway processes sharing
//! mailboxes through a real `redis-server` (Debian's package; tests/run-all.sh
//! installs it), started by each test on a free port with no persistence in
//! a temp dir, and killed at the end.

mod common;

use common::redis::Redis;
use common::*;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

fn nodes(redis: &Redis, n: usize, extra: &str) -> Vec<Gateway> {
    (0..n)
        .map(|_| Gateway::start(&redis.config(extra)))
        .collect()
}

/// A long-poll: (ids, payloads, cursor, missed).
fn poll(
    gw: &Gateway,
    mailbox: &str,
    cursor: Option<&str>,
) -> (Vec<String>, Vec<String>, String, bool) {
    let target = match cursor {
        Some(c) => format!("/mailbox/{mailbox}?since={c}"),
        None => format!("/mailbox/{mailbox}"),
    };
    let r = gw.get(&target);
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    let messages = j["messages"].as_array().unwrap();
    let ids = messages
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    let data = messages
        .iter()
        .map(|m| m["data"].as_str().unwrap().to_string())
        .collect();
    let missed = j["missed"].as_bool().unwrap_or(false);
    (ids, data, j["cursor"].as_str().unwrap().to_string(), missed)
}

/// Long-polls from `since` until `n` messages came (a node hears another
/// node's publish a moment after its PUBLISH was answered); (payloads,
/// cursor, missed on any poll).
fn poll_n(gw: &Gateway, mailbox: &str, since: &str, n: usize) -> (Vec<String>, String, bool) {
    let (mut all, mut cursor, mut missed) = (Vec::new(), since.to_string(), false);
    while all.len() < n {
        let (_, data, next, m) = poll(gw, mailbox, Some(&cursor));
        all.extend(data);
        missed |= m;
        cursor = next;
    }
    (all, cursor, missed)
}

/// Opens an SSE stream and returns the reader after the head.
fn open_sse(gw: &Gateway, target: &str) -> BufReader<TcpStream> {
    let s = gw.connect();
    write!(
        &s,
        "GET {target} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let (status, _) = read_head(&mut r).unwrap();
    assert_eq!(status, 200);
    r
}

/// Reads SSE events until `n` messages (id, data) have come.
fn sse_messages(r: &mut BufReader<TcpStream>, n: usize) -> Vec<(String, String)> {
    let mut text = String::new();
    loop {
        let events: Vec<(String, String)> = text
            .split("\n\n")
            .filter_map(|block| {
                let mut id = None;
                let mut data = None;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(v.to_string());
                    }
                }
                Some((id?, data?))
            })
            .collect();
        if events.len() >= n && text.ends_with("\n\n") {
            return events;
        }
        match read_chunk(r).unwrap() {
            Some(chunk) => text.push_str(&String::from_utf8_lossy(&chunk)),
            None => panic!("stream ended early; got {text:?}"),
        }
    }
}

#[test]
fn publish_on_one_node_reaches_the_others_with_one_id_and_cursors_move_between_nodes() {
    let redis = Redis::start();
    let gws = nodes(&redis, 3, "");
    let (a, b, c) = (&gws[0], &gws[1], &gws[2]);
    let mut sse = open_sse(c, "/mailbox/room");
    c.wait_subscribers("room", 1);
    let held = {
        let addr = b.addr;
        thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
            s.write_all(b"GET /mailbox/room HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                .unwrap();
            read_response(&mut BufReader::new(s)).unwrap()
        })
    };
    b.wait_subscribers("room", 1);
    assert_eq!(
        a.publish("room", b"hello"),
        0,
        "A counts its own subscribers only"
    );
    let polled = held.join().unwrap().json();
    let streamed = sse_messages(&mut sse, 1);
    let id = polled["messages"][0]["id"].as_str().unwrap();
    assert_eq!(polled["messages"][0]["data"], "hello");
    assert_eq!(streamed[0], (id.to_string(), "hello".to_string()));

    // 30 read on B, 30 more published on C, B's cursor resumes on A.
    for i in 0..30 {
        a.publish("room", format!("first {i}").as_bytes());
    }
    let (data, cursor, missed) = poll_n(b, "room", id, 30);
    let want: Vec<String> = (0..30).map(|i| format!("first {i}")).collect();
    assert_eq!(data, want);
    assert!(!missed);
    for i in 0..30 {
        c.publish("room", format!("second {i}").as_bytes());
    }
    let (data, _, missed) = poll_n(a, "room", &cursor, 30);
    let want: Vec<String> = (0..30).map(|i| format!("second {i}")).collect();
    assert_eq!(data, want);
    assert!(!missed);
}

#[test]
fn two_publishers_on_two_nodes_make_one_order_seen_by_every_node() {
    let redis = Redis::start();
    let gws = nodes(&redis, 3, "");
    thread::scope(|s| {
        for (who, gw) in [("p", &gws[0]), ("q", &gws[1])] {
            s.spawn(move || {
                let mut backend = gw.backend();
                for i in 0..300 {
                    let payload = format!("{who}{i}");
                    match backend.call(&[b"PUBLISH", b"race", payload.as_bytes()]) {
                        Reply::Int(_) => {}
                        other => panic!("PUBLISH replied {other:?}"),
                    }
                }
            });
        }
    });
    let views: Vec<(Vec<String>, Vec<String>)> = gws
        .iter()
        .map(|gw| {
            let (ids, data, _, _) = poll(gw, "race", None);
            (ids, data)
        })
        .collect();
    assert_eq!(views[0].1.len(), 600);
    for view in &views[1..] {
        assert_eq!(view, &views[0], "one order, the same ids, on every node");
    }
    for who in ["p", "q"] {
        let mine: Vec<usize> = views[0]
            .1
            .iter()
            .filter_map(|d| d.strip_prefix(who)?.parse().ok())
            .collect();
        assert_eq!(mine, (0..300).collect::<Vec<_>>(), "{who}'s own order kept");
    }
}

#[test]
fn a_cursor_resumes_exactly_after_every_gateway_restarted() {
    let redis = Redis::start();
    let mut old = nodes(&redis, 2, "");
    for i in 0..5 {
        old[i % 2].publish("keep", format!("m{i}").as_bytes());
    }
    let (ids, _, _, _) = poll(&old[1], "keep", None);
    for gw in &mut old {
        gw.terminate(Duration::from_secs(10))
            .expect("gateway stops");
    }
    let fresh = Gateway::start(&redis.config(""));
    let (_, data, _, missed) = poll(&fresh, "keep", Some(&ids[2]));
    assert_eq!(data, ["m3", "m4"]);
    assert!(!missed);
}

#[test]
fn redis_down_then_back_empty_errors_fast_and_recovers_with_missed() {
    let mut redis = Redis::start();
    let mut gws = nodes(&redis, 2, "mailbox.poll-timeout = 2\n");
    let (a, b) = (&gws[0], &gws[1]);
    a.publish("box", b"before");
    let (_, _, cursor, _) = poll(b, "box", None);
    redis.stop();

    let started = Instant::now();
    let reply = a.backend().call(&[b"PUBLISH", b"box", b"lost"]);
    assert!(
        matches!(&reply, Reply::Error(e) if e.starts_with("TRYAGAIN")),
        "{reply:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Subscribers' requests end: a normal empty answer or a 503.
    let started = Instant::now();
    let r = b.get(&format!("/mailbox/box?since={cursor}"));
    assert!(r.status == 200 || r.status == 503, "{}", r.status);
    if r.status == 503 {
        assert!(r.header("retry-after").is_some());
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // A gateway may start while Redis is down, and none exits.
    let mut late = Gateway::start(&redis.config(""));
    for gw in gws.iter_mut().chain([&mut late]) {
        assert!(gw.is_running());
    }
    let (a, b) = (&gws[0], &gws[1]);

    redis.spawn(); // back, empty
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Reply::Int(_) = a.backend().call(&[b"PUBLISH", b"box", b"after"]) {
            break;
        }
        assert!(Instant::now() < deadline, "publishing did not come back");
        thread::sleep(Duration::from_millis(200));
    }
    let (_, data, _, missed) = poll(b, "box", Some(&cursor));
    assert!(missed, "the old cursor is told");
    assert_eq!(data, ["after"]);
    let log = a.log();
    assert_eq!(
        log.matches("is unavailable").count(),
        1,
        "logged once:\n{log}"
    );
    late.terminate(Duration::from_secs(10));
}

#[test]
fn del_on_one_node_is_seen_by_the_others() {
    let redis = Redis::start();
    let gws = nodes(&redis, 3, "");
    gws[0].publish("gone", b"x");
    let (_, _, cursor, _) = poll(&gws[1], "gone", None);
    match gws[2].backend().call(&[b"DEL", b"gone"]) {
        Reply::Int(1) => {}
        other => panic!("DEL replied {other:?}"),
    }
    for gw in &gws[..2] {
        let (data, missed) = {
            let (_, data, _, missed) = poll(gw, "gone", Some(&cursor));
            (data, missed)
        };
        assert!(missed && data.is_empty(), "{data:?} {missed}");
    }
}

#[test]
fn backends_may_publish_straight_into_redis_with_fcall() {
    let redis = Redis::start();
    let gws = nodes(&redis, 1, "");
    let mut sse = open_sse(&gws[0], "/mailbox/direct");
    gws[0].wait_subscribers("direct", 1);
    // Loaded by the gateway at start.
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis
        .cli(&["FCALL", "cometbox_publish", "1", "direct", "from rails"])
        .is_none_or(|l| l.starts_with('-'))
    {
        assert!(Instant::now() < deadline, "function not loaded");
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(sse_messages(&mut sse, 1)[0].1, "from rails");
}

#[test]
fn three_hundred_sse_subscribers_on_two_nodes_get_every_message_once_in_order() {
    let redis = Redis::start();
    let gws = nodes(&redis, 2, "");
    let readers: Vec<_> = (0..300)
        .map(|i| {
            let gw = &gws[i % 2];
            open_sse(gw, "/mailbox/crowd")
        })
        .collect();
    gws[0].wait_subscribers("crowd", 150);
    gws[1].wait_subscribers("crowd", 150);
    let handles: Vec<_> = readers
        .into_iter()
        .map(|mut r| thread::spawn(move || sse_messages(&mut r, 20)))
        .collect();
    for i in 0..20 {
        gws[i % 2].publish("crowd", format!("n{i}").as_bytes());
    }
    let want: Vec<String> = (0..20).map(|i| format!("n{i}")).collect();
    for h in handles {
        let got: Vec<String> = h.join().unwrap().into_iter().map(|(_, d)| d).collect();
        assert_eq!(got, want);
    }
}

#[test]
fn subscribers_authenticate_with_the_same_tokens_on_every_node() {
    use jsonwebtoken::{EncodingKey, Header, encode};
    const SECRET: &str = "this-is-a-test-secret-of-32-bytes-or-more";
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("jwt.secret");
    std::fs::write(&secret, SECRET).unwrap();
    let auth = format!(
        "auth.required = \"enable\"\nauth.jwt-secret-file = \"{}\"\n",
        secret.display()
    );
    let gws = nodes(&redis, 2, &auth);
    gws[0].publish("user:alice", b"for alice");
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60;
    let claims = serde_json::json!({"exp": exp, "mailboxes": ["user:alice"]});
    let token = encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let mine = gws[1].get(&format!("/mailbox/user:alice?token={token}"));
    assert_eq!(mine.json()["messages"][0]["data"], "for alice");
    assert_eq!(gws[1].get("/mailbox/user:alice").status, 401);
    let theirs = gws[1].get(&format!("/mailbox/user:bob?token={token}"));
    assert_eq!(theirs.status, 403);
}

#[test]
fn a_redis_that_stops_answering_gets_tryagain_not_a_hang() {
    let redis = Redis::start();
    let gws = nodes(&redis, 1, "");
    gws[0].publish("stuck", b"first");
    let pid = redis.child.as_ref().unwrap().id() as i32;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let started = Instant::now();
    let reply = gws[0].backend().call(&[b"PUBLISH", b"stuck", b"second"]);
    let took = started.elapsed();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert!(
        matches!(&reply, Reply::Error(e) if e.starts_with("TRYAGAIN")),
        "{reply:?}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(
        gws[0].backend().call(&[b"PUBLISH", b"stuck", b"third"]),
        Reply::Int(_)
    ) {
        assert!(Instant::now() < deadline, "publishing did not come back");
        thread::sleep(Duration::from_millis(200));
    }
}
