//! The floor: a server that does nothing but the exchange itself. It
//! accepts SSE streams, WebSocket upgrades and long-polls, and for each
//! line on its control socket writes one prebuilt event to every client:
//! an SSE `data:` event, a WebSocket text frame, or a whole HTTP response
//! with a Content-Length. No parsing beyond the request head, no queues,
//! no mailbox: what is left is the cost of the writes themselves (and, for
//! a long-poll, of waiting for and reading its next request), the bound no
//! real server can beat.
//!
//! A long-poll's next request is taken as any event-loop server takes it:
//! its writer thread waits in epoll, woken as requests come in, and reads
//! each with one `read(2)`. (Until the run of 2026-12-02 it read the
//! re-poll at the next publish instead, without epoll, which no server
//! can do: it cannot know when the next message comes. That floor's
//! long-poll cost what its SSE did, and was no bound for a real one.)
//!
//! It writes with as many threads as cometbox has workers in the bench
//! (`--threads`, default 2): clients are dealt round-robin to the writer
//! threads, each an event loop, and each event is handed to every writer
//! at once, so the shares are written at once.

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A writer thread's own wake-ups: new clients or events in its inbox.
const WAKE: Token = Token(usize::MAX);

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

/// One writer thread's clients. Long-polls are registered with the
/// thread's `Poll` under their index; a long-poll is `held` from the
/// moment its request has been read until it is answered, and `owed` the
/// newest event if that came while it was not held (its re-poll still on
/// the way), as a server would answer a re-poll from its history.
#[derive(Default)]
struct Share {
    clients: Vec<Option<Client>>,
    held: Vec<bool>,
    owed: Vec<bool>,
    newest: Option<Arc<Event>>,
}

impl Share {
    /// Writes `event` to each client; drops those that fail. A long-poll
    /// is answered if its next request is in (the bench re-polls before
    /// the next publish), and owed the event if not.
    fn write(&mut self, event: &Arc<Event>, registry: &Registry) {
        self.newest = Some(event.clone());
        for (i, slot) in self.clients.iter_mut().enumerate() {
            let Some(c) = slot else { continue };
            let ok = match c.mode {
                Mode::Sse => c.stream.write_all(&event.sse).is_ok(),
                Mode::Ws => c.stream.write_all(&event.ws).is_ok(),
                Mode::LongPoll if self.held[i] => {
                    self.held[i] = false;
                    c.stream.write_all(&event.long_poll).is_ok()
                }
                Mode::LongPoll => {
                    self.owed[i] = true;
                    true
                }
            };
            if !ok {
                Share::drop_client(slot, registry);
            }
        }
    }

    /// A long-poll's next request arrived: read it (one read; a short read
    /// drains the socket) and hold it for the next event, or answer it at
    /// once with the event it is owed.
    fn read(&mut self, i: usize, registry: &Registry) {
        let mut scratch = [0u8; 4096];
        let Some(Some(c)) = self.clients.get_mut(i) else {
            return;
        };
        let mut requested = false;
        loop {
            match c.stream.read(&mut scratch) {
                Ok(0) => return Share::drop_client(&mut self.clients[i], registry),
                Ok(n) => {
                    requested = true;
                    if n < scratch.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Share::drop_client(&mut self.clients[i], registry),
            }
        }
        if !requested {
            return;
        }
        match &self.newest {
            Some(event) if self.owed[i] => {
                self.owed[i] = false;
                if c.stream.write_all(&event.long_poll).is_err() {
                    Share::drop_client(&mut self.clients[i], registry);
                }
            }
            _ => self.held[i] = true,
        }
    }

    fn adopt(&mut self, client: Client, registry: &Registry) {
        let i = self.clients.len();
        if client.mode == Mode::LongPoll
            && registry
                .register(
                    &mut SourceFd(&client.stream.as_raw_fd()),
                    Token(i),
                    Interest::READABLE,
                )
                .is_err()
        {
            return;
        }
        // Its first request was read by the handshake.
        self.held.push(client.mode == Mode::LongPoll);
        self.owed.push(false);
        self.clients.push(Some(client));
    }

    fn drop_client(slot: &mut Option<Client>, registry: &Registry) {
        if let Some(c) = slot.take()
            && c.mode == Mode::LongPoll
        {
            let _ = registry.deregister(&mut SourceFd(&c.stream.as_raw_fd()));
        }
    }
}

/// What the accepting and control threads hand a writer thread.
#[derive(Default)]
struct Inbox {
    clients: Vec<Client>,
    events: Vec<Arc<Event>>,
}

/// A writer thread: an event loop over its share's long-polls, woken by
/// the accepting thread (new clients) and the control thread (events).
struct Writer {
    inbox: Mutex<Inbox>,
    waker: Waker,
}

fn run_writer(mut poll: Poll, writer: Arc<Writer>) {
    let mut share = Share::default();
    let mut events = Events::with_capacity(1024);
    loop {
        if poll.poll(&mut events, None).is_err() {
            continue;
        }
        for event in events.iter() {
            if event.token() != WAKE {
                share.read(event.token().0, poll.registry());
            }
        }
        let inbox = std::mem::take(&mut *writer.inbox.lock().unwrap());
        for client in inbox.clients {
            share.adopt(client, poll.registry());
        }
        for event in &inbox.events {
            share.write(event, poll.registry());
        }
    }
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
        // Its next requests are read by its writer's event loop.
        Mode::LongPoll => s.set_nonblocking(true).ok()?,
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
    let writers: Vec<Arc<Writer>> = (0..threads)
        .map(|_| {
            let poll = Poll::new().expect("a poll");
            let waker = Waker::new(poll.registry(), WAKE).expect("a waker");
            let writer = Arc::new(Writer {
                inbox: Mutex::default(),
                waker,
            });
            let mine = writer.clone();
            std::thread::spawn(move || run_writer(poll, mine));
            writer
        })
        .collect();
    let accepting = writers.clone();
    std::thread::spawn(move || {
        let mut next = 0;
        for stream in listener.incoming().flatten() {
            if let Some(client) = handshake(stream) {
                let writer = &accepting[next % accepting.len()];
                writer.inbox.lock().unwrap().clients.push(client);
                let _ = writer.waker.wake();
                next += 1;
            }
        }
    });
    let _ = std::fs::remove_file(control);
    let control = UnixListener::bind(control).expect("bind the control socket");
    for conn in control.incoming().flatten() {
        for line in BufReader::new(conn).lines() {
            let Ok(line) = line else { break };
            let event = Arc::new(Event::new(&line));
            for writer in &writers {
                writer.inbox.lock().unwrap().events.push(event.clone());
                let _ = writer.waker.wake();
            }
        }
    }
}
