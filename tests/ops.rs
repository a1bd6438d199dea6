//! Operating the gateway: the metrics and health listener, and SIGHUP
//! reloads that apply while connections stay open.

mod common;

use common::*;
use jsonwebtoken::{EncodingKey, Header, encode};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SECRET_A: &str = "first-test-secret-of-at-least-32-bytes!!";
const SECRET_B: &str = "second-test-secret-of-at-least-32-bytes!";

fn wait_for_log(gw: &Gateway, needle: &str, count: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = gw.log();
        if log.matches(needle).count() >= count {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn metrics_addr(gw: &Gateway) -> SocketAddr {
    let log = wait_for_log(gw, "metrics listener on ", 1);
    let at = log.find("metrics listener on ").unwrap() + "metrics listener on ".len();
    log[at..]
        .split(':')
        .take(2)
        .collect::<Vec<_>>()
        .join(":")
        .parse()
        .unwrap()
}

/// One request on the metrics listener: (status, body).
fn ops_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: m\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn metrics_and_health_answer_on_their_own_listener_and_counters_move() {
    let gw = Gateway::start("metrics.listen = \"127.0.0.1:0\"\nmailbox.poll-timeout = 1");
    let addr = metrics_addr(&gw);
    let (status, before) = ops_get(addr, "/metrics");
    assert_eq!(status, 200);
    assert!(before.contains("cometbox_build_info{version=\""));
    assert_eq!(sample(&before, "cometbox_messages_published_total"), 0.0);

    gw.publish("m1", b"one");
    gw.publish("m1", b"two");
    let poll = gw.get("/mailbox/m1");
    assert_eq!(poll.status, 200);
    let cursor = poll.json()["cursor"].as_str().unwrap().to_string();
    assert_eq!(gw.get(&format!("/mailbox/m1?since={cursor}")).status, 200);
    // Per-worker counts are folded in each 250 ms tick.
    std::thread::sleep(Duration::from_millis(600));
    let (_, after) = ops_get(addr, "/metrics");
    assert_eq!(sample(&after, "cometbox_messages_published_total"), 2.0);
    assert_eq!(sample(&after, "cometbox_retained_messages"), 2.0);
    assert!(sample(&after, "cometbox_messages_delivered_total") >= 2.0);
    assert_eq!(
        sample(&after, "cometbox_resumes_total{result=\"recovered\"}"),
        1.0
    );
    assert!(sample(&after, "cometbox_http_sent_bytes_total") > 0.0);
    assert!(
        sample(
            &after,
            "cometbox_backend_commands_total{command=\"publish\"}"
        ) >= 2.0
    );

    let (status, health) = ops_get(addr, "/health");
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(health.trim()).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(ops_get(addr, "/nope").0, 404);
    // The public port does not serve them.
    assert_eq!(gw.get("/metrics").status, 404);
}

fn token(secret: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let claims = serde_json::json!({"exp": exp, "mailboxes": ["room:*"], "sub": "alice"});
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[test]
fn sighup_applies_cors_and_a_new_key_while_a_stream_stays_open_and_a_broken_file_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("jwt.secret");
    std::fs::write(&secret, SECRET_A).unwrap();
    let config = dir.path().join("gateway.conf");
    let write_config = |origin: &str| {
        let text = format!(
            "{}auth.required = \"enable\"\nauth.jwt-secret-file = \"{}\"\nmailbox.cors-origins = ( \"{origin}\" )\nmailbox.heartbeat = 1\nmailbox.poll-timeout = 1\n",
            base_config(dir.path()),
            secret.display()
        );
        std::fs::write(&config, text).unwrap();
    };
    write_config("https://a.example");
    let gw = Gateway::start_with(tempfile::tempdir().unwrap(), config.clone()).unwrap();

    // A stream opened under the old config.
    let s = gw.connect();
    let mut w = s.try_clone().unwrap();
    write!(
        w,
        "GET /mailbox/room:1?token={} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n",
        token(SECRET_A)
    )
    .unwrap();
    let mut stream = BufReader::new(s);
    let (status, _) = read_head(&mut stream).unwrap();
    assert_eq!(status, 200);

    let origin_b = "Origin: https://b.example\r\n";
    let with_b = |t: &str| gw.get_with(&format!("/mailbox/room:1?token={t}"), origin_b);
    assert_eq!(
        with_b(&token(SECRET_A)).header("access-control-allow-origin"),
        None
    );
    assert_eq!(with_b(&token(SECRET_B)).status, 401);

    write_config("https://b.example");
    std::fs::write(&secret, SECRET_B).unwrap();
    gw.signal(libc::SIGHUP);
    wait_for_log(&gw, "config reloaded from", 1);
    let fresh = with_b(&token(SECRET_B));
    assert_eq!(fresh.status, 200, "{}", fresh.text());
    assert_eq!(
        fresh.header("access-control-allow-origin"),
        Some("https://b.example")
    );
    assert_eq!(with_b(&token(SECRET_A)).status, 401, "the old key is gone");

    // A broken file: refused, logged, nothing changes.
    std::fs::write(&config, "server.port = \"not a port\nbroken").unwrap();
    gw.signal(libc::SIGHUP);
    wait_for_log(&gw, "config reload refused", 1);
    assert_eq!(with_b(&token(SECRET_B)).status, 200);

    // The stream opened before both reloads still delivers.
    gw.publish("room:1", b"still here");
    let mut seen = String::new();
    while !seen.contains("still here") {
        match read_chunk(&mut stream).unwrap() {
            Some(chunk) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            None => panic!("the stream closed: {seen}"),
        }
    }
    let _ = stream.fill_buf();
}

#[test]
fn the_disk_store_shows_its_log_in_metrics_and_health() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&format!(
        "metrics.listen = \"127.0.0.1:0\"\nmailbox.store = \"disk\"\nmailbox.store-dir = \"{}\"",
        dir.path().display()
    ));
    let addr = metrics_addr(&gw);
    gw.publish("kept", b"one");
    gw.publish("kept", b"two");
    // The writer thread writes within its linger (a few ms) of a publish.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let (status, text) = ops_get(addr, "/metrics");
        assert_eq!(status, 200);
        if sample(&text, "cometbox_disk_writes_total") >= 1.0 {
            break text;
        }
        assert!(Instant::now() < deadline, "nothing written:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(sample(&text, "cometbox_disk_log_bytes") > 0.0);
    assert_eq!(sample(&text, "cometbox_disk_write_errors_total"), 0.0);
    assert_eq!(sample(&text, "cometbox_disk_failing"), 0.0);
    assert!(!text.contains("cometbox_redis_"), "no Redis in disk mode");
    let (status, health) = ops_get(addr, "/health");
    assert_eq!(status, 200, "{health}");
}
