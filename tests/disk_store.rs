//! The disk store (`mailbox.store = "disk"`) through the real binary:
//! graceful restarts, SIGKILL with each fsync policy, a torn log, the size
//! of the directory, DEL and TTL across restarts, and a store directory the
//! gateway cannot use.

mod common;

use common::*;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A directory that outlives the gateways started on it: the store, and
/// a fresh run directory (socket, log, config) for each start.
struct Site {
    root: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        Site {
            root: tempfile::tempdir().unwrap(),
        }
    }

    fn store(&self) -> PathBuf {
        self.root.path().join("store")
    }

    fn config(&self, run: &Path, extra: &str) -> PathBuf {
        let config = run.join("gateway.conf");
        let text = format!(
            "{}mailbox.poll-timeout = 1\nmailbox.store = \"disk\"\nmailbox.store-dir = \"{}\"\n{extra}\n",
            base_config(run),
            self.store().display()
        );
        std::fs::write(&config, text).unwrap();
        config
    }

    fn start(&self, extra: &str) -> Gateway {
        let run = tempfile::tempdir().unwrap();
        let config = self.config(run.path(), extra);
        Gateway::start_with(run, config).unwrap_or_else(|log| panic!("did not start:\n{log}"))
    }

    fn dir_bytes(&self) -> u64 {
        std::fs::read_dir(self.store())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    }
}

/// (id, data) of each message, the cursor, and whether it said missed.
fn poll(gw: &Gateway, mailbox: &str, since: Option<&str>) -> (Vec<(String, String)>, String, bool) {
    let target = match since {
        Some(c) => format!("/mailbox/{mailbox}?since={c}"),
        None => format!("/mailbox/{mailbox}"),
    };
    let body = gw.get(&target).json();
    let messages = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let text = |k: &str| m[k].as_str().unwrap().to_string();
            (text("id"), text("data"))
        })
        .collect();
    let cursor = body["cursor"].as_str().unwrap().to_string();
    (messages, cursor, body["missed"] == true)
}

fn seq_of(id: &str) -> u64 {
    id.rsplit_once('-').unwrap().1.parse().unwrap()
}

/// A cursor of the same incarnation `ahead` seqs after `id`.
fn ahead(id: &str, ahead: u64) -> String {
    let (epoch, seq) = id.rsplit_once('-').unwrap();
    format!("{epoch}-{:010}", seq.parse::<u64>().unwrap() + ahead)
}

fn stop(gw: &mut Gateway) {
    let status = gw
        .terminate(Duration::from_secs(10))
        .expect("exits on SIGTERM");
    assert!(status.success(), "{status}\n{}", gw.log());
}

fn kill(gw: &mut Gateway) {
    gw.signal(libc::SIGKILL);
    gw.wait(Duration::from_secs(10)).expect("dies");
}

#[test]
fn graceful_restart_keeps_ids_data_and_cursors() {
    let site = Site::new();
    let mut gw = site.start("");
    for i in 0..5 {
        gw.publish("alice", format!("m{i}").as_bytes());
    }
    gw.publish("bob", b"hello \x00 bob");
    let (before, cursor, _) = poll(&gw, "alice", None);
    let (two, _, _) = poll(&gw, "alice", Some(&before[1].0));
    assert_eq!(two.len(), 3);
    stop(&mut gw);

    let gw = site.start("");
    let (after, cursor_after, missed) = poll(&gw, "alice", None);
    assert_eq!(after, before, "same ids, same data");
    assert_eq!(cursor_after, cursor);
    assert!(!missed);
    // Cursors from before resume exactly.
    let (rest, _, missed) = poll(&gw, "alice", Some(&before[1].0));
    assert_eq!((rest, missed), (two, false));
    let (bob, _, _) = poll(&gw, "bob", None);
    assert_eq!(bob[0].1, "hello \u{0} bob");
    // New messages get ids after the old ones.
    gw.publish("alice", b"m5");
    let (new, _, missed) = poll(&gw, "alice", Some(&cursor));
    assert!(!missed);
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].0, ahead(&cursor, 1));
    assert!(gw.log().contains("records replayed"), "{}", gw.log());
}

