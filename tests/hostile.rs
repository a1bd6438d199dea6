//! What the open internet sends. After each attack the gateway still serves
//! a normal subscriber, and the message retained before it is still there.

mod common;

use common::*;
use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// Publishes a message to keep, then returns a check that runs after an
/// attack: the gateway answers a new subscriber, and the kept message is
/// still retained (same id).
fn guard(gw: &Gateway, tag: &str) -> impl Fn(&Gateway) {
    let mailbox = format!("kept-{tag}");
    gw.publish(&mailbox, b"precious");
    let id = gw.get(&format!("/mailbox/{mailbox}")).json()["messages"][0]["id"].clone();
    move |gw: &Gateway| {
        let body = gw.get(&format!("/mailbox/{mailbox}")).json();
        assert_eq!(
            body["messages"][0]["id"], id,
            "retained message lost after {mailbox}"
        );
        assert_eq!(body["messages"][0]["data"], "precious");
        gw.publish("after-attack", b"still here");
        assert!(
            gw.get("/mailbox/after-attack")
                .text()
                .contains("still here")
        );
    }
}

#[test]
fn slowloris_is_cut_off_and_others_are_served() {
    let gw = Gateway::start("server.header-timeout = 1");
    let check = guard(&gw, "slowloris");
    let mut slow: Vec<TcpStream> = (0..200).map(|_| gw.connect()).collect();
    let started = Instant::now();
    // A byte every 100 ms from each: never a complete head.
    let mut closed = 0;
    for round in 0..40 {
        for s in slow.iter_mut() {
            let _ = s.write_all(if round == 0 { b"G" } else { b"X" });
        }
        std::thread::sleep(Duration::from_millis(100));
        if round == 5 {
            check(&gw); // served while the attack runs
        }
    }
    for mut s in slow {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = Vec::new();
        if s.read_to_end(&mut buf).is_ok() {
            closed += 1;
        }
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(closed, 200, "every slow client was cut off");
    check(&gw);
}

#[test]
fn twenty_thousand_connection_attempts_against_a_cap_of_a_thousand() {
    let gw = Gateway::start("server.max-connections = 1000");
    let check_later = guard(&gw, "flood");
    // The allowed clients: 1000 waiting polls.
    let mut allowed = Vec::new();
    for _ in 0..1000 {
        let mut s = gw.connect();
        s.write_all(b"GET /mailbox/flooded HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        allowed.push(s);
    }
    gw.wait_subscribers("flooded", 1000);
    // 19,000 more attempts from 4 threads: each answered (503) or refused at
    // once, never left hanging.
    let addr = gw.addr;
    let started = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut answered = 0;
                for _ in 0..4750 {
                    let Ok(mut s) = TcpStream::connect(addr) else {
                        continue;
                    };
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let mut text = Vec::new();
                    match s.read_to_end(&mut text) {
                        Ok(_) => {
                            assert!(
                                text.is_empty() || text.starts_with(b"HTTP/1.1 503"),
                                "{}",
                                String::from_utf8_lossy(&text)
                            );
                            answered += 1;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => answered += 1,
                        Err(e) => panic!("an attempt hung or failed: {e}"),
                    }
                }
                answered
            })
        })
        .collect();
    let answered: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(answered >= 18_000, "{answered} of 19000 attempts answered");
    assert!(started.elapsed() < Duration::from_secs(120));
    // The allowed clients are still served.
    assert_eq!(gw.publish("flooded", b"you made it"), 1000);
    for s in allowed {
        let body = read_response(&mut BufReader::new(s)).unwrap().json();
        assert_eq!(body["messages"][0]["data"], "you made it");
    }
    gw.wait_subscribers("flooded", 0);
    check_later(&gw);
}

