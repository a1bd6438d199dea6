//! Fan-out makes no per-subscriber copy: publishing a 64 KiB message to
//! 1,000 waiting long-polls allocates far less than 1,000 × 64 KiB in the
//! gateway.
//!
//! A counting global allocator sees every thread in the process, the test's
//! own included. The test's threads mark themselves as not counted (a
//! `const` thread-local, which allocates nothing), so what is counted is
//! what the gateway's acceptor and worker threads allocate between the
//! publish and the moment the last subscriber has read its answer.

mod common;

use common::encode_command;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static BYTES: AtomicUsize = AtomicUsize::new(0);
static CALLS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static NOT_COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn count(size: usize) {
    if COUNTING.load(Ordering::Relaxed) && !NOT_COUNTED.with(Cell::get) {
        BYTES.fetch_add(size, Ordering::Relaxed);
        CALLS.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Growing counts what is new; a copy of the old part is no new memory.
        count(new_size.saturating_sub(layout.size()));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const SUBSCRIBERS: usize = 1000;
const PAYLOAD: usize = 64 * 1024;

/// Reads one RESP integer reply (`:N\r\n`).
fn read_integer(s: &mut UnixStream) -> i64 {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        s.read_exact(&mut byte).unwrap();
        line.push(byte[0]);
    }
    assert_eq!(line[0], b':', "{:?}", String::from_utf8_lossy(&line));
    std::str::from_utf8(&line[1..line.len() - 2])
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn publishing_64k_to_1000_waiting_polls_copies_nothing_per_subscriber() {
    NOT_COUNTED.with(|c| c.set(true));
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("backend.sock");
    let config = cometbox::Config::parse_str(
        &format!(
            "server.port = 0\nserver.workers = 2\nmailbox.backend-socket = \"{}\"\n",
            socket.display()
        ),
        &dir.path().join("gateway.conf"),
    )
    .unwrap();
    let gateway = cometbox::Gateway::start(config).unwrap();
    let addr = gateway.http_addr();

    let mut polls: Vec<TcpStream> = (0..SUBSCRIBERS)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /mailbox/big HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    let mut backend = UnixStream::connect(&socket).unwrap();
    let numsub = encode_command(&[b"PUBSUB", b"NUMSUB", b"big"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        backend.write_all(&numsub).unwrap();
        // `*2\r\n$3\r\nbig\r\n` then the integer.
        let mut head = [0u8; 13];
        backend.read_exact(&mut head).unwrap();
        if read_integer(&mut backend) == SUBSCRIBERS as i64 {
            break;
        }
        assert!(Instant::now() < deadline, "the polls never all waited");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Everything the window needs is allocated before it opens.
    let payload: Vec<u8> = (0..PAYLOAD).map(|i| b'a' + (i % 26) as u8).collect();
    let publish = encode_command(&[b"PUBLISH", b"big", &payload]);
    let mut answer = vec![0u8; PAYLOAD * 2];

    COUNTING.store(true, Ordering::SeqCst);
    backend.write_all(&publish).unwrap();
    let reached = read_integer(&mut backend);
    // Read every answer in full: the window closes when the last subscriber
    // has all its bytes, so the whole fan-out is inside it.
    for poll in &mut polls {
        let mut got = 0;
        let body_end = loop {
            let n = poll.read(&mut answer[got..]).unwrap();
            assert!(n > 0, "a poll was closed early");
            got += n;
            if let Some(head_end) = answer[..got].windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&answer[..head_end]).unwrap();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .expect("a Content-Length")
                    .parse()
                    .unwrap();
                if got >= head_end + 4 + length {
                    break head_end + 4 + length;
                }
            }
        };
        let body = &answer[..body_end];
        assert!(
            body.windows(PAYLOAD).any(|w| w == payload.as_slice()),
            "every subscriber gets the exact payload"
        );
    }
    COUNTING.store(false, Ordering::SeqCst);
    let bytes = BYTES.load(Ordering::SeqCst);
    let calls = CALLS.load(Ordering::SeqCst);
    assert_eq!(reached, SUBSCRIBERS as i64);

    // Per message: the payload as read from the backend socket, its
    // retained copy, and the long-poll encoding (a JSON string of it): a
    // handful of 64 KiB buffers, shared by every subscriber. Per subscriber:
    // a response head and queue bookkeeping, a few hundred bytes. One copy
    // per subscriber would be 1,000 × 64 KiB = 64 MiB; the bound is 1/40 of that.
    let bound = 8 * PAYLOAD + SUBSCRIBERS * 1024;
    eprintln!(
        "fan-out of {PAYLOAD} bytes to {SUBSCRIBERS} polls: {bytes} bytes in {calls} allocations \
         (bound {bound}; a copy each would be {})",
        SUBSCRIBERS * PAYLOAD
    );
    assert!(
        bytes < bound,
        "{bytes} bytes allocated: more than {bound}, so something is copied per subscriber"
    );
    gateway.stop();
}