/// Publishes `mailbox:n` for n = 0.. in pipelined batches until told to
/// stop or the gateway goes away; records each acknowledged n.
fn publisher(
    gw: &Gateway,
    mailboxes: usize,
    batch: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<u64>> {
    let mut backend = gw.backend();
    std::thread::spawn(move || {
        let mut acked = Vec::new();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let mut out = Vec::new();
            for i in 0..batch as u64 {
                let name = format!("flood{}", (n + i) % mailboxes as u64);
                let payload = format!("{name}:{}", n + i);
                out.extend(encode_command(&[
                    b"PUBLISH",
                    name.as_bytes(),
                    payload.as_bytes(),
                ]));
            }
            if backend.writer.write_all(&out).is_err() {
                break;
            }
            for i in 0..batch as u64 {
                match read_reply(&mut backend.reader) {
                    Ok(Reply::Int(_)) => acked.push(n + i),
                    _ => return acked,
                }
            }
            n += batch as u64;
        }
        acked
    })
}

/// Every message of `mailbox` is `mailbox:n` with n rising by one and seq
/// rising by one: a clean prefix, no hole, no duplicate, intact payloads.
fn assert_clean_prefix(messages: &[(String, String)], mailbox: &str, every: u64) {
    for pair in messages.windows(2) {
        assert_eq!(seq_of(&pair[1].0), seq_of(&pair[0].0) + 1, "{pair:?}");
        let n = |m: &(String, String)| -> u64 {
            let (name, n) = m.1.split_once(':').unwrap();
            assert_eq!(name, mailbox, "{m:?}");
            n.parse().unwrap()
        };
        assert_eq!(n(&pair[1]), n(&pair[0]) + every, "{pair:?}");
    }
}

#[test]
fn sigkill_with_always_loses_no_acknowledged_message() {
    let site = Site::new();
    let extra = "mailbox.store-fsync = \"always\"\nmailbox.max-messages = 100000";
    let mut gw = site.start(extra);
    // Replies keep their order around a publish that waits for the disk.
    let mut backend = gw.backend();
    backend.send_raw(
        &[
            encode_command(&[b"PING"]),
            encode_command(&[b"PUBLISH", b"order", b"x"]),
            encode_command(&[b"ECHO", b"after"]),
        ]
        .concat(),
    );
    assert_eq!(backend.read(), Reply::Simple("PONG".into()));
    assert_eq!(backend.read(), Reply::Int(0));
    assert_eq!(backend.read(), Reply::Bulk(Some(b"after".to_vec())));

    let stop_flag = Arc::new(AtomicBool::new(false));
    let flood = publisher(&gw, 1, 20, stop_flag.clone());
    std::thread::sleep(Duration::from_millis(700));
    kill(&mut gw);
    let acked = flood.join().unwrap();
    assert!(acked.len() > 20, "some publishes were acknowledged");

    let gw = site.start(extra);
    let (messages, _, _) = poll(&gw, "flood0", None);
    let kept: std::collections::HashSet<String> = messages.iter().map(|m| m.1.clone()).collect();
    for n in &acked {
        assert!(
            kept.contains(&format!("flood0:{n}")),
            "acknowledged {n} is lost"
        );
    }
    assert_clean_prefix(&messages, "flood0", 1);
    assert!(gw.log().contains("not shut down cleanly"), "{}", gw.log());
}

/// With `always` a publish is announced by the store's writer after the
/// fsync (the late-reply path cluster mode uses too), not by the worker:
/// waiting subscribers on every worker still get it, once each, and the
/// reply counts them.
#[test]
fn always_delivers_to_waiting_subscribers_on_every_worker_after_the_fsync() {
    let site = Site::new();
    let gw = site.start("mailbox.store-fsync = \"always\"\nmailbox.poll-timeout = 10");
    // Long-polls on several connections, so both workers hold some.
    let waiting: Vec<_> = (0..6)
        .map(|_| {
            let addr = gw.addr;
            std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
                s.write_all(b"GET /mailbox/live HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    .unwrap();
                read_response(&mut BufReader::new(s))
                    .expect("a response")
                    .json()
            })
        })
        .collect();
    gw.wait_subscribers("live", 6);
    assert_eq!(gw.publish("live", b"on disk first"), 6);
    for poll in waiting {
        let body = poll.join().unwrap();
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 1, "{body}");
        assert_eq!(messages[0]["data"], "on disk first");
        assert_ne!(body["missed"], true, "{body}");
    }
    let (messages, _, _) = poll(&gw, "live", None);
    assert_eq!(messages.len(), 1, "stored once");
}

