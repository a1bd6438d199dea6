//! The disk store in-process: restarts, crashes, torn and corrupt logs,
//! compaction, and the publishes that wait for the fsync.

use super::*;
use crate::store::{Attach, Cursor, Message, Register};

/// What the writer hands the workers, in the order it does.
#[derive(Debug, PartialEq)]
enum Handed {
    /// Seqs announced to a worker.
    Deliver(usize, Vec<u64>),
    /// A completed ticket, on a worker.
    Completed(usize, Ticket, Result<u64, StoreError>),
}

#[derive(Default)]
struct Collect(Mutex<Vec<Handed>>);

impl Outlet for Collect {
    fn deliver(&self, worker: usize, messages: Vec<Arc<Message>>) {
        let seqs = messages.iter().map(|m| m.seq()).collect();
        self.0.lock().unwrap().push(Handed::Deliver(worker, seqs));
    }

    fn attached(&self, _: usize, _: Ticket, _: Result<Attach, StoreError>) {
        unreachable!("the disk store answers attaches at once");
    }

    fn completed(&self, worker: usize, done: Vec<(Ticket, Result<u64, StoreError>)>) {
        let mut all = self.0.lock().unwrap();
        all.extend(
            done.into_iter()
                .map(|(t, r)| Handed::Completed(worker, t, r)),
        );
    }
}

/// A publish the store answered at once (`everysec`, `no`, a refusal).
fn ready(answer: Answer<Result<Published, StoreError>>) -> Result<Published, StoreError> {
    match answer {
        Answer::Ready(result) => result,
        Answer::Pending(ticket) => panic!("{ticket:?}: only `always` waits"),
    }
}

fn limits() -> StoreLimits {
    StoreLimits {
        max_messages: 100,
        message_ttl: Duration::from_secs(300),
        max_message_size: 1 << 20,
        max_mailboxes: 1000,
        max_subscribers: 0,
        max_mailbox_bytes: 1 << 24,
        max_memory: 1 << 28,
    }
}

fn open_with(dir: &Path, limits: StoreLimits, fsync: StoreFsync) -> (DiskStore, Arc<Collect>) {
    let collect = Arc::new(Collect::default());
    let store = DiskStore::open(dir, limits, 2, fsync, collect.clone()).expect("opens");
    (store, collect)
}

fn open(dir: &Path) -> DiskStore {
    open_with(dir, limits(), StoreFsync::EverySec).0
}

fn publish(store: &DiskStore, name: &str, payload: &str) -> Cursor {
    let p = store.publish(
        name.as_bytes(),
        payload.as_bytes().to_vec(),
        Instant::now(),
        0,
    );
    ready(p).expect("stored").message.cursor
}

fn read(store: &DiskStore, name: &str, since: Option<&Cursor>) -> (Vec<String>, bool) {
    let a = store
        .local()
        .attach(name, since, 0, Register::Never, Instant::now())
        .unwrap();
    let texts = a
        .backlog
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    (texts, a.missed)
}

#[test]
fn a_clean_restart_keeps_ids_payloads_and_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ids: Vec<Cursor> = (0..5)
        .map(|i| publish(&store, "a", &format!("m{i}")))
        .collect();
    publish(&store, "b", "gone");
    assert!(store.delete(b"b", Instant::now()));
    store.close();
    drop(store);

    let store = open(dir.path());
    let (texts, missed) = read(&store, "a", Some(&ids[1]));
    assert_eq!(
        (texts, missed),
        (vec!["m2".into(), "m3".into(), "m4".into()], false)
    );
    let a = store
        .local()
        .attach("a", None, 0, Register::Never, Instant::now())
        .unwrap();
    assert_eq!(a.backlog[0].id, ids[0].to_text().into_boxed_str());
    let next = publish(&store, "a", "m5");
    assert_eq!(
        (next.store, next.generation, next.seq),
        (ids[0].store, ids[0].generation, 6)
    );
    assert_eq!(read(&store, "b", None).0, Vec::<String>::new(), "DEL holds");
    assert_eq!(store.local().mailbox_count(), 1);
}

