//! The floor: a server that does nothing but the writes. It accepts SSE
//! streams, WebSocket upgrades and long-polls, and for each line on its
//! control socket writes one prebuilt event to every client: an SSE
//! `data:` event, a WebSocket text frame, or a whole HTTP response with a
//! Content-Length. No parsing beyond the request head, no queues, no
//! mailbox: what is left is the cost of the writes themselves, the bound no
//! real server can beat.
//!
//! It writes with as many threads as cometbox has workers in the bench
//! (`--threads`, default 2): clients are dealt round-robin to the writer
//! threads, and each event is handed to every other writer before the
//! control thread writes its own share, so the shares are written at once.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How a client waits, from its request head.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Sse,
    Ws,
    LongPoll,
}

struct Client {
    stream: TcpStream,
    mode: Mode,
}

/// One message in each framing, built once and written to every client.
struct Event {
    sse: Vec<u8>,
    ws: Vec<u8>,
    long_poll: Vec<u8>,
}

impl Event {
    fn new(line: &str) -> Event {
        let mut ws = vec![0x81];
        match line.len() {
            n if n < 126 => ws.push(n as u8),
            n if n < 65536 => {
                ws.push(126);
                ws.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                ws.push(127);
                ws.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        ws.extend_from_slice(line.as_bytes());
        let body = format!("{{\"messages\":[{{\"data\":\"{line}\"}}]}}");
        let long_poll = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-cache\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        Event {
            sse: format!("data: {line}\n\n").into_bytes(),
            ws,
            long_poll: long_poll.into_bytes(),
        }
    }
}

/// Writes `event` to each client of one share; drops those that fail.
fn write_share(clients: &Mutex<Vec<Client>>, event: &Event) {
    let mut scratch = [0u8; 4096];
    let mut clients = clients.lock().unwrap();
    clients.retain_mut(|c| match c.mode {
        Mode::Sse => c.stream.write_all(&event.sse).is_ok(),
        Mode::Ws => c.stream.write_all(&event.ws).is_ok(),
        Mode::LongPoll => {
            // Take the re-poll (already queued: the bench re-polls before
            // the next publish) without blocking, then answer it.
            let fd = c.stream.as_raw_fd();
            let n = unsafe {
                libc::recv(
                    fd,
                    scratch.as_mut_ptr().cast(),
                    scratch.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            n != 0 && c.stream.write_all(&event.long_poll).is_ok()
        }
    });
}

/// Reads one request head (the clients send it at once and wait) and
/// answers what the stream needs before its first event.
fn handshake(mut s: TcpStream) -> Option<Client> {
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut head = Vec::new();
    let mut chunk = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let mode = if text.contains("\r\nupgrade: websocket") {
        Mode::Ws
    } else if text.contains("text/event-stream") {
        Mode::Sse
    } else {
        Mode::LongPoll
    };
    s.set_nodelay(true).ok()?;
    match mode {
        // The accept key is not computed: the bench's client does not check it.
        Mode::Ws => s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n").ok()?,
        Mode::Sse => s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n").ok()?,
        Mode::LongPoll => {}
    }
    Some(Client { stream: s, mode })
}

pub fn floor(port: u16, control: &str, threads: usize) {
    let threads = threads.max(1);
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    // std listens with a backlog of 128; take what the others have.
    unsafe { libc::listen(listener.as_raw_fd(), 16384) };
    eprintln!(
        "floor listening on {} with {threads} writer threads",
        listener.local_addr().unwrap()
    );
    let shares: Vec<Arc<Mutex<Vec<Client>>>> = (0..threads).map(|_| Arc::default()).collect();
    let accepting = shares.clone();
    std::thread::spawn(move || {
        let mut next = 0;
        for stream in listener.incoming().flatten() {
            if let Some(client) = handshake(stream) {
                accepting[next % accepting.len()]
                    .lock()
                    .unwrap()
                    .push(client);
                next += 1;
            }
        }
    });
    // Writers 1..T each wait for events on a channel; the control thread
    // is writer 0.
    let mut senders = Vec::new();
    for share in &shares[1..] {
        let share = share.clone();
        let (tx, rx) = mpsc::channel::<Arc<Event>>();
        senders.push(tx);
        std::thread::spawn(move || {
            for event in rx {
                write_share(&share, &event);
            }
        });
    }
    let _ = std::fs::remove_file(control);
    let control = UnixListener::bind(control).expect("bind the control socket");
    for conn in control.incoming().flatten() {
        for line in BufReader::new(conn).lines() {
            let Ok(line) = line else { break };
            let event = Arc::new(Event::new(&line));
            for tx in &senders {
                let _ = tx.send(event.clone());
            }
            write_share(&shares[0], &event);
        }
    }
}