#[test]
fn sigkill_in_a_pipelined_flood_with_everysec_leaves_a_clean_prefix() {
    let site = Site::new();
    let extra = "mailbox.max-messages = 1000000";
    let mut gw = site.start(extra);
    // A subscriber follows one mailbox and remembers the last id it saw.
    let seen = Arc::new(Mutex::new(None::<String>));
    let follower = {
        let (seen, addr) = (seen.clone(), gw.addr);
        std::thread::spawn(move || {
            let mut cursor: Option<String> = None;
            loop {
                let target = match &cursor {
                    Some(c) => format!("/mailbox/flood0?since={c}"),
                    None => "/mailbox/flood0".to_string(),
                };
                let Ok(mut s) = std::net::TcpStream::connect(addr) else {
                    return;
                };
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let req = format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
                if s.write_all(req.as_bytes()).is_err() {
                    return;
                }
                let Ok(r) = read_response(&mut BufReader::new(s)) else {
                    return;
                };
                let Ok(body) = serde_json::from_slice::<serde_json::Value>(&r.body) else {
                    return;
                };
                if let Some(last) = body["messages"].as_array().and_then(|m| m.last()) {
                    *seen.lock().unwrap() = Some(last["id"].as_str().unwrap().to_string());
                }
                cursor = body["cursor"].as_str().map(str::to_string);
            }
        })
    };
    let stop_flag = Arc::new(AtomicBool::new(false));
    let flood = publisher(&gw, 4, 200, stop_flag.clone());
    std::thread::sleep(Duration::from_millis(1500));
    kill(&mut gw);
    let acked = flood.join().unwrap();
    follower.join().unwrap();
    assert!(
        acked.len() > 1000,
        "the flood ran ({} acknowledged)",
        acked.len()
    );

    let gw = site.start(extra);
    let mut survived = 0;
    for m in 0..4 {
        let name = format!("flood{m}");
        let (messages, _, missed) = poll(&gw, &name, None);
        assert!(!missed);
        assert_clean_prefix(&messages, &name, 4);
        if let Some(first) = messages.first() {
            assert_eq!(seq_of(&first.0), 1, "the prefix starts at the start");
            let last = &messages.last().unwrap().0;
            // A cursor past what survived is told `missed`; the last one
            // that survived is not.
            assert!(
                poll(&gw, &name, Some(&ahead(last, 1))).2,
                "{name} past {last}"
            );
            let (none, _, missed) = poll(&gw, &name, Some(last));
            assert!(none.is_empty() && !missed);
        }
        survived += messages.len();
    }
    assert!(survived > 0);
    // What the subscriber saw either survived (no missed) or is missed.
    if let Some(seen) = seen.lock().unwrap().clone() {
        let (messages, _, _) = poll(&gw, "flood0", None);
        let last_kept = seq_of(&messages.last().unwrap().0);
        let (_, _, missed) = poll(&gw, "flood0", Some(&seen));
        assert_eq!(
            missed,
            seq_of(&seen) > last_kept,
            "seen {seen}, kept up to {last_kept}"
        );
    }
    // New publishes work, with ids after what survived.
    let (before, _, _) = poll(&gw, "flood1", None);
    gw.publish("flood1", b"flood1:after");
    let (after, _, _) = poll(&gw, "flood1", Some(&before.last().unwrap().0));
    assert_eq!(after.len(), 1);
    assert_eq!(seq_of(&after[0].0), seq_of(&before.last().unwrap().0) + 1);
    assert_ne!(
        after[0].0,
        ahead(&before.last().unwrap().0, 1),
        "a new generation"
    );
}

#[test]
fn truncating_the_last_bytes_of_the_log_costs_at_most_the_last_message() {
    let site = Site::new();
    let mut gw = site.start("");
    for i in 0..20 {
        gw.publish("torn", format!("message number {i}").as_bytes());
    }
    stop(&mut gw);
    let log = site.store().join("log");
    let len = std::fs::metadata(&log).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
    file.set_len(len - 5).unwrap();
    drop(file);
    let gw = site.start("");
    let (messages, _, _) = poll(&gw, "torn", None);
    assert_eq!(messages.len(), 19);
    assert_eq!(messages[18].1, "message number 18");
    assert!(gw.log().contains("torn record"), "{}", gw.log());
}

#[test]
fn twenty_thousand_publishes_through_a_100_message_mailbox_leave_a_small_directory() {
    let site = Site::new();
    let mut gw = site.start("mailbox.max-messages = 100");
    let payload = vec![b'k'; 1024];
    let mut backend = gw.backend();
    for _ in 0..20 {
        let batch: Vec<u8> = (0..1000)
            .flat_map(|_| encode_command(&[b"PUBLISH", b"busy", &payload]))
            .collect();
        backend.send_raw(&batch);
        for _ in 0..1000 {
            assert_eq!(backend.read(), Reply::Int(0));
        }
    }
    // 20 MB went through; about 100 KB is retained.
    let bound = 3 * 1024 * 1024;
    let deadline = Instant::now() + Duration::from_secs(5);
    while site.dir_bytes() > bound && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        site.dir_bytes() <= bound,
        "{} bytes while running",
        site.dir_bytes()
    );
    stop(&mut gw);
    assert!(
        site.dir_bytes() <= bound,
        "{} bytes after",
        site.dir_bytes()
    );
    let gw = site.start("mailbox.max-messages = 100");
    let (messages, _, _) = poll(&gw, "busy", None);
    assert_eq!(messages.len(), 100);
    assert_eq!(seq_of(&messages[99].0), 20_000);
}

