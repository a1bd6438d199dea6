//! The command line, config errors, SIGTERM and restarts.

mod common;

use common::*;
use std::io::{BufReader, Write};
use std::process::Command;
use std::time::{Duration, Instant};

fn check(config_text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.conf");
    std::fs::write(&path, config_text).unwrap();
    let out = Command::new(BIN)
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn help_and_version() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("cometbox "));
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("-c FILE"));
    let out = Command::new(BIN).arg("--bogus").output().unwrap();
    assert!(!out.status.success());
}

#[test]
fn shipped_config_is_valid() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.conf");
    let out = Command::new(BIN)
        .args(["-t", "-c", shipped])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn config_errors_name_file_line_and_key() {
    let (ok, _) = check("server.port = 8080\n");
    assert!(ok);
    let (ok, text) = check("server.port = 8080\nserver.prot = 1\n");
    assert!(!ok);
    assert!(text.contains("server.prot"), "{text}");
    assert!(
        text.contains("server.port"),
        "suggests the right key: {text}"
    );
    let (ok, text) = check("# fine\nserver.port = \n");
    assert!(!ok);
    assert!(
        text.contains("gateway.conf:2"),
        "names file and line: {text}"
    );
    let (ok, text) = check("server.port = \"eighty\"\n");
    assert!(!ok);
    assert!(text.contains("server.port"), "{text}");
    let (ok, _) = check("mailbox.backend-socket-mode = \"0668\"\n");
    assert!(!ok);
    let out = Command::new(BIN)
        .args(["-t", "-c", "/nonexistent/gateway.conf"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn config_include_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    std::fs::write(
        dir.path().join("conf.d/limits.conf"),
        "mailbox.max-messages = 2\n",
    )
    .unwrap();
    let main = format!(
        "{}include \"conf.d/limits.conf\"\n",
        base_config(dir.path())
    );
    let config = dir.path().join("gateway.conf");
    std::fs::write(&config, main).unwrap();
    let gw = Gateway::start_with(dir, config).unwrap();
    for i in 0..5 {
        gw.publish("inc", i.to_string().as_bytes());
    }
    assert_eq!(
        gw.get("/mailbox/inc").json()["messages"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn sigterm_answers_waiting_polls_removes_socket_and_exits() {
    let mut gw = Gateway::start("");
    let mut waiter = gw.connect();
    waiter
        .write_all(b"GET /mailbox/w HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    gw.wait_subscribers("w", 1);
    assert!(gw.socket.exists());
    let started = Instant::now();
    let status = gw
        .terminate(Duration::from_secs(10))
        .expect("exits after SIGTERM");
    assert!(status.success(), "{status}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let resp = read_response(&mut BufReader::new(waiter)).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["messages"], serde_json::json!([]));
    assert!(!gw.socket.exists(), "socket file removed");
    let log = gw.log();
    assert!(log.contains("shutting down"), "{log}");
}

#[test]
fn stale_socket_is_replaced_and_live_one_refused() {
    let mut first = Gateway::start("");
    let cursor = {
        first.publish("r", b"before");
        first.get("/mailbox/r").json()["cursor"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // A second gateway on the same socket is refused with a clear message.
    let same_socket = format!(
        "server.bind = \"127.0.0.1\"\nserver.port = 0\nmailbox.backend-socket = \"{}\"\n",
        first.socket.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.conf");
    std::fs::write(&config, &same_socket).unwrap();
    let err = Gateway::start_with(dir, config).err().expect("refused");
    assert!(
        err.contains("already running") || err.contains("another process"),
        "{err}"
    );

    // A crash leaves the socket file behind; a restart replaces it.
    first.signal(libc::SIGKILL);
    first.wait(Duration::from_secs(5)).unwrap();
    assert!(first.socket.exists(), "SIGKILL leaves the file");
    let dir2 = tempfile::tempdir().unwrap();
    let config2 = dir2.path().join("gateway.conf");
    std::fs::write(&config2, &same_socket).unwrap();
    let second = Gateway::start_with(dir2, config2).expect("restart over a stale socket");
    assert!(second.log().contains("stale"), "{}", second.log());
    // The old cursor belongs to the old process: missed, never silence.
    second.publish("r", b"after");
    let body = second.get(&format!("/mailbox/r?since={cursor}")).json();
    assert_eq!(body["missed"], true);
    assert_eq!(body["messages"][0]["data"], "after");
}

#[test]
fn refuses_a_taken_port() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let err = Gateway::try_start(&format!("server.port = {port}"))
        .err()
        .expect("fails");
    assert!(err.contains("cannot listen"), "{err}");
}

#[test]
fn raises_open_file_limit_and_warns_when_max_connections_exceeds_it() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.conf");
    let mut hard = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reads our own limit into a local struct.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut hard) };
    let too_many = hard.rlim_max + 1000;
    std::fs::write(
        &config,
        format!(
            "{}server.max-connections = {too_many}\n",
            base_config(dir.path())
        ),
    )
    .unwrap();
    let log = dir.path().join("log");
    let mut child = Command::new(BIN);
    child
        .arg("-c")
        .arg(&config)
        .stderr(std::fs::File::create(&log).unwrap());
    // SAFETY: pre_exec runs in the forked child before exec; setrlimit is
    // async-signal-safe. Start with a low soft limit, as many shells do.
    unsafe {
        child.pre_exec(|| {
            let mut l = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
            l.rlim_cur = 256;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
            Ok(())
        });
    }
    let mut child = child.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("listening") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        text.contains(&format!("limit is {}", hard.rlim_max)),
        "raised to the hard limit: {text}"
    );
    assert!(
        text.contains("WARN") && text.contains("server.max-connections"),
        "{text}"
    );
}
