//! The backend socket's Redis protocol, spoken byte by byte. (Real client
//! libraries are exercised by the interop tests under tests/interop.)

mod common;

use common::*;
use std::io::{BufRead, Read, Write};
use std::time::Duration;

#[test]
fn hello_3_switches_protocol_with_redis_reply_shape() {
    let gw = Gateway::start("");
    let mut b = gw.backend();
    let Reply::Map(pairs) = b.call(&[b"HELLO", b"3"]) else {
        panic!("HELLO 3 must answer a RESP3 map")
    };
    let keys: Vec<String> = pairs.iter().map(|(k, _)| k.bulk_text()).collect();
    assert_eq!(
        keys,
        [
            "server", "version", "proto", "id", "mode", "role", "modules"
        ]
    );
    assert_eq!(pairs[2].1, Reply::Int(3));
    // RESP3 now: a null is `_`.
    assert_eq!(b.call(&[b"CLIENT", b"GETNAME"]), Reply::Null);
    let Reply::Array(flat) = b.call(&[b"HELLO", b"2"]) else {
        panic!("HELLO 2 answers a flat array")
    };
    assert_eq!(flat.len(), 14);
    assert_eq!(flat[5], Reply::Int(2));
    assert!(matches!(b.call(&[b"HELLO", b"4"]), Reply::Error(e) if e.starts_with("NOPROTO")));
}

#[test]
fn inline_commands_and_pipelining() {
    let gw = Gateway::start("");
    let mut b = gw.backend();
    b.send_raw(b"PING\r\nPUBLISH inline \"hello world\"\r\n");
    b.send_raw(&encode_command(&[b"ECHO", b"x"]));
    b.send_raw(&encode_command(&[b"PUBLISH", b"inline", b"second"]));
    assert_eq!(b.read(), Reply::Simple("PONG".into()));
    assert_eq!(b.read(), Reply::Int(0));
    assert_eq!(b.read(), Reply::Bulk(Some(b"x".to_vec())));
    assert_eq!(b.read(), Reply::Int(0));
    let body = gw.get("/mailbox/inline").json();
    assert_eq!(body["messages"][0]["data"], "hello world");
    assert_eq!(body["messages"][1]["data"], "second");
}