#[test]
fn del_and_ttl_hold_across_restarts() {
    let site = Site::new();
    let extra = "mailbox.message-ttl = 2";
    let mut gw = site.start(extra);
    gw.publish("deleted", b"secret");
    let (old, _, _) = poll(&gw, "deleted", None);
    let mut backend = gw.backend();
    assert_eq!(backend.call(&[b"DEL", b"deleted"]), Reply::Int(1));
    gw.publish("ttl", b"expires");
    std::thread::sleep(Duration::from_millis(2200));
    gw.publish("ttl", b"fresh");
    stop(&mut gw);

    let mut gw = site.start(extra);
    let (messages, _, _) = poll(&gw, "deleted", None);
    assert!(messages.is_empty(), "a deleted mailbox does not come back");
    assert!(
        poll(&gw, "deleted", Some(&old[0].0)).2,
        "its cursors are missed"
    );
    let (messages, _, _) = poll(&gw, "ttl", None);
    let data: Vec<&str> = messages.iter().map(|m| m.1.as_str()).collect();
    assert_eq!(data, vec!["fresh"], "an expired message does not come back");
    // The same after a crash.
    kill(&mut gw);
    let gw = site.start(extra);
    assert!(poll(&gw, "deleted", None).0.is_empty());
    // ("fresh" may have expired by now too; "expires" is gone for good.)
    assert!(poll(&gw, "ttl", None).0.iter().all(|m| m.1 == "fresh"));
}

#[test]
fn an_unusable_store_dir_is_a_clear_error_at_start_and_under_t() {
    let site = Site::new();
    let file = site.root.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let run = tempfile::tempdir().unwrap();
    let config = run.path().join("gateway.conf");
    let text = format!(
        "{}mailbox.store = \"disk\"\nmailbox.store-dir = \"{}\"\n",
        base_config(run.path()),
        file.join("store").display()
    );
    std::fs::write(&config, text).unwrap();
    let out = Command::new(BIN)
        .arg("-t")
        .arg("-c")
        .arg(&config)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(
        said.contains("mailbox.store-dir") && said.contains("not a directory"),
        "{said}"
    );
    let err = Gateway::start_with(run, config).err().expect("refused");
    assert!(
        err.contains("mailbox.store-dir") && err.contains("plain-file"),
        "{err}"
    );

    // A directory it may not write (when not root, who may write anywhere).
    if unsafe { libc::geteuid() } != 0 {
        use std::os::unix::fs::PermissionsExt;
        let locked = site.root.path().join("locked");
        std::fs::create_dir(&locked).unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o500)).unwrap();
        let run = tempfile::tempdir().unwrap();
        let config = run.path().join("gateway.conf");
        let text = format!(
            "{}mailbox.store = \"disk\"\nmailbox.store-dir = \"{}\"\n",
            base_config(run.path()),
            locked.display()
        );
        std::fs::write(&config, text).unwrap();
        let out = Command::new(BIN)
            .arg("-t")
            .arg("-c")
            .arg(&config)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success() && said.contains("cannot be written"),
            "{said}"
        );
        let err = Gateway::start_with(run, config).err().expect("refused");
        assert!(err.contains("mailbox.store-dir"), "{err}");
    }
}

/// The disk store is for one gateway; a cluster keeps its mail in Redis.
#[test]
fn the_disk_store_with_cluster_redis_is_refused_at_start_and_under_t() {
    let site = Site::new();
    let run = tempfile::tempdir().unwrap();
    let config = site.config(run.path(), "cluster.redis = \"redis://127.0.0.1:1\"");
    let out = Command::new(BIN)
        .arg("-t")
        .arg("-c")
        .arg(&config)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("mailbox.store") && said.contains("cluster.redis"),
        "{said}"
    );
    let err = Gateway::start_with(run, config).err().expect("refused");
    assert!(err.contains("cannot be combined"), "{err}");
    assert!(!site.store().exists(), "nothing was created");
}
