//! A burst of browsers is spread over the workers: a worker that holds
//! more than its share leaves the listener's backlog to the least loaded
//! one, so a fan-out to them runs on every core (docs/architecture.md).
//! Before, the worker that happened to be awake accepted nearly the whole
//! burst (docs/BENCHMARKS.md: 95% of a fan-out's CPU on one worker).

mod common;

use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

const BURST: usize = 400;

fn per_worker(gw: &Gateway) -> Vec<usize> {
    let info = gw.backend().call(&[b"INFO", b"workers"]).bulk_text();
    info.lines()
        .find_map(|l| l.strip_prefix("http_connections_per_worker:"))
        .unwrap_or_else(|| panic!("no per-worker line in\n{info}"))
        .trim()
        .split(',')
        .map(|n| n.parse().unwrap())
        .collect()
}

#[test]
fn a_burst_of_subscriptions_is_spread_over_the_workers() {
    let gw = Gateway::start("");
    // All connected and asking before any worker has taken one: the burst
    // a deploy or a reconnect storm makes. The gateway is stopped while
    // the kernel queues them in the listen backlog, so the first worker to
    // wake finds them all waiting, as a busy worker does in a burst.
    gw.signal(libc::SIGSTOP);
    let mut socks = Vec::with_capacity(BURST);
    for i in 0..BURST {
        let mut s = TcpStream::connect(gw.addr).unwrap();
        write!(
            s,
            "GET /mailbox/burst{i} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        socks.push(s);
    }
    gw.signal(libc::SIGCONT);
    let deadline = Instant::now() + Duration::from_secs(10);
    let counts = loop {
        let counts = per_worker(&gw);
        if counts.iter().sum::<usize>() >= BURST {
            break counts;
        }
        assert!(Instant::now() < deadline, "not all accepted: {counts:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(counts.len(), 2, "the test config runs two workers");
    let (lo, hi) = (counts[0].min(counts[1]), counts[0].max(counts[1]));
    // ACCEPT_SLACK is 16; a hand-over in flight may let a few more through.
    assert!(hi - lo <= 48, "connections per worker: {counts:?}");
    // And every one of them is served.
    assert_eq!(gw.publish("burst7", b"hello"), 1);
}