#[test]
fn smuggling_and_malformed_requests() {
    let gw = Gateway::start("");
    let check = guard(&gw, "smuggle");
    let long_name = format!(
        "GET /mailbox/{} HTTP/1.1\r\nHost: t\r\n\r\n",
        "a".repeat(201)
    );
    let long_line = format!(
        "GET /mailbox/a?x={} HTTP/1.1\r\nHost: t\r\n\r\n",
        "b".repeat(20_000)
    );
    let many_headers: String = (0..100).map(|i| format!("X-{i}: v\r\n")).collect();
    let many = format!("GET /mailbox/a HTTP/1.1\r\nHost: t\r\n{many_headers}\r\n");
    let attacks: Vec<(Vec<u8>, &[u16])> = vec![
        (b"GET /mailbox/a HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), &[400]),
        (b"GET /mailbox/a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n".to_vec(), &[501]),
        (b"GET /mailbox/a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n".to_vec(), &[400]),
        (b"GET /mailbox/a HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde".to_vec(), &[400]),
        (b"GET /mailbox/a HTTP/1.1\r\nHost: t\r\nContent-Length: +3\r\n\r\nabc".to_vec(), &[400]),
        (b"GET /mailbox/a HTTP/1.1\r\nHost: t\r\n X-Folded: yes\r\n\r\n".to_vec(), &[400]),
        (b"GET /mailbox/a HTTP/1.1\r\nHost: t\r\nX: a\0b\r\n\r\n".to_vec(), &[400]),
        (b"GET /mailbox/a\0 HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), &[400]),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(), &[400]),
        (b"GET /mailbox/%zz%00 HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), &[400]),
        (b"GET /mailbox/a?since=99999999999999999999999.1-1 HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), &[400]),
        (long_name.into_bytes(), &[400]),
        (long_line.into_bytes(), &[431]),
        (many.into_bytes(), &[431]),
    ];
    for (bytes, statuses) in attacks {
        let mut s = gw.connect();
        s.write_all(&bytes).unwrap();
        let resp = read_response(&mut BufReader::new(s)).unwrap();
        assert!(
            statuses.contains(&resp.status),
            "{:?} gave {}",
            String::from_utf8_lossy(&bytes),
            resp.status
        );
    }
    // Bare LF line ends are accepted (as nginx does); the request is whole.
    let mut s = gw.connect();
    s.write_all(b"GET /mailbox/kept-smuggle HTTP/1.1\nHost: t\nConnection: close\n\n")
        .unwrap();
    assert_eq!(read_response(&mut BufReader::new(s)).unwrap().status, 200);
    check(&gw);
}

#[test]
fn half_open_sockets_and_clients_that_never_read() {
    let gw = Gateway::start(
        "mailbox.max-pending-bytes = 2000000\nmailbox.max-messages = 1000\nmailbox.max-mailbox-bytes = 100000000",
    );
    let check = guard(&gw, "halfopen");
    // A client that sends its request and shuts its write side still gets
    // the answer it asked for.
    let mut s = gw.connect();
    s.write_all(b"GET /mailbox/kept-halfopen HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let resp = read_response(&mut BufReader::new(s)).unwrap();
    assert_eq!(resp.json()["messages"][0]["data"], "precious");
    // A waiting poll whose client half-closes is dropped, not leaked.
    let mut s = gw.connect();
    s.write_all(b"GET /mailbox/halfway HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    gw.wait_subscribers("halfway", 1);
    s.shutdown(Shutdown::Write).unwrap();
    gw.wait_subscribers("halfway", 0);
    // 50 streams that never read while 8 MB is published to them: each is
    // cut off at its queue cap; the gateway does not buffer without bound.
    let mut sleepers = Vec::new();
    for _ in 0..50 {
        let mut s = gw.connect();
        s.write_all(b"GET /mailbox/flood?transport=stream HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        sleepers.push(s);
    }
    gw.wait_subscribers("flood", 50);
    let mut b = gw.backend();
    let payload = vec![b'x'; 64 * 1024];
    for _ in 0..128 {
        b.call(&[b"PUBLISH", b"flood", &payload]);
    }
    gw.wait_subscribers("flood", 0);
    let info = b.call(&[b"INFO"]).bulk_text();
    assert!(info.contains("slow_subscribers_closed:50"), "{info}");
    drop(sleepers);
    check(&gw);
}

#[test]
fn websocket_frames_that_lie_about_their_length() {
    let gw = Gateway::start("");
    let check = guard(&gw, "wslie");
    for claim in [
        [0x7fu8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        [0, 0, 0, 0, 0x40, 0, 0, 0],
    ] {
        let mut s = gw.connect();
        s.write_all(
            b"GET /mailbox/ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
        let mut frame = vec![0x82, 0xff];
        frame.extend_from_slice(&claim);
        frame.extend_from_slice(&[1, 2, 3, 4, 0, 0, 0]);
        s.write_all(&frame).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        // A close frame (0x88, length, code) with code 1009.
        let close = out
            .windows(4)
            .any(|w| w[0] == 0x88 && w[2..] == [0x03, 0xf1]);
        assert!(close, "closed with 1009: {out:?}");
    }
    check(&gw);
}

#[test]
fn hostile_resp() {
    let gw =
        Gateway::start("mailbox.max-message-size = 1048576\nmailbox.max-pending-bytes = 4194304");
    let check = guard(&gw, "resp");
    let nested: Vec<u8> = b"*1\r\n".repeat(100_000);
    let attacks: Vec<Vec<u8>> = vec![
        b"*-1\r\n*-99\r\n".to_vec(),
        b"*1\r\n$-5\r\n".to_vec(),
        b"*3\r\n$7\r\nPUBLISH\r\n$1\r\na\r\n$-99999999999\r\n".to_vec(),
        b"*99999999999999\r\n".to_vec(),
        b"*2\r\n$4\r\nPING\r\n$18446744073709551616\r\n".to_vec(),
        nested,
        b"*1\r\n$104857600\r\nonly a little".to_vec(), // claims 100 MB, sends little, hangs up
        vec![b'A'; 100_000],                           // an endless inline line
        b"\"unbalanced\r\n".to_vec(),
    ];
    for attack in attacks {
        let mut s = std::os::unix::net::UnixStream::connect(&gw.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(&attack);
        let _ = s.shutdown(Shutdown::Write);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
    }
    // A 100 MB claimed bulk that really arrives (here 20 MB over the limit)
    // is skipped in a stream and the connection stays in step.
    let mut b = gw.backend();
    let big = 20 * 1024 * 1024;
    b.send_raw(format!("*3\r\n$7\r\nPUBLISH\r\n$4\r\nhuge\r\n${big}\r\n").as_bytes());
    let chunk = vec![b'z'; 1 << 20];
    for _ in 0..20 {
        b.send_raw(&chunk);
    }
    b.send_raw(b"\r\n");
    assert!(matches!(b.read(), Reply::Error(e) if e.contains("max-message-size")));
    assert_eq!(b.call(&[b"PING"]), Reply::Simple("PONG".into()));
    check(&gw);
}