#[test]
fn after_a_crash_the_prefix_survives_and_a_cursor_past_it_is_missed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ids: Vec<Cursor> = (0..3)
        .map(|i| publish(&store, "a", &format!("m{i}")))
        .collect();
    store.sync();
    drop(store); // no close: the directory stays unclean
    let store = open(dir.path());
    assert_eq!(
        read(&store, "a", Some(&ids[0])),
        (vec!["m1".into(), "m2".into()], false)
    );
    let lost = Cursor { seq: 4, ..ids[2] };
    assert!(
        read(&store, "a", Some(&lost)).1,
        "it saw a message that was lost"
    );
    let next = publish(&store, "a", "new");
    assert_eq!(next.seq, 4);
    assert_ne!(
        next.generation, ids[0].generation,
        "id 4 of the old generation is never reused"
    );
    assert_eq!(
        read(&store, "a", Some(&ids[2])),
        (vec!["new".into()], false)
    );
    store.close();
    drop(store);
    // The move to the new generation is in the log too.
    let store = open(dir.path());
    assert_eq!(
        read(&store, "a", Some(&ids[2])),
        (vec!["new".into()], false)
    );
}

#[test]
fn a_torn_tail_costs_at_most_the_last_message() {
    for cut in 1..8 {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        for i in 0..10 {
            publish(&store, "a", &format!("message {i}"));
        }
        store.close();
        drop(store);
        let log = dir.path().join("log");
        let len = std::fs::metadata(&log).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
        f.set_len(len - cut).unwrap();
        drop(f);
        let store = open(dir.path());
        let a = store
            .local()
            .attach("a", None, 0, Register::Never, Instant::now());
        let backlog = a.unwrap().backlog;
        assert_eq!(backlog.len(), 9, "cut {cut}");
        assert_eq!(&*backlog[8].payload, b"message 8");
        // Someone may have seen the lost one: its id is not given again,
        // though the directory was marked clean.
        let next = publish(&store, "a", "new");
        assert_ne!(next.generation, backlog[0].cursor.generation, "cut {cut}");
        let lost = Cursor {
            seq: 10,
            ..backlog[0].cursor
        };
        assert!(read(&store, "a", Some(&lost)).1, "cut {cut}");
        assert_eq!(
            read(&store, "a", Some(&backlog[8].cursor)).0,
            vec!["new".to_string()]
        );
        store.close();
    }
}

#[test]
fn a_corrupt_record_in_the_middle_is_skipped_and_the_log_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let first = publish(&store, "a", "one");
    publish(&store, "a", "two-two-two");
    publish(&store, "a", "three");
    publish(&store, "b", "other");
    store.close();
    drop(store);
    let log = dir.path().join("log");
    let mut bytes = std::fs::read(&log).unwrap();
    let at = bytes.windows(11).position(|w| w == b"two-two-two").unwrap();
    bytes[at] ^= 0x20;
    std::fs::write(&log, &bytes).unwrap();
    let store = open(dir.path());
    let (texts, missed) = read(&store, "a", Some(&first));
    assert_eq!(
        (texts, missed),
        (vec!["three".into()], true),
        "seq 2 is lost"
    );
    assert_eq!(read(&store, "b", None).0, vec!["other".to_string()]);
    // The rewrite runs in the background; it is done soon.
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.stats.compactions.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "the damaged log was not rewritten"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    store.close();
    drop(store);
    let store = open(dir.path());
    assert_eq!(
        read(&store, "a", Some(&first)),
        (vec!["three".into()], true)
    );
}

