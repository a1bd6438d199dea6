//! Only Alice reads Alice's mailbox: subscriber tokens on every transport.

mod common;

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use std::io::{BufReader, Write};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SECRET: &str = "this-is-a-test-secret-of-32-bytes-or-more";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(claims: serde_json::Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn alice(exp_in: i64) -> String {
    hs256(serde_json::json!({"exp": now() as i64 + exp_in, "mailboxes": ["user:alice", "room:*"]}))
}

fn gateway(extra: &str) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("jwt.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let config = dir.path().join("gateway.conf");
    std::fs::write(
        &config,
        format!(
            "{}auth.required = \"enable\"\nauth.jwt-secret-file = \"{}\"\nauth.public-prefixes = ( \"public:\" )\nauth.cookie = \"cbt\"\n{extra}\n",
            base_config(dir.path()),
            secret.display()
        ),
    )
    .unwrap();
    Gateway::start_with(dir, config).unwrap()
}

#[test]
fn missing_bad_expired_and_foreign_tokens_are_refused_with_reasons() {
    let gw = gateway("");
    gw.publish("user:alice", b"secret mail");
    let cases = [
        ("/mailbox/user:alice".to_string(), 401, "token required"),
        (
            "/mailbox/user:alice?token=not.a.jwt".into(),
            401,
            "malformed token",
        ),
        (
            format!("/mailbox/user:alice?token={}", alice(-60)),
            401,
            "token expired",
        ),
        (
            format!(
                "/mailbox/user:alice?token={}",
                encode(
                    &Header::default(),
                    &serde_json::json!({"exp": now() + 60, "mailboxes": ["user:alice"]}),
                    &EncodingKey::from_secret(b"some-other-secret-some-other-secret")
                )
                .unwrap()
            ),
            401,
            "bad signature",
        ),
        (
            format!("/mailbox/user:bob?token={}", alice(60)),
            403,
            "mailbox not granted",
        ),
    ];
    for (target, status, reason) in cases {
        let resp = gw.get(&target);
        assert_eq!(resp.status, status, "{target}");
        assert_eq!(resp.json()["error"], reason, "{target}");
        if status == 401 {
            assert!(
                resp.header("www-authenticate")
                    .unwrap()
                    .starts_with("Bearer")
            );
        }
        assert!(!resp.text().contains(SECRET));
    }
    let info = gw.backend().call(&[b"INFO"]).bulk_text();
    assert!(
        info.contains("unauthorized_requests:4") && info.contains("forbidden_requests:1"),
        "{info}"
    );
}

#[test]
fn token_in_header_query_or_cookie_opens_each_transport() {
    let gw = gateway("");
    gw.publish("user:alice", b"hello alice");
    let token = alice(60);
    // Long-poll, three ways to carry the token.
    let by_header = gw.get_with(
        "/mailbox/user:alice",
        &format!("Authorization: Bearer {token}\r\n"),
    );
    assert_eq!(by_header.json()["messages"][0]["data"], "hello alice");
    let by_query = gw.get(&format!("/mailbox/user:alice?token={token}"));
    assert_eq!(by_query.status, 200);
    let by_cookie = gw.get_with(
        "/mailbox/user:alice",
        &format!("Cookie: theme=dark; cbt={token}\r\n"),
    );
    assert_eq!(by_cookie.status, 200);
    // A prefix grant, and a public mailbox that needs nothing (both have
    // mail, so the polls answer at once).
    gw.publish("room:42", b"x");
    gw.publish("public:news", b"x");
    assert_eq!(
        gw.get(&format!("/mailbox/room:42?token={token}")).status,
        200
    );
    assert_eq!(gw.get("/mailbox/public:news?callback=cb").status, 200);
    // JSONP and the streams check too.
    assert_eq!(gw.get("/mailbox/user:alice?callback=cb").status, 401);
    assert_eq!(
        gw.get(&format!("/mailbox/user:alice?callback=cb&token={token}"))
            .status,
        200
    );
    for transport in ["sse", "stream"] {
        let mut s = gw.connect();
        write!(
            s,
            "GET /mailbox/user:alice?transport={transport} HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        .unwrap();
        let (status, _) = read_head(&mut BufReader::new(s)).unwrap();
        assert_eq!(status, 401, "{transport} without token");
        let mut s = gw.connect();
        write!(s, "GET /mailbox/user:alice?transport={transport}&token={token} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let (status, _) = read_head(&mut BufReader::new(s)).unwrap();
        assert_eq!(status, 200, "{transport} with token");
    }
    // WebSocket is checked at the upgrade.
    let upgrade = |target: &str| {
        let mut s = gw.connect();
        write!(
            s,
            "GET {target} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        read_head(&mut BufReader::new(s)).unwrap().0
    };
    assert_eq!(upgrade("/mailbox/user:alice"), 401);
    assert_eq!(upgrade(&format!("/mailbox/user:alice?token={token}")), 101);
}

#[test]
fn a_stream_closes_when_its_token_expires() {
    let gw = gateway("");
    let token = alice(2);
    let s = gw.connect();
    let mut w = s.try_clone().unwrap();
    write!(
        w,
        "GET /mailbox/user:alice?transport=sse&token={token} HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let (status, _) = read_head(&mut r).unwrap();
    assert_eq!(status, 200);
    let started = Instant::now();
    while read_chunk(&mut r).unwrap().is_some() {}
    let lasted = started.elapsed();
    assert!(
        lasted < Duration::from_secs(6),
        "closed at expiry, not after {lasted:?}"
    );
}

#[test]
fn tokens_never_reach_the_logs() {
    // The most verbose level: nothing at any level may print a token.
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("jwt.secret");
    std::fs::write(&secret, SECRET).unwrap();
    let config = dir.path().join("gateway.conf");
    std::fs::write(
        &config,
        format!(
                        "{}auth.required = \"enable\"\nauth.jwt-secret-file = \"{}\"\nmailbox.poll-timeout = 1\n",
            base_config(dir.path()),
            secret.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("debug.log");
    let mut child = Command::new(BIN)
        .arg("-c")
        .arg(&config)
        .env("RUST_LOG", "trace")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(at) = text.find("listening for HTTP on ") {
            break text[at + 22..]
                .split_whitespace()
                .next()
                .unwrap()
                .to_string();
        }
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let token = alice(60);
    let expired = alice(-60);
    for target in [
        format!("/mailbox/user:alice?token={token}&transport=bogus"),
        format!("/mailbox/user:alice?token={expired}"),
        format!("/mailbox/user:bob?token={token}"),
    ] {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(s, "GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n").unwrap();
        let _ = read_response(&mut BufReader::new(s));
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    for secret_part in [&token, &expired, &SECRET.to_string()] {
        let signature = secret_part.rsplit('.').next().unwrap();
        assert!(
            !text.contains(signature),
            "token material in the log:\n{text}"
        );
    }
}

#[test]
fn rs256_and_es256_public_keys() {
    for (alg, genkey) in [
        (
            Algorithm::RS256,
            vec![
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ],
        ),
        (
            Algorithm::ES256,
            vec![
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ],
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("key.pem");
        let public = dir.path().join("key.pub.pem");
        let out = Command::new("openssl")
            .args(&genkey)
            .arg("-out")
            .arg(&private)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public)
            .output()
            .unwrap();
        assert!(out.status.success());
        let pem = std::fs::read(&private).unwrap();
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
            _ => EncodingKey::from_ec_pem(&pem).unwrap(),
        };
        let token = encode(
            &Header::new(alg),
            &serde_json::json!({"exp": now() + 60, "mailboxes": ["user:alice"]}),
            &key,
        )
        .unwrap();
        let config = dir.path().join("gateway.conf");
        std::fs::write(
            &config,
            format!(
                "{}auth.required = \"enable\"\nauth.jwt-public-key-file = \"{}\"\n",
                base_config(dir.path()),
                public.display()
            ),
        )
        .unwrap();
        let gw = Gateway::start_with(dir, config).unwrap();
        gw.publish("user:alice", b"signed");
        let ok = gw.get(&format!("/mailbox/user:alice?token={token}"));
        assert_eq!(ok.json()["messages"][0]["data"], "signed", "{alg:?}");
        // An HS256 token forged with the public key as the secret is refused.
        let forged = encode(
            &Header::default(),
            &serde_json::json!({"exp": now() + 60, "mailboxes": ["user:alice"]}),
            &EncodingKey::from_secret(&std::fs::read(gw.dir.path().join("key.pub.pem")).unwrap()),
        )
        .unwrap();
        assert_eq!(
            gw.get(&format!("/mailbox/user:alice?token={forged}"))
                .status,
            401,
            "{alg:?}"
        );
    }
}
