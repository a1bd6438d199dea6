//! `GET /health` and the Redis metrics in cluster mode: the real binary,
//! a real redis-server stopped and started again under it.

mod common;

use common::redis::Redis;
use common::*;
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How long any change of state may take to show here: far more than it
/// needs (a probe a second, five seconds of grace), so a loaded machine
/// does not fail the test; the test polls and never measures.
const PATIENCE: Duration = Duration::from_secs(30);

fn metrics_addr(gw: &Gateway) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(10);
    let needle = "metrics listener on ";
    loop {
        let log = gw.log();
        if let Some(at) = log.find(needle) {
            let rest = &log[at + needle.len()..];
            let end = rest.find(':').unwrap() + 1;
            let port: String = rest[end..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            return format!("{}:{port}", &rest[..end - 1]).parse().unwrap();
        }
        assert!(Instant::now() < deadline, "no metrics listener:\n{log}");
        thread::sleep(Duration::from_millis(20));
    }
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

/// Polls `/health` until its status is `want`; the JSON of that answer.
fn health_becomes(addr: SocketAddr, want: u16) -> serde_json::Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, body) = ops_get(addr, "/health");
        if status == want {
            assert!(body.ends_with("}\n") && body.lines().count() == 1, "{body}");
            return serde_json::from_str(&body).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "/health stayed {status}, not {want}: {body}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `/metrics` until every (series, value) holds; that scrape.
fn metrics_become(addr: SocketAddr, want: &[(&str, f64)]) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, text) = ops_get(addr, "/metrics");
        assert_eq!(status, 200);
        if want.iter().all(|(s, v)| sample(&text, s) == *v) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never reached {want:?}:\n{text}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

const COMMAND_UP: &str = "cometbox_redis_up{connection=\"command\"}";
const SUBSCRIPTION_UP: &str = "cometbox_redis_up{connection=\"subscription\"}";

#[test]
fn health_flips_to_503_while_redis_is_stopped_and_back_to_200_when_it_returns() {
    let mut redis = Redis::start();
    let gw = Gateway::start(&redis.config("metrics.listen = \"127.0.0.1:0\"\n"));
    let addr = metrics_addr(&gw);

    let ok = health_becomes(addr, 200);
    assert_eq!(ok["status"], "ok");
    assert_eq!(ok["redis"], "ok");
    assert!(
        ok["redis_probe_age_seconds"].as_f64().unwrap() <= 5.0,
        "{ok}"
    );
    let text = metrics_become(
        addr,
        &[
            (COMMAND_UP, 1.0),
            (SUBSCRIPTION_UP, 1.0),
            ("cometbox_redis_healthy", 1.0),
        ],
    );
    for c in ["command", "subscription"] {
        let series = format!("cometbox_redis_reconnects_total{{connection=\"{c}\"}}");
        assert_eq!(sample(&text, &series), 0.0, "{series}");
    }
    assert_eq!(sample(&text, "cometbox_redis_pending_commands"), 0.0);
    assert!(sample(&text, "cometbox_redis_pubsub_probe_age_seconds") <= 5.0);

    // Redis goes away: SHUTDOWN closes the gateway's connections.
    redis.shutdown();
    let down = health_becomes(addr, 503);
    assert_eq!(down["status"], "unavailable");
    let reason = down["reason"].as_str().unwrap();
    assert!(
        reason == "redis unreachable" || reason == "redis subscription down",
        "{reason}"
    );
    metrics_become(
        addr,
        &[
            (COMMAND_UP, 0.0),
            (SUBSCRIPTION_UP, 0.0),
            ("cometbox_redis_healthy", 0.0),
        ],
    );
    let (_, down) = ops_get(addr, "/health");
    assert!(down.contains("\"reason\":\"redis unreachable\""), "{down}");

    // Back on the same port (empty): the node reconnects by itself.
    redis.spawn();
    let ok = health_becomes(addr, 200);
    assert_eq!(ok["redis"], "ok");
    let text = metrics_become(
        addr,
        &[
            (COMMAND_UP, 1.0),
            (SUBSCRIPTION_UP, 1.0),
            ("cometbox_redis_healthy", 1.0),
        ],
    );
    for c in ["command", "subscription"] {
        let series = format!("cometbox_redis_reconnects_total{{connection=\"{c}\"}}");
        assert!(sample(&text, &series) >= 1.0, "{series} in\n{text}");
    }
    assert!(matches!(
        gw.backend().call(&[b"PUBLISH", b"box", b"after"]),
        Reply::Int(_)
    ));
    metrics_become(addr, &[("cometbox_redis_pending_commands", 0.0)]);

    // INFO carries the same numbers.
    let info = gw.backend().call(&[b"INFO", b"cluster"]).bulk_text();
    for line in [
        "cluster_redis_reachable:1\r\n",
        "cluster_subscribed:1\r\n",
        "cluster_health:ok\r\n",
        "cluster_pending_commands:0\r\n",
    ] {
        assert!(info.contains(line), "{line:?} in\n{info}");
    }
    assert!(!info.contains("cluster_reconnects_command:0\r\n"), "{info}");
    assert!(
        !info.contains("cluster_reconnects_subscription:0\r\n"),
        "{info}"
    );
    let log = gw.log();
    assert_eq!(log.matches("is unavailable").count(), 1, "once:\n{log}");
}