#[test]
fn errors_use_redis_wording_and_keep_the_connection_in_step() {
    let gw = Gateway::start("mailbox.max-message-size = 1024\nmailbox.max-pending-bytes = 65536");
    let mut b = gw.backend();
    assert_eq!(
        b.call(&[b"FLUSHALL", b"now"]),
        Reply::Error("ERR unknown command 'FLUSHALL', with args beginning with: 'now'".into())
    );
    assert!(
        matches!(b.call(&[b"PUBLISH", b"only-one"]), Reply::Error(e) if e.starts_with("ERR wrong number of arguments"))
    );
    assert!(
        matches!(b.call(&[b"PUBLISH", b"bad name", b"x"]), Reply::Error(e) if e.starts_with("ERR"))
    );
    let big = vec![b'x'; 5000];
    assert!(
        matches!(b.call(&[b"PUBLISH", b"big", &big]), Reply::Error(e) if e.starts_with("ERR") && e.contains("max-message-size"))
    );
    // Still in step: the next command gets its own reply.
    assert_eq!(b.call(&[b"PING"]), Reply::Simple("PONG".into()));
    assert_eq!(b.call(&[b"PUBLISH", b"big", b"small"]), Reply::Int(0));
    assert_eq!(
        gw.get("/mailbox/big").json()["messages"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn malformed_resp_closes_only_that_connection() {
    let gw = Gateway::start("");
    let mut good = gw.backend();
    assert_eq!(good.call(&[b"PING"]), Reply::Simple("PONG".into()));
    let mut bad = gw.backend();
    bad.send_raw(b"*2\r\n$4\r\nPING\r\n:1\r\n");
    let reply = bad.read();
    assert!(
        matches!(&reply, Reply::Error(e) if e.starts_with("ERR Protocol error")),
        "{reply:?}"
    );
    let mut rest = Vec::new();
    bad.reader.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "closed after the protocol error");
    // Hostile lengths: an error and a close, or (a skipped `*-5`) nothing;
    // either way nothing is reserved up front and the others are unharmed.
    for hostile in [
        &b"*99999999999\r\n"[..],
        b"*1\r\n$-7\r\n",
        b"*1\r\n$999999999999\r\n",
    ] {
        let mut h = gw.backend();
        h.send_raw(hostile);
        assert!(
            matches!(read_reply(&mut h.reader), Ok(Reply::Error(e)) if e.starts_with("ERR Protocol error"))
        );
    }
    let mut skipped = gw.backend();
    skipped.send_raw(b"*-5\r\n");
    assert_eq!(skipped.call(&[b"PING"]), Reply::Simple("PONG".into()));
    assert_eq!(good.call(&[b"PUBLISH", b"fine", b"yes"]), Reply::Int(0));
    assert_eq!(gw.get("/mailbox/fine").json()["messages"][0]["data"], "yes");
}

#[test]
fn http_sent_to_the_backend_socket_is_dropped() {
    let gw = Gateway::start("");
    let mut s = std::os::unix::net::UnixStream::connect(&gw.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"POST /x HTTP/1.1\r\nHost: evil\r\n\r\n")
        .unwrap();
    // Closed without an answer (a read returns EOF well before the timeout).
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(!String::from_utf8_lossy(&out).contains("OK"));
    assert_eq!(gw.publish("after", b"x"), 0);
}

#[test]
fn pubsub_numsub_channels_del_and_info() {
    let gw = Gateway::start("");
    let mut waiter = gw.connect();
    waiter
        .write_all(b"GET /mailbox/room:1 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    gw.wait_subscribers("room:1", 1);
    let mut b = gw.backend();
    assert_eq!(
        b.call(&[b"PUBSUB", b"NUMSUB", b"room:1", b"room:2"]),
        Reply::Array(vec![
            Reply::Bulk(Some(b"room:1".to_vec())),
            Reply::Int(1),
            Reply::Bulk(Some(b"room:2".to_vec())),
            Reply::Int(0)
        ])
    );
    assert_eq!(
        b.call(&[b"PUBSUB", b"CHANNELS", b"room:*"]),
        Reply::Array(vec![Reply::Bulk(Some(b"room:1".to_vec()))])
    );
    assert_eq!(
        b.call(&[b"PUBSUB", b"CHANNELS", b"other*"]),
        Reply::Array(vec![])
    );
    b.call(&[b"PUBLISH", b"kept", b"1"]);
    assert_eq!(b.call(&[b"DEL", b"kept", b"missing"]), Reply::Int(1));
    assert_eq!(
        gw.get("/mailbox/kept?since=0.0-0000000000").json()["messages"],
        serde_json::json!([])
    );
    let info = b.call(&[b"INFO"]).bulk_text();
    assert!(info.contains("loading:0"), "{info}");
    assert!(info.contains("# Server"));
    assert!(info.contains("waiting_polls:1"), "{info}");
    drop(waiter);
}

#[test]
fn quit_closes_after_reply() {
    let gw = Gateway::start("");
    let mut b = gw.backend();
    assert_eq!(b.call(&[b"QUIT"]), Reply::Simple("OK".into()));
    let mut line = String::new();
    assert_eq!(b.reader.read_line(&mut line).unwrap(), 0);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn tcp_backend_listener_with_password() {
    let port = free_port();
    let gw = Gateway::start(&format!(
        "mailbox.backend-port = {port}\nmailbox.backend-password = \"s3cret-pass\""
    ));
    let cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli (Debian redis-tools) is needed");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )
    };
    assert!(cli(&["PUBLISH", "tcp", "no-auth"]).starts_with("NOAUTH"));
    assert!(
        cli(&["-a", "wrong", "--no-auth-warning", "PUBLISH", "tcp", "x"]).contains("WRONGPASS")
    );
    assert_eq!(
        cli(&[
            "-a",
            "s3cret-pass",
            "--no-auth-warning",
            "PUBLISH",
            "tcp",
            "over tcp"
        ]),
        "0"
    );
    // The Unix socket asks for the password too.
    let mut b = gw.backend();
    assert!(
        matches!(b.call(&[b"PUBLISH", b"tcp", b"x"]), Reply::Error(e) if e.starts_with("NOAUTH"))
    );
    assert_eq!(
        b.call(&[b"AUTH", b"s3cret-pass"]),
        Reply::Simple("OK".into())
    );
    assert_eq!(
        gw.get("/mailbox/tcp").json()["messages"][0]["data"],
        "over tcp"
    );
}

#[test]
fn tcp_backend_beyond_loopback_needs_a_password() {
    let err = Gateway::try_start("mailbox.backend-port = 6399\nmailbox.backend-bind = \"0.0.0.0\"")
        .err()
        .expect("refused");
    assert!(err.contains("mailbox.backend-password"), "{err}");
}
