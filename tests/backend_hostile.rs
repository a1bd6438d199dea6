//! What a broken or hostile backend sends, and what the gateway must still
//! do meanwhile: answer every other backend promptly. Each test is named
//! after what once broke.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long another backend's PUBLISH may take while an attack runs: far
/// above a loaded debug build's few milliseconds, far below the stalls that
/// broke (34 s).
const PROMPT: Duration = Duration::from_secs(2);

/// Publishes from `b` to mailboxes spread over every store shard, timing
/// each, until `done` says the attack is over or `limit` passes. Returns how
/// many were answered and the slowest.
fn publish_meanwhile(b: &mut Resp, limit: Duration, done: impl Fn() -> bool) -> (usize, Duration) {
    let started = Instant::now();
    let (mut answered, mut slowest) = (0, Duration::ZERO);
    while started.elapsed() < limit && !(answered > 0 && done()) {
        let mailbox = format!("probe-{}", answered % 256);
        let sent = Instant::now();
        let reply = b.call(&[b"PUBLISH", mailbox.as_bytes(), b"x"]);
        assert_eq!(reply, Reply::Int(0), "PUBLISH {mailbox}");
        slowest = slowest.max(sent.elapsed());
        answered += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    (answered, slowest)
}

/// Opens a long-poll on `mailbox` and leaves it waiting.
fn hold_poll(gw: &Gateway, mailbox: &str) -> TcpStream {
    let mut s = gw.connect();
    s.write_all(format!("GET /mailbox/{mailbox} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .unwrap();
    s
}

#[test]
fn glob_pattern_does_not_stall_other_backends() {
    let gw = Gateway::start("mailbox.poll-timeout = 120");
    // Long names: the old matcher's cost was pattern × name per mailbox.
    let tail = "a".repeat(140);
    let _polls: Vec<TcpStream> = (0..300)
        .map(|i| hold_poll(&gw, &format!("room-{i:03}-{tail}")))
        .collect();
    let mut b = gw.backend();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(b.call(&[b"PUBSUB", b"CHANNELS"]), Reply::Array(a) if a.len() == 300) {
        assert!(Instant::now() < deadline, "300 polls never attached");
        std::thread::sleep(Duration::from_millis(20));
    }

    // `*[xxx…`: an unterminated class of 1,000 KiB after a star.
    let mut pattern = b"*[".to_vec();
    pattern.resize(1000 * 1024, b'x');
    let mut attacker = gw.backend();
    attacker
        .writer
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    attacker.send(&[b"PUBSUB", b"CHANNELS", &pattern]);
    let answer = std::thread::spawn(move || attacker.read());

    let (answered, slowest) =
        publish_meanwhile(&mut b, Duration::from_secs(5), || answer.is_finished());
    assert!(
        slowest < PROMPT,
        "a PUBLISH waited {slowest:?} behind the pattern ({answered} answered)"
    );
    match answer.join().unwrap() {
        Reply::Error(e) => assert!(e.contains("pattern too long"), "{e}"),
        Reply::Array(names) => assert!(names.is_empty(), "nothing ends in x"),
        other => panic!("PUBSUB CHANNELS replied {other:?}"),
    }
    // Within the cap the same shape runs, and answers correctly.
    pattern.truncate(1024);
    assert_eq!(
        b.call(&[b"PUBSUB", b"CHANNELS", &pattern]),
        Reply::Array(vec![])
    );
    match b.call(&[b"PUBSUB", b"CHANNELS", b"room-00[0-4]-*"]) {
        Reply::Array(names) => assert_eq!(names.len(), 5),
        other => panic!("PUBSUB CHANNELS replied {other:?}"),
    }
}

/// The gateway's resident memory, from /proc.
fn rss_bytes(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[test]
fn unfinished_multibulk_memory_is_bounded() {
    const CONNECTIONS: usize = 10;
    /// Arguments each connection sends of the million it announces: enough
    /// for 20 MB of bookkeeping each at the old 56 bytes per 1-byte argument.
    const ARGS: usize = 400_000;
    const BOUND: usize = 64 << 20;
    let gw = Gateway::start("");
    let mut b = gw.backend();
    assert_eq!(b.call(&[b"PING"]), Reply::Simple("PONG".into()));
    let before = rss_bytes(gw.pid());

    let mut head = b"*1048576\r\n".to_vec();
    head.extend(b"$1\r\nx\r\n".repeat(ARGS));
    let senders: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let mut s = UnixStream::connect(&gw.socket).unwrap();
            let head = head.clone();
            std::thread::spawn(move || {
                // Refused part-way (and closed) is the right outcome too.
                let _ = s.write_all(&head);
                s
            })
        })
        .collect();
    let (answered, slowest) = publish_meanwhile(&mut b, Duration::from_secs(60), || {
        senders.iter().all(|s| s.is_finished())
    });
    let held: Vec<UnixStream> = senders.into_iter().map(|s| s.join().unwrap()).collect();
    // Let the gateway read what is still in flight.
    assert_eq!(b.call(&[b"PING"]), Reply::Simple("PONG".into()));
    std::thread::sleep(Duration::from_millis(300));
    let grown = rss_bytes(gw.pid()).saturating_sub(before);
    eprintln!("gateway grew by {} KiB", grown >> 10);
    assert!(
        grown < BOUND,
        "{CONNECTIONS} unfinished multibulks grew the gateway by {} MiB",
        grown >> 20
    );
    assert!(
        slowest < PROMPT,
        "a PUBLISH waited {slowest:?} ({answered})"
    );
    for mut s in held {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        let reply = String::from_utf8_lossy(&reply);
        assert!(
            reply.starts_with("-ERR Protocol error: ") && reply.contains("too big"),
            "refused and closed: {reply:?}"
        );
    }
}

#[test]
fn info_sections_are_printed_once() {
    let gw = Gateway::start("");
    let mut b = gw.backend();
    for words in [
        &[&b"INFO"[..], b"clients", b"stats"][..],
        &[b"INFO", b"all"],
        &[b"INFO"],
        &[b"INFO", b"clients", b"clients"],
        &[b"INFO", b"default", b"mailboxes"],
    ] {
        let info = b.call(words).bulk_text();
        for header in info.lines().filter(|l| l.starts_with('#')) {
            let times = info.lines().filter(|l| l == &header).count();
            let words: Vec<_> = words.iter().map(|w| String::from_utf8_lossy(w)).collect();
            assert_eq!(times, 1, "{header} in {words:?}:\n{info}");
        }
        assert!(info.contains("loading:0"), "{info}");
    }
    let info = b.call(&[b"INFO", b"clients", b"stats"]).bulk_text();
    assert!(info.contains("# Clients\r\n") && info.contains("# Stats\r\n"));
}

// ----- running out of file descriptors --------------------------------------

/// Starts the gateway with its open-file limit (soft and hard, so it cannot
/// raise it) at `nofile`.
fn start_with_fd_limit(dir: &Path, nofile: u64) -> (Child, std::path::PathBuf) {
    use std::os::unix::process::CommandExt;
    let config = dir.join("gateway.conf");
    std::fs::write(&config, base_config(dir)).unwrap();
    let log = dir.join("gateway.log");
    let mut command = Command::new(BIN);
    command
        .arg("-c")
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    // SAFETY: pre_exec runs in the forked child before exec; setrlimit is
    // async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: nofile,
                rlim_max: nofile,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            Ok(())
        });
    }
    let child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("listening for HTTP")
    {
        assert!(Instant::now() < deadline, "gateway did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, log)
}

/// Sends PING on a raw backend connection.
fn ping(s: &mut UnixStream) {
    s.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
}

/// Waits up to `limit` for `+PONG`.
fn ponged(s: &mut UnixStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut reply = [0u8; 7];
    s.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

#[test]
fn backends_queued_during_emfile_are_accepted() {
    const QUEUED: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, log) = start_with_fd_limit(dir.path(), 64);
    let socket = dir.path().join("gw.sock");

    // Fill the gateway's descriptors with backends until one is not
    // answered: that one waits in the kernel's backlog.
    let mut served = Vec::new();
    let mut queued = Vec::new();
    while queued.is_empty() {
        assert!(served.len() < 64, "the fd limit never bit");
        let mut s = UnixStream::connect(&socket).unwrap();
        ping(&mut s);
        // Generous: a loaded machine must not pass a served one as queued.
        if ponged(&mut s, Duration::from_secs(2)) {
            served.push(s);
        } else {
            queued.push(s);
        }
    }
    while queued.len() < QUEUED {
        let mut s = UnixStream::connect(&socket).unwrap();
        ping(&mut s);
        queued.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("os error 24"),
        "the gateway ran out of descriptors"
    );
    // Free more descriptors than are queued; nobody new connects.
    assert!(served.len() > QUEUED + 8, "only {} served", served.len());
    served.truncate(served.len() - QUEUED - 8);

    let started = Instant::now();
    for (i, s) in queued.iter_mut().enumerate() {
        let left = Duration::from_secs(5).saturating_sub(started.elapsed());
        assert!(
            ponged(s, left.max(Duration::from_millis(1))),
            "queued backend {i} of {QUEUED} not answered within 5 s of fds being freed"
        );
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let warnings = text.lines().filter(|l| l.contains("os error 24")).count();
    assert_eq!(warnings, 1, "EMFILE is logged once per episode:\n{text}");
}
