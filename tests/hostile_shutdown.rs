//! SIGTERM under load (issue 12): a keep-alive answer still being written is
//! finished, and a PUBLISH's reply counts only subscribers that really get
//! the message. Each test is named after what once broke.
//!
//! `COMETBOX_TEST_BIN` runs another build of the gateway instead, so each
//! test can be shown to fail on the code from before its fix.

mod common;

use common::*;
use std::collections::HashSet;
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The binary under test: this build's, or `COMETBOX_TEST_BIN`.
fn bin() -> String {
    std::env::var("COMETBOX_TEST_BIN").unwrap_or_else(|_| BIN.to_string())
}

fn start(extra: &str) -> Gateway {
    Gateway::try_start_bin(&bin(), extra)
        .unwrap_or_else(|log| panic!("gateway did not start:\n{log}"))
}

/// A client socket with a small receive buffer, so most of a large answer
/// waits in the gateway rather than in our kernel.
fn small_window_connect(gw: &Gateway) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(32 * 1024).unwrap();
    s.connect(&gw.addr.into()).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s
}

#[test]
fn sigterm_finishes_a_keepalive_answer_still_being_written() {
    const CLIENTS: usize = 3;
    const MESSAGES: usize = 100;
    const SIZE: usize = 60 * 1024;
    const SHUTDOWN: u64 = 10;
    let mut gw = start(&format!("server.shutdown-timeout = {SHUTDOWN}"));
    let mut b = gw.backend();
    let payload = vec![b'a'; SIZE];
    for _ in 0..MESSAGES {
        assert_eq!(b.call(&[b"PUBLISH", b"big", &payload]), Reply::Int(0));
    }
    // Keep-alive HTTP/1.1 long-polls answered at once with ~6 MB each, read
    // slowly.
    let (tx, rx) = std::sync::mpsc::channel();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let mut s = small_window_connect(&gw);
            let tx = tx.clone();
            std::thread::spawn(move || {
                s.write_all(b"GET /mailbox/big HTTP/1.1\r\nHost: t\r\n\r\n")
                    .unwrap();
                let mut r = BufReader::with_capacity(16 * 1024, s);
                let (status, headers) = read_head(&mut r).unwrap();
                assert_eq!(status, 200);
                let length: usize = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .expect("a Content-Length")
                    .1
                    .parse()
                    .unwrap();
                let mut body = Vec::with_capacity(length);
                let mut piece = vec![0; 16 * 1024];
                let mut told = false;
                while body.len() < length {
                    let want = piece.len().min(length - body.len());
                    match r.read(&mut piece[..want]) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => body.extend_from_slice(&piece[..n]),
                    }
                    if !told && body.len() > 256 * 1024 {
                        tx.send(()).unwrap();
                        told = true;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                // After the answer the gateway, shutting down, closes.
                let mut more = [0u8; 1];
                let closed = matches!(r.read(&mut more), Ok(0) | Err(_));
                (length, body, closed)
            })
        })
        .collect();
    for _ in 0..CLIENTS {
        rx.recv_timeout(Duration::from_secs(20))
            .expect("each client is reading its answer");
    }
    let signalled = Instant::now();
    gw.signal(libc::SIGTERM);
    for (i, client) in clients.into_iter().enumerate() {
        let (length, body, closed) = client.join().unwrap();
        assert_eq!(
            body.len(),
            length,
            "client {i}: the answer was cut at {}% by SIGTERM",
            body.len() * 100 / length
        );
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["messages"].as_array().unwrap().len(), MESSAGES);
        assert!(closed, "client {i}: closed after its answer");
    }
    let status = gw.wait(Duration::from_secs(SHUTDOWN + 5));
    assert!(status.is_some(), "the gateway did not exit");
    assert!(
        signalled.elapsed() < Duration::from_secs(SHUTDOWN + 2),
        "exited {:?} after SIGTERM, shutdown-timeout is {SHUTDOWN} s",
        signalled.elapsed()
    );
}