#[test]
fn compaction_keeps_the_directory_small() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let payload = "x".repeat(995);
    for i in 0..20_000 {
        publish(&store, "busy", &format!("{i:05}{payload}"));
        if i % 1000 == 0 {
            publish(&store, &format!("side{i}"), "kept");
        }
    }
    store.close();
    let size = std::fs::metadata(dir.path().join("log")).unwrap().len();
    assert!(size < 3 << 20, "log is {size} bytes for 100 KB retained");
    assert!(store.stats.compactions.load(Ordering::Relaxed) >= 1);
    drop(store);
    let store = open(dir.path());
    let (texts, _) = read(&store, "busy", None);
    let numbers: Vec<String> = texts.iter().map(|t| t[..5].to_string()).collect();
    let wanted: Vec<String> = (19_900..20_000).map(|i| format!("{i:05}")).collect();
    assert_eq!(numbers, wanted, "the last 100, in order, once each");
    for i in (0..20_000).step_by(1000) {
        assert_eq!(
            read(&store, &format!("side{i}"), None).0,
            vec!["kept".to_string()]
        );
    }
    assert_eq!(store.local().position("busy", Instant::now()).seq, 20_000);
}

#[test]
fn ttl_holds_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut short = limits();
    short.message_ttl = Duration::from_secs(1);
    let (store, _) = open_with(dir.path(), short.clone(), StoreFsync::No);
    let old = Instant::now() - Duration::from_secs(2);
    ready(store.publish(b"a", b"old".to_vec(), old, 0)).unwrap();
    publish(&store, "a", "new");
    store.close();
    drop(store);
    let (store, _) = open_with(dir.path(), short, StoreFsync::No);
    assert_eq!(read(&store, "a", None).0, vec!["new".to_string()]);
}

#[test]
fn always_announces_and_answers_each_publish_after_the_fsync_of_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (store, collect) = open_with(dir.path(), limits(), StoreFsync::Always);
    // A subscriber of "a" on worker 1: the announcements go there.
    let now = Instant::now();
    store
        .local()
        .attach("a", None, 1, Register::Always, now)
        .unwrap();
    let mut tickets = Vec::new();
    for i in 0..50 {
        let worker = (i % 2) as usize;
        match store.publish(b"a", format!("{i}").into_bytes(), now, worker) {
            Answer::Pending(ticket) => tickets.push((worker, ticket)),
            Answer::Ready(r) => panic!("always waits for the disk: {r:?}"),
        }
    }
    store.sync();
    let got = collect.0.lock().unwrap();
    let announced: Vec<u64> = got
        .iter()
        .flat_map(|h| match h {
            Handed::Deliver(1, seqs) => seqs.clone(),
            Handed::Deliver(w, _) => panic!("no subscriber on worker {w}"),
            Handed::Completed(..) => Vec::new(),
        })
        .collect();
    assert_eq!(
        announced,
        (1..=50).collect::<Vec<_>>(),
        "each once, in order"
    );
    for (worker, ticket) in tickets {
        let at = got
            .iter()
            .position(|h| h == &Handed::Completed(worker, ticket, Ok(1)))
            .expect("each ticket completed on its worker with the receiver count");
        let seq = ticket_seq(&got, at);
        assert!(
            got[..at]
                .iter()
                .any(|h| matches!(h, Handed::Deliver(_, s) if s.contains(&seq))),
            "a publish is announced before it is acknowledged"
        );
    }
    assert!(store.stats.fsyncs.load(Ordering::Relaxed) <= 50);
}

/// The seq of the publish a completion answers: tickets are handed out in
/// publish order from 1, as seqs are, in this test.
fn ticket_seq(got: &[Handed], at: usize) -> u64 {
    match &got[at] {
        Handed::Completed(_, Ticket(t), _) => *t,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_second_gateway_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let collect = Arc::new(Collect::default());
    let e = DiskStore::open(dir.path(), limits(), 1, StoreFsync::No, collect)
        .err()
        .unwrap();
    assert!(e.contains("in use by another cometbox"), "{e}");
    store.close();
}