#[test]
fn a_gateway_started_before_redis_is_unavailable_until_it_is_there() {
    let mut redis = Redis::start();
    redis.shutdown();
    let gw = Gateway::start(&redis.config("metrics.listen = \"127.0.0.1:0\"\n"));
    let addr = metrics_addr(&gw);
    let down = health_becomes(addr, 503);
    assert_eq!(down["reason"], "redis unreachable");
    redis.spawn();
    health_becomes(addr, 200);
    // Each node probes on {prefix}health and hears its own probes there.
    let s = TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    (&s).write_all(&encode_command(&[b"PUBSUB", b"NUMSUB", b"cometbox:health"]))
        .unwrap();
    let reply = read_reply(&mut std::io::BufReader::new(s)).unwrap();
    assert_eq!(
        reply,
        Reply::Array(vec![
            Reply::Bulk(Some(b"cometbox:health".to_vec())),
            Reply::Int(1)
        ])
    );
}

#[test]
fn a_redis_that_stops_answering_without_closing_anything_is_reported_too() {
    let redis = Redis::start();
    let gw = Gateway::start(&redis.config("metrics.listen = \"127.0.0.1:0\"\n"));
    let addr = metrics_addr(&gw);
    health_becomes(addr, 200);
    // SAFETY: signalling our own child; SIGCONT below (and Drop kills it).
    unsafe { libc::kill(redis.pid(), libc::SIGSTOP) };
    let down = health_becomes(addr, 503);
    // SAFETY: as above.
    unsafe { libc::kill(redis.pid(), libc::SIGCONT) };
    let reason = down["reason"].as_str().unwrap();
    assert!(reason.starts_with("redis "), "{reason}");
    health_becomes(addr, 200);
}

/// A TCP proxy in front of Redis that can make subscriptions deaf: while
/// `deaf` is set, every SUBSCRIBE connection through it still gets its
/// other replies (PONG too) but loses every pushed `message`, the silent
/// loss a connection that looks healthy can suffer after a failover.
struct DeafeningProxy {
    port: u16,
    deaf: Arc<AtomicBool>,
}

impl DeafeningProxy {
    fn start(redis_port: u16) -> DeafeningProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let deaf = Arc::new(AtomicBool::new(false));
        let flag = deaf.clone();
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", redis_port)) else {
                    continue;
                };
                let flag = flag.clone();
                thread::spawn(move || Self::relay(client, server, flag));
            }
        });
        DeafeningProxy { port, deaf }
    }

    fn relay(mut client: TcpStream, mut server: TcpStream, deaf: Arc<AtomicBool>) {
        // The gateway's first words say which connection this is.
        let mut first = vec![0; 64 * 1024];
        let Ok(n) = client.read(&mut first) else {
            return;
        };
        let subscription = String::from_utf8_lossy(&first[..n]).contains("SUBSCRIBE");
        if server.write_all(&first[..n]).is_err() {
            return;
        }
        let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        thread::spawn(move || {
            let _ = std::io::copy(&mut c_in, &mut s_out);
            let _ = s_out.shutdown(std::net::Shutdown::Both);
        });
        if !subscription {
            let _ = std::io::copy(&mut server, &mut client);
            let _ = client.shutdown(std::net::Shutdown::Both);
            return;
        }
        let mut from_redis = BufReader::new(server);
        while let Ok(reply) = read_reply(&mut from_redis) {
            let Reply::Array(parts) = &reply else {
                continue;
            };
            let pushed = parts.first() == Some(&Reply::Bulk(Some(b"message".to_vec())));
            if pushed && deaf.load(Ordering::Relaxed) {
                continue;
            }
            let words: Vec<Vec<u8>> = parts
                .iter()
                .map(|p| match p {
                    Reply::Bulk(Some(b)) => b.clone(),
                    Reply::Int(i) => i.to_string().into_bytes(),
                    other => panic!("unexpected in a push: {other:?}"),
                })
                .collect();
            // Ints go back as bulk strings: the gateway reads neither.
            let words: Vec<&[u8]> = words.iter().map(Vec::as_slice).collect();
            if client.write_all(&encode_command(&words)).is_err() {
                break;
            }
        }
        let _ = client.shutdown(std::net::Shutdown::Both);
    }
}

#[test]
fn a_subscription_that_answers_ping_but_delivers_nothing_is_reported_and_replaced() {
    let redis = Redis::start();
    let proxy = DeafeningProxy::start(redis.port);
    let config = format!(
        "cluster.redis = \"redis://127.0.0.1:{}\"\nmetrics.listen = \"127.0.0.1:0\"\n",
        proxy.port
    );
    let gw = Gateway::start(&config);
    let addr = metrics_addr(&gw);
    health_becomes(addr, 200);

    proxy.deaf.store(true, Ordering::Relaxed);
    let down = health_becomes(addr, 503);
    let reason = down["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("redis pub/sub not delivering (last probe seen "),
        "{reason}"
    );
    // The node gives up on the deaf subscription and subscribes again.
    let deadline = Instant::now() + PATIENCE;
    let resubscribed = "cometbox_redis_reconnects_total{connection=\"subscription\"}";
    while sample(&ops_get(addr, "/metrics").1, resubscribed) < 1.0 {
        assert!(Instant::now() < deadline, "never subscribed again");
        thread::sleep(Duration::from_millis(100));
    }
    assert!(gw.log().contains("delivers nothing"), "{}", gw.log());
    assert_eq!(
        sample(&ops_get(addr, "/metrics").1, COMMAND_UP),
        1.0,
        "the command side was fine all along"
    );

    proxy.deaf.store(false, Ordering::Relaxed);
    health_becomes(addr, 200);
}