/// Reads an SSE stream to its end; returns every `data:` line's text.
fn sse_data(s: TcpStream) -> HashSet<String> {
    let mut r = BufReader::new(s);
    let (status, headers) = read_head(&mut r).unwrap();
    assert_eq!(status, 200);
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let mut text = Vec::new();
    if chunked {
        while let Ok(Some(chunk)) = read_chunk(&mut r) {
            text.extend_from_slice(&chunk);
        }
    } else {
        let _ = r.read_to_end(&mut text);
    }
    String::from_utf8_lossy(&text)
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

/// What one SIGTERM under publishing load left behind.
struct Stopped {
    /// Each PUBLISH's reply, in order (reply i answers the i-th publish,
    /// whose payload is `m-{i}`).
    replies: Vec<Reply>,
    /// The `data:` lines each stream received before it ended.
    received: Vec<HashSet<String>>,
    /// From SIGTERM to exit (None: not within `limit`).
    exit: Option<Duration>,
}

/// `streams` SSE subscribers on one mailbox, spread over the two workers;
/// a backend pipelines publishes to it in batches of 100, `pause` apart, so
/// some are in flight whenever the signal lands; SIGTERM after `after`.
fn sigterm_while_publishing(
    streams: usize,
    pause: Duration,
    after: Duration,
    limit: Duration,
) -> Stopped {
    const BATCH: usize = 100;
    let mut gw = start(""); // two workers, as base_config sets
    let readers: Vec<_> = (0..streams)
        .map(|_| {
            let mut s = gw.connect();
            s.write_all(b"GET /mailbox/going?transport=sse HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap();
            std::thread::spawn(move || sse_data(s))
        })
        .collect();
    gw.wait_subscribers("going", streams as i64);
    let b = gw.backend();
    let mut w = b.writer.try_clone().unwrap();
    let publisher = std::thread::spawn(move || {
        for batch in 0.. {
            let mut out = Vec::new();
            for i in batch * BATCH..(batch + 1) * BATCH {
                out.extend(encode_command(&[
                    b"PUBLISH",
                    b"going",
                    format!("m-{i}").as_bytes(),
                ]));
            }
            if w.write_all(&out).is_err() {
                return;
            }
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        }
    });
    let mut r = b.reader;
    r.get_ref()
        .set_read_timeout(Some(limit + Duration::from_secs(5)))
        .unwrap();
    let replies = std::thread::spawn(move || {
        let mut replies = Vec::new();
        while let Ok(reply) = read_reply(&mut r) {
            replies.push(reply);
        }
        replies
    });
    std::thread::sleep(after);
    let signalled = Instant::now();
    gw.signal(libc::SIGTERM);
    let exit = gw.wait(limit).map(|_| signalled.elapsed());
    if exit.is_none() {
        eprintln!("not exited {limit:?} after SIGTERM:\n{}", gw.log());
    }
    drop(gw); // kills it if it is still running
    publisher.join().unwrap();
    Stopped {
        replies: replies.join().unwrap(),
        received: readers.into_iter().map(|t| t.join().unwrap()).collect(),
        exit,
    }
}

#[test]
fn publish_count_at_shutdown_is_delivered_before_streams_end() {
    const STREAMS: usize = 30;
    const ROUNDS: u64 = 5;
    for round in 0..ROUNDS {
        let stopped = sigterm_while_publishing(
            STREAMS,
            Duration::from_millis(1),
            Duration::from_millis(100 + 25 * round),
            // Generous: how long the exit takes under this load is
            // sigterm_under_publish_load_exits_within_shutdown_timeout's.
            Duration::from_secs(120),
        );
        assert!(stopped.exit.is_some(), "round {round}: never exited");
        let mut all = 0;
        for (i, reply) in stopped.replies.iter().enumerate() {
            if *reply != Reply::Int(STREAMS as i64) {
                continue; // fewer subscribers left, or refused while stopping
            }
            all += 1;
            let message = format!("m-{i}");
            let got = stopped
                .received
                .iter()
                .filter(|r| r.contains(&message))
                .count();
            assert_eq!(
                got,
                STREAMS,
                "round {round}: PUBLISH {message} replied {STREAMS}, but {got} streams received it \
                 ({} replies)",
                stopped.replies.len()
            );
        }
        eprintln!(
            "round {round}: {} replies, {all} of them {STREAMS}; exited {:?} after SIGTERM",
            stopped.replies.len(),
            stopped.exit.unwrap()
        );
        assert!(all > 10, "round {round}: only {all} publishes reached all");
    }
}

/// Found writing the test above (not one of issue 12's; the pre-fix binary
/// does it too): `Worker::drain_inbox` delivers every queued
/// `ToWorker::Deliver` batch before it polls again, and nothing slows a
/// backend down while another worker's inbox grows. The worker with more of
/// the streams falls behind the one reading the backend; StopPublishing and
/// Shutdown wait behind its backlog (and its own sockets go unserved), so
/// with `server.shutdown-timeout = 3` exits took 1 to 35 s.
#[test]
fn sigterm_under_publish_load_exits_within_shutdown_timeout() {
    /// The default shutdown-timeout (3 s) and slack for a loaded machine.
    const LIMIT: Duration = Duration::from_secs(6);
    for round in 0..5 {
        let stopped =
            sigterm_while_publishing(30, Duration::ZERO, Duration::from_millis(300), LIMIT);
        let exit = stopped
            .exit
            .unwrap_or_else(|| panic!("round {round}: still running {LIMIT:?} after SIGTERM"));
        eprintln!(
            "round {round}: exited {exit:?} after SIGTERM ({} replies)",
            stopped.replies.len()
        );
    }
}
