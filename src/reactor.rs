//! A worker: one thread, one mio `Poll`, the connections it owns (a slab of
//! HTTP clients and one of backend connections), its subscriber lists and
//! its clock. Workers share only the mailbox store, the metrics and each
//! other's inboxes (crossbeam channels plus a mio `Waker`).
//!
//! One turn of the loop: wait for events; handle them (reads parse and
//! answer requests, backend commands publish into the store and collect
//! announcements per worker); post the announcements, one batch per worker;
//! answer the long-polls that became ready; run the timer sweep; reap closed
//! connections. See docs/architecture.md.

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::{debug, warn};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::backend::{BackendConn, BackendStream};
use crate::config::Config;
use crate::conn::{Conn, Part, Phase, ReplyTo, StreamState, Subscription, WsState};
use crate::http::{self, DateCache, Method, Parsed, Request, Status};
use crate::mailbox::{Attach, Cursor, Message, Register, Store};
use crate::metrics::{self, Metrics};
use crate::transport::encode::{self, Encoding};
use crate::transport::websocket::{self, Inbound, InboundDecoder};
use crate::transport::{self, Cors, IFRAME_PADDING, StreamKind, Transport};

pub const WAKER: Token = Token(usize::MAX);
/// The shared HTTP listener. Even, like connection tokens: checked first.
const LISTENER: Token = Token(usize::MAX - 1);

/// Timers are checked by a sweep over the connection table this often,
/// rather than by a timer per connection (see STYLE.md: Pushpin's approach).
const TICK_MS: u64 = 250;

/// Bytes read from one socket per event before others get a turn; the rest
/// is read on the next loop turn (edge-triggered, so we remember to).
const READ_BUDGET: usize = 256 * 1024;

/// Scratch read size: a whole request head fits, as do many pipelined ones.
const READ_CHUNK: usize = 16 * 1024;

/// Client WebSocket messages are ignored for now; anything larger than this
/// is refused (1009) rather than skipped forever.
const WS_MAX_CLIENT_MESSAGE: usize = 64 * 1024;

/// A backend that does not read its replies stops being read once this much
/// is waiting for it (like Redis' client output buffer limit, but pausing
/// instead of disconnecting: the backend is trusted).
const BACKEND_MAX_PENDING_REPLIES: usize = 1 << 20;

pub enum ToWorker {
    Backend(BackendStream),
    Deliver(Vec<Arc<Message>>),
    Shutdown,
}

/// The handle other threads hold on a worker.
pub struct Peer {
    tx: Sender<ToWorker>,
    waker: Waker,
    /// A wake is already on its way: several posts cost one eventfd write.
    wake_pending: AtomicBool,
}

impl Peer {
    pub fn new(tx: Sender<ToWorker>, waker: Waker) -> Peer {
        Peer {
            tx,
            waker,
            wake_pending: AtomicBool::new(false),
        }
    }

    pub fn post(&self, message: ToWorker) {
        if self.tx.send(message).is_ok() && !self.wake_pending.swap(true, Ordering::AcqRel) {
            let _ = self.waker.wake();
        }
    }
}

/// Per-IP connection counts, touched only on accept and close.
#[derive(Default)]
pub struct IpLimiter {
    counts: Mutex<HashMap<IpAddr, u32>>,
}

impl IpLimiter {
    pub fn acquire(&self, ip: IpAddr, limit: usize) -> bool {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n as usize >= limit {
            return false;
        }
        *n += 1;
        true
    }

    pub fn release(&self, ip: IpAddr) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&ip);
            }
        }
    }
}

/// What all threads share.
pub struct Shared {
    pub config: Config,
    /// Token checks, when `auth.required` is on.
    pub auth: Option<crate::auth::Auth>,
    pub store: Store,
    pub peers: Vec<Peer>,
    pub metrics: Metrics,
    pub ip_limiter: IpLimiter,
    pub started: Instant,
}

/// Adds the listener to (or removes it from) this worker's epoll set with
/// EPOLLEXCLUSIVE, which mio does not expose: of the workers waiting, one is
/// woken per arrival instead of all of them. Edge-triggered, like mio's own
/// registrations; mio reads the token back from the event's data as usual.
fn watch_listener(
    poll: &Poll,
    listener: &mio::net::TcpListener,
    op: libc::c_int,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut event = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLEXCLUSIVE | libc::EPOLLET) as u32,
        u64: LISTENER.0 as u64,
    };
    // SAFETY: both descriptors are open for the duration of the call and
    // `event` is a valid epoll_event.
    let rc = unsafe { libc::epoll_ctl(poll.as_raw_fd(), op, listener.as_raw_fd(), &mut event) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn http_token(key: usize) -> Token {
    Token(key << 1)
}

fn backend_token(key: usize) -> Token {
    Token((key << 1) | 1)
}

pub struct Worker {
    id: usize,
    poll: Poll,
    inbox: Receiver<ToWorker>,
    shared: Arc<Shared>,
    conns: Slab<Conn>,
    backends: Slab<BackendConn>,
    /// Local subscribers per mailbox (keys into `conns`).
    subs: HashMap<Arc<str>, Vec<u32>>,
    /// Announcements collected this turn, per destination worker.
    outbox: Vec<Vec<Arc<Message>>>,
    ready_polls: Vec<usize>,
    fanout_keys: Vec<u32>,
    dead: Vec<usize>,
    dead_backends: Vec<usize>,
    /// Sockets whose read budget ran out: read again next turn.
    again: Vec<Token>,
    scratch: Vec<u8>,
    tail: Vec<u8>,
    body: Vec<u8>,
    /// Where idle connections' reads land; zeroed once.
    read_scratch: Box<[u8]>,
    date: DateCache,
    clock: Instant,
    now_ms: u64,
    next_tick: u64,
    /// Deliveries since the last tick, folded into the shared metrics.
    deliveries: u64,
    /// Set on SIGTERM: the time by which everything is closed.
    shutdown_deadline: Option<u64>,
    /// This worker's handle on the listening socket; None once shutting down.
    listener: Option<mio::net::TcpListener>,
    /// accept() failed for lack of file descriptors: retry on the next tick,
    /// since the edge-triggered listener will not report the waiting ones again.
    accept_blocked: bool,
}

impl Worker {
    pub fn new(
        id: usize,
        poll: Poll,
        inbox: Receiver<ToWorker>,
        listener: mio::net::TcpListener,
        shared: Arc<Shared>,
    ) -> io::Result<Worker> {
        watch_listener(&poll, &listener, libc::EPOLL_CTL_ADD)?;
        let workers = shared.peers.len();
        Ok(Worker {
            id,
            poll,
            inbox,
            shared,
            conns: Slab::new(),
            backends: Slab::new(),
            subs: HashMap::new(),
            outbox: (0..workers).map(|_| Vec::new()).collect(),
            ready_polls: Vec::new(),
            fanout_keys: Vec::new(),
            dead: Vec::new(),
            dead_backends: Vec::new(),
            again: Vec::new(),
            scratch: Vec::with_capacity(1024),
            tail: Vec::with_capacity(64),
            body: Vec::new(),
            read_scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            date: DateCache::default(),
            clock: Instant::now(),
            now_ms: 0,
            next_tick: TICK_MS,
            deliveries: 0,
            shutdown_deadline: None,
            listener: Some(listener),
            accept_blocked: false,
        })
    }

    fn now(&self) -> Instant {
        self.clock + Duration::from_millis(self.now_ms)
    }

    /// A Unix time (seconds) on the worker clock (ms since it started).
    fn unix_to_worker_ms(&self, unix_secs: u64) -> u64 {
        let now_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let until = unix_secs.saturating_mul(1000).saturating_sub(now_unix);
        self.now_ms + until
    }

    /// When a stream ends by itself: `mailbox.stream-max-duration` or the
    /// token's expiry, whichever comes first.
    fn stream_end(&self, token_expiry: Option<u64>) -> Option<u64> {
        let by_duration = self
            .shared
            .config
            .mailbox
            .stream_max_duration
            .map(|d| self.now_ms + Self::ms(d));
        match (by_duration, token_expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn ms(d: Duration) -> u64 {
        d.as_millis().min(u64::MAX as u128) as u64
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = if self.again.is_empty() {
                Duration::from_millis(self.next_tick.saturating_sub(self.now_ms))
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                log::error!("worker {}: poll failed: {e}", self.id);
                return;
            }
            self.now_ms = self.clock.elapsed().as_millis() as u64;
            for event in events.iter() {
                let token = event.token();
                if token == WAKER {
                    self.drain_inbox();
                } else if token == LISTENER {
                    self.accept_http();
                } else if token.0 & 1 == 0 {
                    self.http_event(
                        token.0 >> 1,
                        event.is_readable() || event.is_read_closed(),
                        event.is_writable(),
                    );
                } else {
                    self.backend_event(
                        token.0 >> 1,
                        event.is_readable() || event.is_read_closed(),
                        event.is_writable(),
                    );
                }
            }
            for token in std::mem::take(&mut self.again) {
                if token.0 & 1 == 0 {
                    self.http_event(token.0 >> 1, true, false);
                } else {
                    self.backend_event(token.0 >> 1, true, false);
                }
            }
            self.post_outbox();
            self.answer_ready_polls();
            if self.now_ms >= self.next_tick {
                self.tick();
            }
            self.reap();
            if let Some(deadline) = self.shutdown_deadline
                && ((self.conns.is_empty() && self.backends.is_empty()) || self.now_ms >= deadline)
            {
                debug!(
                    "worker {} stopped with {} connections left",
                    self.id,
                    self.conns.len()
                );
                return;
            }
        }
    }

    // ----- inbox -------------------------------------------------------

    fn drain_inbox(&mut self) {
        self.shared.peers[self.id]
            .wake_pending
            .store(false, Ordering::Release);
        while let Ok(message) = self.inbox.try_recv() {
            match message {
                ToWorker::Backend(sock) => self.adopt_backend(sock),
                ToWorker::Deliver(batch) => {
                    for message in &batch {
                        self.deliver(message);
                    }
                }
                ToWorker::Shutdown => self.begin_shutdown(),
            }
        }
    }

    /// Accepts browsers until the backlog is empty. Each arrival wakes one
    /// waiting worker, so the connection is served by the thread that took it.
    fn accept_http(&mut self) {
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            let (mut sock, addr) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    // EMFILE/ENFILE: the connections wait in the kernel's
                    // backlog until descriptors free up.
                    warn!("accept failed: {e}; retrying shortly");
                    self.accept_blocked = true;
                    return;
                }
            };
            if crate::server::admit(&self.shared, &mut sock, addr) {
                self.adopt_http(sock, addr);
            }
        }
    }

    fn adopt_http(&mut self, mut sock: TcpStream, addr: SocketAddr) {
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut sock,
            http_token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("cannot register connection from {addr}: {e}");
            self.release_http_slot(addr.ip());
            return;
        }
        let deadline = self.now_ms + Self::ms(self.shared.config.server.header_timeout);
        entry.insert(Conn::new(sock, addr.ip(), deadline));
        if self.shutdown_deadline.is_some() {
            self.dead.push(key);
        }
    }

    fn adopt_backend(&mut self, mut sock: BackendStream) {
        let entry = self.backends.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut sock,
            backend_token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("cannot register backend connection: {e}");
            return;
        }
        let config = &self.shared.config.mailbox;
        entry.insert(BackendConn::new(sock, key as u64, config));
        metrics::inc(&self.shared.metrics.backend_connections_open);
        metrics::inc(&self.shared.metrics.backend_connections_total);
        // A backend may have written before we registered it.
        self.again.push(backend_token(key));
    }

    // ----- HTTP connections ----------------------------------------------

    fn http_event(&mut self, key: usize, readable: bool, writable: bool) {
        let Some(conn) = self.conns.get_mut(key) else {
            return; // a stale event for a slot already reaped
        };
        if conn.dead {
            return;
        }
        if writable {
            match conn.out.flush(&mut conn.sock) {
                Ok(true) if matches!(conn.phase, Phase::Draining) => self.kill(key),
                Ok(_) => {}
                Err(_) => self.kill(key),
            }
        }
        if readable && !self.conns[key].dead {
            self.http_read(key);
        }
    }

    fn http_read(&mut self, key: usize) {
        if self.conns[key].inbuf.is_empty() {
            // The common case: a whole request (or nothing) in one read, into
            // the worker's scratch, zeroed once at start-up. A short read
            // means the socket is drained: new data brings a new event.
            let mut scratch = std::mem::take(&mut self.read_scratch);
            let conn = &mut self.conns[key];
            let read = loop {
                match conn.sock.read(&mut scratch) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    other => break other,
                }
            };
            let n = match read {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.read_scratch = scratch;
                    return;
                }
                Err(_) => 0,
            };
            if n == 0 {
                conn.peer_closed = true;
            }
            if n < scratch.len() {
                let consumed = self.consume_input(key, &mut scratch[..n]);
                self.keep_tail(key, &scratch[consumed..n]);
                self.read_scratch = scratch;
                return;
            }
            // The scratch filled up: more is waiting. Go on with a buffer of
            // the connection's own.
            self.keep_tail(key, &scratch[..]);
            self.read_scratch = scratch;
        }
        let conn = &mut self.conns[key];
        let mut buf = std::mem::take(&mut conn.inbuf);
        let cfg = &self.shared.config.server;
        let limit = cfg.max_request_header_size + cfg.max_request_body_size + READ_CHUNK;
        let mut eof = false;
        let mut budget = READ_BUDGET;
        loop {
            if buf.len() >= limit || budget == 0 {
                // Stop draining: either parsing will refuse this (431/413),
                // or it is a WebSocket/pipelining burst we take in turns.
                self.again.push(http_token(key));
                break;
            }
            let start = buf.len();
            buf.resize(start + READ_CHUNK, 0);
            match conn.sock.read(&mut buf[start..]) {
                Ok(0) => {
                    buf.truncate(start);
                    eof = true;
                    break;
                }
                Ok(n) => {
                    buf.truncate(start + n);
                    budget = budget.saturating_sub(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    buf.truncate(start);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => buf.truncate(start),
                Err(_) => {
                    buf.truncate(start);
                    eof = true;
                    break;
                }
            }
        }
        if eof {
            conn.peer_closed = true;
        }
        let consumed = self.consume_input(key, &mut buf);
        self.restore_input(key, buf, consumed);
    }

    /// Keeps the unparsed tail of the scratch in the connection's own buffer.
    fn keep_tail(&mut self, key: usize, tail: &[u8]) {
        let header_timeout = Self::ms(self.shared.config.server.header_timeout);
        if let Some(conn) = self.conns.get_mut(key)
            && !conn.dead
            && !tail.is_empty()
        {
            conn.inbuf = tail.to_vec();
            if matches!(conn.phase, Phase::Head) {
                // The first bytes of a request: the header timeout runs from here.
                conn.deadline = self.now_ms + header_timeout;
            }
        }
    }

    /// Acts on buffered input according to the phase; returns bytes used.
    fn consume_input(&mut self, key: usize, buf: &mut [u8]) -> usize {
        if matches!(self.conns[key].phase, Phase::Draining) {
            // The last response is on its way; whatever else comes is moot,
            // and keeping it would make us re-read a full buffer forever.
            return buf.len();
        }
        let mut pos = self.process_requests(key, buf);
        let Some(conn) = self.conns.get(key) else {
            return buf.len();
        };
        if conn.dead {
            return buf.len();
        }
        if matches!(conn.phase, Phase::WebSocket(_)) {
            pos += self.websocket_input(key, &mut buf[pos..]);
        }
        let conn = &mut self.conns[key];
        if conn.peer_closed && !conn.dead {
            match conn.phase {
                // Nobody is left to read a held response or a stream.
                Phase::Held { .. } | Phase::Stream(_) | Phase::WebSocket(_) | Phase::Head => {
                    self.kill(key)
                }
                Phase::Draining => {}
            }
        } else if buf.len() - pos > self.shared.config.server.max_request_header_size
            && !matches!(conn.phase, Phase::Head | Phase::WebSocket(_))
        {
            // Pipelined bytes piling up behind a held response: abuse.
            self.kill(key);
        }
        pos
    }

    /// Puts the unparsed rest of the connection's own buffer back.
    fn restore_input(&mut self, key: usize, mut buf: Vec<u8>, consumed: usize) {
        if let Some(conn) = self.conns.get_mut(key)
            && !conn.dead
        {
            buf.drain(..consumed);
            if buf.is_empty() {
                buf = Vec::new(); // idle connections hold no buffer
            }
            conn.inbuf = buf;
        }
    }

    /// Parses and answers requests while the connection is between
    /// responses. Returns bytes used.
    fn process_requests(&mut self, key: usize, buf: &[u8]) -> usize {
        let mut pos = 0;
        let max_head = self.shared.config.server.max_request_header_size;
        let max_body = self.shared.config.server.max_request_body_size as u64;
        loop {
            let conn = &self.conns[key];
            if conn.dead || !matches!(conn.phase, Phase::Head) || pos >= buf.len() {
                return pos;
            }
            match http::parse_request(&buf[pos..], max_head) {
                Parsed::Partial => return pos,
                Parsed::Invalid(status, why) => {
                    metrics::inc(&self.shared.metrics.requests_rejected);
                    if status == Status::HeaderFieldsTooLarge {
                        metrics::inc(&self.shared.metrics.headers_too_large);
                    }
                    debug!("{}: bad request: {why}", conn.peer);
                    self.respond_error(key, status, why, true, false, &Cors::None);
                    return buf.len();
                }
                Parsed::Complete(req, head_len) => {
                    if req.content_length > max_body {
                        metrics::inc(&self.shared.metrics.requests_rejected);
                        metrics::inc(&self.shared.metrics.bodies_too_large);
                        self.respond_error(
                            key,
                            Status::PayloadTooLarge,
                            "request body too large",
                            true,
                            req.http11,
                            &Cors::None,
                        );
                        return buf.len();
                    }
                    let total = head_len + req.content_length as usize;
                    if buf.len() - pos < total {
                        return pos; // the body is still on its way
                    }
                    metrics::inc(&self.shared.metrics.requests_total);
                    self.handle_request(key, &req);
                    pos += total;
                }
            }
        }
    }

    fn handle_request(&mut self, key: usize, req: &Request<'_>) {
        let config = &self.shared.config;
        let cors = Cors::grant(req.origin, &config.mailbox.cors_origins);
        let keep_alive =
            req.keep_alive && self.shutdown_deadline.is_none() && !self.conns[key].peer_closed;
        let prefix = config.mailbox.url_prefix.as_bytes();
        let Some(raw_name) = req.path.strip_prefix(prefix) else {
            if let Some(script) = crate::transport::client_script(req.path)
                && matches!(req.method(), Method::Get | Method::Head)
            {
                return self.respond_client_script(key, req, script, keep_alive);
            }
            return self.respond_error(
                key,
                Status::NotFound,
                "not found",
                !keep_alive,
                req.http11,
                &cors,
            );
        };
        match req.method() {
            Method::Get | Method::Head => {}
            Method::Options => return self.respond_preflight(key, req, &cors, keep_alive),
            Method::Other => {
                return self.respond_error(
                    key,
                    Status::MethodNotAllowed,
                    "use GET, HEAD or OPTIONS on a mailbox",
                    !keep_alive,
                    req.http11,
                    &cors,
                );
            }
        }
        let name = http::percent_decode(raw_name, false);
        if !crate::mailbox::is_valid_name(&name) {
            return self.respond_error(
                key,
                Status::BadRequest,
                "invalid mailbox name: use 1-200 characters of A-Z a-z 0-9 . _ : @ -",
                !keep_alive,
                req.http11,
                &cors,
            );
        }
        // Validated above: ASCII.
        let name = String::from_utf8(name).expect("mailbox names are ASCII");
        let choice = match transport::choose(req) {
            Ok(choice) => choice,
            Err((status, why)) => {
                return self.respond_error(key, status, why, !keep_alive, req.http11, &cors);
            }
        };
        let since = match &choice.since {
            None => None,
            Some(raw) => match Cursor::parse(raw) {
                Some(cursor) => Some(cursor),
                None => {
                    return self.respond_error(
                        key,
                        Status::BadRequest,
                        "unparsable cursor",
                        !keep_alive,
                        req.http11,
                        &cors,
                    );
                }
            },
        };
        // Tokens expire: what is held open ends then (streams close, polls
        // answer), and the client comes back with a fresh one.
        let mut expires_at = None;
        if let Some(auth) = &self.shared.auth
            && auth.needs_token(&name)
        {
            let token = crate::auth::token_from(
                req.authorization,
                choice.token.as_deref(),
                req.cookie,
                auth.cookie.as_deref(),
            );
            match auth.check(token, &name) {
                Ok(grant) => expires_at = Some(self.unix_to_worker_ms(grant.expires_at)),
                Err(denied) => {
                    let (status, extra): (Status, &[u8]) = if denied.is_forbidden() {
                        metrics::inc(&self.shared.metrics.requests_forbidden);
                        (Status::Forbidden, b"")
                    } else {
                        metrics::inc(&self.shared.metrics.requests_unauthorized);
                        (Status::Unauthorized, b"WWW-Authenticate: Bearer realm=\"cometbox\", error=\"invalid_token\"\r\n")
                    };
                    return self.respond_error_with(
                        key,
                        status,
                        denied.reason(),
                        !keep_alive,
                        req.http11,
                        &cors,
                        extra,
                    );
                }
            }
        }
        let reply = ReplyTo {
            http11: req.http11,
            keep_alive,
            cors,
            callback: choice.callback,
        };
        let head_only = req.method() == Method::Head;
        match choice.transport {
            Transport::WebSocket => self.start_websocket(key, req, &name, since, reply, expires_at),
            Transport::Stream(kind) => {
                self.start_stream(key, kind, &name, since, reply, head_only, expires_at)
            }
            Transport::LongPoll | Transport::Jsonp => {
                self.start_poll(key, &name, since, reply, head_only, expires_at)
            }
        }
    }

    fn attach(
        &mut self,
        key: usize,
        name: &str,
        since: Option<Cursor>,
        register: Register,
        reply: &ReplyTo,
    ) -> Option<Attach> {
        match self
            .shared
            .store
            .attach(name, since.as_ref(), self.id, register, self.now())
        {
            Ok(attach) => Some(attach),
            Err(e) => {
                let text = e.to_string();
                self.respond_error(
                    key,
                    Status::ServiceUnavailable,
                    &text,
                    !reply.keep_alive,
                    reply.http11,
                    &reply.cors,
                );
                None
            }
        }
    }

    /// Adds a registered subscriber to this worker's list for its mailbox.
    fn subscribe_local(&mut self, key: usize, name: &str, cursor: Cursor) {
        let (mailbox, list) = match self.subs.get_key_value(name) {
            Some((mailbox, _)) => {
                let mailbox = mailbox.clone();
                let list = self.subs.get_mut(name).expect("present");
                (mailbox, list)
            }
            None => {
                let mailbox: Arc<str> = Arc::from(name);
                (mailbox.clone(), self.subs.entry(mailbox).or_default())
            }
        };
        let slot = list.len() as u32;
        list.push(key as u32);
        self.conns[key].sub = Some(Subscription {
            mailbox,
            cursor,
            slot,
        });
    }

    /// Removes a connection from its mailbox, here and in the store.
    fn unsubscribe(&mut self, key: usize) {
        let Some(sub) = self.conns[key].sub.take() else {
            return;
        };
        if let Some(list) = self.subs.get_mut(&*sub.mailbox) {
            let slot = sub.slot as usize;
            debug_assert_eq!(list[slot], key as u32);
            list.swap_remove(slot);
            if let Some(&moved) = list.get(slot)
                && let Some(s) = self.conns[moved as usize].sub.as_mut()
            {
                s.slot = slot as u32;
            }
            if list.is_empty() {
                self.subs.remove(&*sub.mailbox);
            }
        }
        self.shared
            .store
            .detach(&sub.mailbox, self.id, 1, self.now());
    }

    // ----- long-poll -------------------------------------------------------

    fn start_poll(
        &mut self,
        key: usize,
        name: &str,
        since: Option<Cursor>,
        reply: ReplyTo,
        head_only: bool,
        expires_at: Option<u64>,
    ) {
        let register = if head_only {
            Register::Never
        } else {
            Register::IfIdle
        };
        let Some(attach) = self.attach(key, name, since, register, &reply) else {
            return;
        };
        if attach.registered {
            self.subscribe_local(key, name, attach.position);
            let conn = &mut self.conns[key];
            conn.phase = Phase::Held {
                reply,
                ready: None,
                ready_more: false,
            };
            let timeout = self.now_ms + Self::ms(self.shared.config.mailbox.poll_timeout);
            conn.deadline = expires_at.map_or(timeout, |e| e.min(timeout));
            metrics::inc(&self.shared.metrics.polls_waiting);
            return;
        }
        self.answer_poll(
            key,
            &reply,
            &attach.backlog,
            attach.missed,
            attach.position,
            head_only,
        );
    }

    /// Writes a long-poll (or JSONP) response and moves the connection on.
    fn answer_poll(
        &mut self,
        key: usize,
        reply: &ReplyTo,
        messages: &[Arc<Message>],
        missed: bool,
        cursor: Cursor,
        head_only: bool,
    ) {
        // The body is a list of parts: the messages' shared JSON encodings
        // between a few literal bytes. If the client reads slowly, the
        // messages wait by reference; nothing per response copies them.
        // (One message without `missed` is the message's own cached body.)
        let single = matches!(messages, [_] if !missed);
        self.body.clear();
        self.body.extend_from_slice(b"],\"cursor\":\"");
        cursor.write(&mut self.body);
        self.body.push(b'"');
        if missed {
            self.body.extend_from_slice(b",\"missed\":true");
        }
        self.body.push(b'}');
        let mut body: Vec<Part<'_>> =
            Vec::with_capacity(if single { 1 } else { messages.len() * 2 + 2 });
        if single {
            body.push(Part::Shared(&messages[0], Encoding::PollBody));
        } else {
            body.push(Part::Copy(b"{\"messages\":["));
            for (i, m) in messages.iter().enumerate() {
                if i > 0 {
                    body.push(Part::Copy(b","));
                }
                body.push(Part::Shared(m, Encoding::Json));
            }
            body.push(Part::Copy(&self.body));
        }
        let body_len: usize = body.iter().map(|p| p.len()).sum();
        let (prefix, suffix): (&[u8], &[u8]) = match &reply.callback {
            Some(cb) => (cb.as_bytes(), b");"),
            None => (b"", b""),
        };
        let wrap = if reply.callback.is_some() {
            prefix.len() + 1 + suffix.len()
        } else {
            0
        };
        let content_type: &[u8] = if reply.callback.is_some() {
            b"application/javascript; charset=utf-8"
        } else {
            b"application/json"
        };
        self.scratch.clear();
        http::write_head(&mut self.scratch, Status::Ok, reply.http11, self.date.get());
        http::write_header(&mut self.scratch, "Content-Type", content_type);
        self.scratch
            .extend_from_slice(b"Cache-Control: no-cache\r\n");
        reply
            .cors
            .write_headers(&mut self.scratch, &self.shared.config.mailbox.cors_origins);
        http::write_connection(&mut self.scratch, reply.http11, reply.keep_alive);
        http::write_content_length(&mut self.scratch, body_len + wrap);
        self.scratch.extend_from_slice(b"\r\n");
        let head_end = self.scratch.len();
        if reply.callback.is_some() {
            self.scratch.extend_from_slice(prefix);
            self.scratch.push(b'(');
        }
        let conn = &mut self.conns[key];
        let result = if head_only {
            conn.send(&[Part::Copy(&self.scratch[..head_end])])
        } else {
            body.insert(0, Part::Copy(&self.scratch));
            body.push(Part::Copy(suffix));
            // One writev per group of parts; whatever the socket refuses is
            // queued and the following groups queue behind it.
            body.chunks(crate::conn::MAX_PARTS)
                .try_for_each(|group| conn.send(group))
        };
        self.deliveries += messages.len() as u64;
        self.finish_response(key, result, reply.keep_alive);
    }

    /// After a complete response: next request, or close.
    fn finish_response(&mut self, key: usize, written: io::Result<()>, keep_alive: bool) {
        let conn = &mut self.conns[key];
        if written.is_err() {
            return self.kill(key);
        }
        if keep_alive && !conn.peer_closed {
            conn.phase = Phase::Head;
            conn.deadline = self.now_ms + Self::ms(self.shared.config.server.keepalive_timeout);
        } else {
            conn.phase = Phase::Draining;
            conn.deadline = self.now_ms + Self::ms(self.shared.config.server.shutdown_timeout);
            if conn.out.is_empty() {
                self.kill(key);
            }
        }
    }

    /// Answers held polls that received messages this turn, in one pass so
    /// that several messages for one mailbox go out in one response.
    fn answer_ready_polls(&mut self) {
        let mut ready = std::mem::take(&mut self.ready_polls);
        let now = self.now();
        for &key in &ready {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.dead {
                continue;
            }
            let Phase::Held { ready: Some(_), .. } = &conn.phase else {
                continue;
            };
            let Phase::Held {
                reply,
                ready,
                ready_more,
            } = std::mem::replace(&mut conn.phase, Phase::Head)
            else {
                unreachable!("matched above")
            };
            let message = ready.expect("matched above");
            let sub = conn.sub.as_ref().expect("held polls are subscribed");
            let (messages, missed) = if ready_more {
                self.shared.store.read_after(&sub.mailbox, &sub.cursor, now)
            } else {
                (vec![message], false)
            };
            if messages.is_empty() && !missed {
                // Only duplicates arrived: keep waiting.
                self.conns[key].phase = Phase::Held {
                    reply,
                    ready: None,
                    ready_more: false,
                };
                continue;
            }
            let cursor = messages.last().map_or(sub.cursor, |m| m.cursor);
            metrics::dec(&self.shared.metrics.polls_waiting);
            self.unsubscribe(key);
            self.answer_poll(key, &reply, &messages, missed, cursor, false);
            self.resume_pipelined(key);
        }
        ready.clear();
        if self.ready_polls.is_empty() {
            self.ready_polls = ready; // keep the allocation
        }
    }

    /// A pipelined request may have been waiting behind the one just answered.
    fn resume_pipelined(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.dead || conn.inbuf.is_empty() || !matches!(conn.phase, Phase::Head) {
            return;
        }
        let mut buf = std::mem::take(&mut conn.inbuf);
        let consumed = self.consume_input(key, &mut buf);
        self.restore_input(key, buf, consumed);
    }

    // ----- streams: SSE, NDJSON, iframe -----------------------------------

    #[allow(clippy::too_many_arguments)]
    fn start_stream(
        &mut self,
        key: usize,
        kind: StreamKind,
        name: &str,
        since: Option<Cursor>,
        reply: ReplyTo,
        head_only: bool,
        expires_at: Option<u64>,
    ) {
        let register = if head_only {
            Register::Never
        } else {
            Register::Always
        };
        let Some(attach) = self.attach(key, name, since, register, &reply) else {
            return;
        };
        let content_type: &[u8] = match kind {
            StreamKind::Sse => b"text/event-stream",
            StreamKind::Ndjson => b"application/x-ndjson",
            StreamKind::Iframe => b"text/html; charset=utf-8",
        };
        self.scratch.clear();
        http::write_head(&mut self.scratch, Status::Ok, reply.http11, self.date.get());
        http::write_header(&mut self.scratch, "Content-Type", content_type);
        self.scratch
            .extend_from_slice(b"Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n");
        reply
            .cors
            .write_headers(&mut self.scratch, &self.shared.config.mailbox.cors_origins);
        if reply.http11 {
            self.scratch
                .extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        } else {
            // HTTP/1.0 has no chunks: the end of the stream is the close.
            self.scratch.extend_from_slice(b"Connection: close\r\n");
        }
        self.scratch.extend_from_slice(b"\r\n");
        if head_only {
            let result = self.conns[key].send(&[Part::Copy(&self.scratch)]);
            return self.finish_response(key, result, reply.keep_alive && reply.http11);
        }
        // Preamble: what opens the stream before any message.
        self.tail.clear();
        match kind {
            StreamKind::Sse => {
                let _ = std::io::Write::write_fmt(
                    &mut self.tail,
                    format_args!(
                        "retry: {}\n\n",
                        self.shared.config.mailbox.sse_retry.as_millis()
                    ),
                );
            }
            StreamKind::Ndjson => {}
            StreamKind::Iframe => {
                self.tail.extend_from_slice(
                    b"<!DOCTYPE html><html><head><meta charset=\"utf-8\"></head><body>",
                );
                self.tail.resize(self.tail.len() + IFRAME_PADDING, b' ');
                self.tail.push(b'\n');
            }
        }
        if attach.missed {
            match kind {
                StreamKind::Sse => self
                    .tail
                    .extend_from_slice(b"event: missed\ndata: {\"missed\":true}\n\n"),
                StreamKind::Ndjson => self.tail.extend_from_slice(b"{\"missed\":true}\n"),
                StreamKind::Iframe => {
                    self.tail.extend_from_slice(b"<script>parent.");
                    self.tail
                        .extend_from_slice(reply.callback.as_deref().unwrap_or("").as_bytes());
                    self.tail
                        .extend_from_slice(b"({\"missed\":true});</script>\n");
                }
            }
        }
        if !self.tail.is_empty() {
            chunk_into(&mut self.scratch, &self.tail, reply.http11);
        }
        let ends_at = self.stream_end(expires_at);
        let heartbeat = self.now_ms + Self::ms(self.shared.config.mailbox.heartbeat);
        let conn = &mut self.conns[key];
        conn.phase = Phase::Stream(StreamState {
            kind,
            reply,
            sent: 0,
            ends_at,
        });
        conn.deadline = ends_at.map_or(heartbeat, |e| e.min(heartbeat));
        metrics::inc(&self.shared.metrics.streams_open);
        if conn.send(&[Part::Copy(&self.scratch)]).is_err() {
            self.store_detach_unregistered(name);
            return self.kill(key);
        }
        self.subscribe_local(key, name, attach.position);
        for message in &attach.backlog {
            if !self.send_to_stream(key, message) {
                return;
            }
        }
    }

    /// A registered attach whose connection died before it joined the list.
    fn store_detach_unregistered(&self, name: &str) {
        self.shared.store.detach(name, self.id, 1, self.now());
    }

    /// Writes one message to a stream or WebSocket connection, then applies
    /// the stream limits. Returns false if the connection is gone or ended.
    fn send_to_stream(&mut self, key: usize, message: &Arc<Message>) -> bool {
        let max_pending = self.shared.config.mailbox.max_pending_bytes;
        let max_bytes = self.shared.config.mailbox.stream_max_bytes;
        let conn = &mut self.conns[key];
        let result = match &conn.phase {
            Phase::WebSocket(_) => conn.send(&[Part::Shared(message, Encoding::WsFrame)]),
            Phase::Stream(stream) => {
                let (encoding, prefix, suffix): (Encoding, &[&[u8]], &[u8]) =
                    match (stream.kind, &stream.reply.callback) {
                        (StreamKind::Sse, _) => (Encoding::Sse, &[], b""),
                        (StreamKind::Ndjson, _) => (Encoding::Json, &[], b"\n"),
                        (StreamKind::Iframe, cb) => (
                            Encoding::Json,
                            &[
                                b"<script>parent.",
                                cb.as_deref().unwrap_or("").as_bytes(),
                                b"(",
                            ],
                            b");</script>\n",
                        ),
                    };
                let body = message.encoded(encoding);
                let prefix_len: usize = prefix.iter().map(|p| p.len()).sum();
                self.scratch.clear();
                self.tail.clear();
                if stream.reply.http11 {
                    http::write_chunk_header(
                        &mut self.scratch,
                        prefix_len + body.len() + suffix.len(),
                    );
                }
                for p in prefix {
                    self.scratch.extend_from_slice(p);
                }
                self.tail.extend_from_slice(suffix);
                if stream.reply.http11 {
                    self.tail.extend_from_slice(b"\r\n");
                }
                conn.send(&[
                    Part::Copy(&self.scratch),
                    Part::Shared(message, encoding),
                    Part::Copy(&self.tail),
                ])
            }
            _ => return false,
        };
        if result.is_err() {
            self.kill(key);
            return false;
        }
        self.deliveries += 1;
        if let Some(sub) = conn.sub.as_mut() {
            sub.cursor = message.cursor;
        }
        if conn.out.pending_bytes() > max_pending {
            // A reader this slow would make us buffer without bound. It
            // resumes from its cursor and loses nothing still retained.
            metrics::inc(&self.shared.metrics.slow_subscribers_closed);
            debug!(
                "{}: closing slow subscriber ({} bytes queued)",
                conn.peer,
                conn.out.pending_bytes()
            );
            self.kill(key);
            return false;
        }
        let sent = match &mut conn.phase {
            Phase::Stream(stream) => &mut stream.sent,
            Phase::WebSocket(ws) => &mut ws.sent,
            _ => return true,
        };
        *sent += message.payload.len() as u64;
        if max_bytes.is_some_and(|max| *sent >= max) {
            self.end_stream(key);
            return false;
        }
        true
    }

    /// Ends a stream cleanly (last chunk) so the client reconnects with its
    /// cursor, then closes once the output is written.
    fn end_stream(&mut self, key: usize) {
        self.unsubscribe(key);
        let conn = &mut self.conns[key];
        let result = match &conn.phase {
            Phase::Stream(stream) => {
                metrics::dec(&self.shared.metrics.streams_open);
                if stream.reply.http11 {
                    conn.send(&[Part::Copy(b"0\r\n\r\n")])
                } else {
                    Ok(())
                }
            }
            Phase::WebSocket(_) => {
                metrics::dec(&self.shared.metrics.websockets_open);
                self.scratch.clear();
                websocket::encode_close(1001, "going away", &mut self.scratch);
                conn.send(&[Part::Copy(&self.scratch)])
            }
            _ => Ok(()),
        };
        conn.phase = Phase::Draining;
        self.finish_response(key, result, false);
    }

    // ----- WebSocket -------------------------------------------------------

    fn start_websocket(
        &mut self,
        key: usize,
        req: &Request<'_>,
        name: &str,
        since: Option<Cursor>,
        reply: ReplyTo,
        expires_at: Option<u64>,
    ) {
        let bad = |why| (Status::BadRequest, why);
        let check = if req.method() != Method::Get {
            Err(bad("a WebSocket upgrade must be a GET"))
        } else if !req.http11 || !req.connection_upgrade {
            Err(bad(
                "a WebSocket upgrade needs HTTP/1.1 and Connection: Upgrade",
            ))
        } else if req.websocket_version != Some(b"13") {
            Err((
                Status::UpgradeRequired,
                "only WebSocket version 13 is supported",
            ))
        } else if !req
            .websocket_key
            .is_some_and(websocket::is_valid_client_key)
        {
            Err(bad("missing or invalid Sec-WebSocket-Key"))
        } else if !self.websocket_origin_allowed(req, &reply.cors) {
            Err((Status::Forbidden, "origin not allowed"))
        } else {
            Ok(())
        };
        if let Err((status, why)) = check {
            let extra: &[u8] = if status == Status::UpgradeRequired {
                b"Sec-WebSocket-Version: 13\r\n"
            } else {
                b""
            };
            return self.respond_error_with(
                key,
                status,
                why,
                !reply.keep_alive,
                req.http11,
                &reply.cors,
                extra,
            );
        }
        let Some(attach) = self.attach(key, name, since, Register::Always, &reply) else {
            return;
        };
        let accept = websocket::accept_key(req.websocket_key.expect("checked above"));
        self.scratch.clear();
        self.scratch.extend_from_slice(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
        );
        self.scratch.extend_from_slice(accept.as_bytes());
        self.scratch.extend_from_slice(b"\r\n\r\n");
        if attach.missed {
            self.scratch
                .extend_from_slice(&websocket::encode_text_frame(b"{\"missed\":true}"));
        }
        let heartbeat = self.now_ms + Self::ms(self.shared.config.mailbox.heartbeat);
        let ends_at = self.stream_end(expires_at);
        let conn = &mut self.conns[key];
        conn.phase = Phase::WebSocket(Box::new(WsState {
            decoder: InboundDecoder::new(WS_MAX_CLIENT_MESSAGE),
            ping_outstanding: false,
            closing: false,
            sent: 0,
            ends_at,
        }));
        conn.deadline = ends_at.map_or(heartbeat, |e| e.min(heartbeat));
        metrics::inc(&self.shared.metrics.websockets_open);
        if conn.send(&[Part::Copy(&self.scratch)]).is_err() {
            self.store_detach_unregistered(name);
            return self.kill(key);
        }
        self.subscribe_local(key, name, attach.position);
        for message in &attach.backlog {
            if !self.send_to_stream(key, message) {
                return;
            }
        }
    }

    /// Browsers do not apply CORS to WebSocket, so the gateway checks Origin
    /// itself when `mailbox.cors-origins` is set: listed origins and the
    /// gateway's own host are let in.
    fn websocket_origin_allowed(&self, req: &Request<'_>, cors: &Cors) -> bool {
        let allowed = &self.shared.config.mailbox.cors_origins;
        let Some(origin) = req.origin else {
            return true;
        };
        if allowed.is_empty() || *cors != Cors::None {
            return true;
        }
        let authority = origin
            .splitn(2, |&b| b == b':')
            .nth(1)
            .map(|rest| rest.trim_ascii_start());
        let authority = authority.and_then(|a| a.strip_prefix(b"//"));
        matches!((authority, req.host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
    }

    fn websocket_input(&mut self, key: usize, buf: &mut [u8]) -> usize {
        let mut pos = 0;
        loop {
            let conn = &mut self.conns[key];
            if conn.dead {
                return buf.len();
            }
            let Phase::WebSocket(ws) = &mut conn.phase else {
                return buf.len(); // closed: the rest is moot
            };
            match ws.decoder.decode(&mut buf[pos..]) {
                Ok((0, None)) => return pos,
                Ok((n, event)) => {
                    pos += n;
                    ws.ping_outstanding = false;
                    let Some(event) = event else { continue };
                    self.scratch.clear();
                    match event {
                        Inbound::Ping(payload) => {
                            websocket::encode_pong(&payload, &mut self.scratch);
                            if conn.send(&[Part::Copy(&self.scratch)]).is_err() {
                                self.kill(key);
                            }
                        }
                        Inbound::Pong(_) | Inbound::Message => {}
                        Inbound::Close { code, .. } => {
                            if !ws.closing {
                                // Echo the peer's code, as RFC 6455 5.5.1 suggests.
                                websocket::encode_close(
                                    code.unwrap_or(1000),
                                    "",
                                    &mut self.scratch,
                                );
                                let _ = conn.send(&[Part::Copy(&self.scratch)]);
                            }
                            self.close_websocket(key);
                            return buf.len();
                        }
                    }
                }
                Err(violation) => {
                    metrics::inc(&self.shared.metrics.websocket_violations);
                    debug!("{}: websocket violation: {}", conn.peer, violation.reason);
                    self.scratch.clear();
                    websocket::encode_close(
                        violation.close_code,
                        violation.reason,
                        &mut self.scratch,
                    );
                    let _ = conn.send(&[Part::Copy(&self.scratch)]);
                    self.close_websocket(key);
                    return buf.len();
                }
            }
        }
    }

    /// Our close frame is queued: stop delivering, close once it is written.
    fn close_websocket(&mut self, key: usize) {
        self.unsubscribe(key);
        metrics::dec(&self.shared.metrics.websockets_open);
        let conn = &mut self.conns[key];
        conn.phase = Phase::Draining;
        conn.deadline = self.now_ms + Self::ms(self.shared.config.server.shutdown_timeout);
        if conn.out.is_empty() {
            self.kill(key);
        }
    }

    // ----- delivery --------------------------------------------------------

    /// Hands a published message to this worker's subscribers of its mailbox.
    fn deliver(&mut self, message: &Arc<Message>) {
        let Some(list) = self.subs.get(&*message.mailbox) else {
            return;
        };
        // Deliveries may end subscriptions (slow readers, byte caps), which
        // edits the list; walk a copy of the keys, kept in a buffer the
        // worker reuses, so fan-out allocates nothing per subscriber.
        let mut keys = std::mem::take(&mut self.fanout_keys);
        keys.clear();
        keys.extend_from_slice(list);
        for &key in &keys {
            let key = key as usize;
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.dead {
                continue;
            }
            let Some(sub) = conn.sub.as_ref() else {
                continue;
            };
            let same = sub.cursor.store == message.cursor.store
                && sub.cursor.generation == message.cursor.generation;
            if same && message.seq() <= sub.cursor.seq {
                continue; // already seen (it was in the backlog)
            }
            let in_order = same && message.seq() == sub.cursor.seq + 1;
            match &mut conn.phase {
                Phase::Held {
                    ready, ready_more, ..
                } => {
                    if ready.is_none() {
                        *ready = Some(message.clone());
                        *ready_more = !in_order;
                        self.ready_polls.push(key);
                    } else {
                        *ready_more = true;
                    }
                }
                Phase::Stream(_) | Phase::WebSocket(_) => {
                    if in_order {
                        self.send_to_stream(key, message);
                    } else {
                        self.catch_up(key);
                    }
                }
                Phase::Head | Phase::Draining => {}
            }
        }
        self.fanout_keys = keys;
    }

    /// A stream saw a gap (announcements crossed): read the store.
    fn catch_up(&mut self, key: usize) {
        let sub = self.conns[key]
            .sub
            .as_ref()
            .expect("streams are subscribed");
        let (messages, missed) =
            self.shared
                .store
                .read_after(&sub.mailbox, &sub.cursor, self.now());
        if missed {
            let conn = &mut self.conns[key];
            let sent = match &conn.phase {
                Phase::WebSocket(_) => conn.send(&[Part::Copy(&websocket::encode_text_frame(
                    b"{\"missed\":true}",
                ))]),
                Phase::Stream(stream) => {
                    let marker: Vec<u8> = match stream.kind {
                        StreamKind::Sse => b"event: missed\ndata: {\"missed\":true}\n\n".to_vec(),
                        StreamKind::Ndjson => b"{\"missed\":true}\n".to_vec(),
                        StreamKind::Iframe => format!(
                            "<script>parent.{}({{\"missed\":true}});</script>\n",
                            stream.reply.callback.as_deref().unwrap_or("")
                        )
                        .into_bytes(),
                    };
                    self.scratch.clear();
                    chunk_into(&mut self.scratch, &marker, stream.reply.http11);
                    conn.send(&[Part::Copy(&self.scratch)])
                }
                _ => Ok(()),
            };
            if sent.is_err() {
                return self.kill(key);
            }
            if messages.is_empty()
                && let Some(position) = self.store_position(key)
                && let Some(sub) = self.conns[key].sub.as_mut()
            {
                sub.cursor = position;
            }
        }
        for message in &messages {
            if !self.send_to_stream(key, message) {
                return;
            }
        }
    }

    /// The cursor a subscriber should hold after a `missed` with nothing
    /// retained: the mailbox's current position.
    fn store_position(&self, key: usize) -> Option<Cursor> {
        let sub = self.conns[key].sub.as_ref()?;
        self.shared
            .store
            .attach(&sub.mailbox, None, self.id, Register::Never, self.now())
            .ok()
            .map(|a| a.position)
    }

    /// Sends this turn's announcements: one batch per worker with
    /// subscribers; our own are delivered in place.
    fn post_outbox(&mut self) {
        for worker in 0..self.outbox.len() {
            if self.outbox[worker].is_empty() {
                continue;
            }
            let batch = std::mem::take(&mut self.outbox[worker]);
            if worker == self.id {
                for message in &batch {
                    self.deliver(message);
                }
                let mut batch = batch;
                batch.clear();
                self.outbox[worker] = batch;
            } else {
                self.shared.peers[worker].post(ToWorker::Deliver(batch));
            }
        }
    }

    // ----- plain responses -------------------------------------------------

    /// An error response with a JSON body.
    fn respond_error(
        &mut self,
        key: usize,
        status: Status,
        why: &str,
        close: bool,
        http11: bool,
        cors: &Cors,
    ) {
        self.respond_error_with(key, status, why, close, http11, cors, b"")
    }

    /// An error response with extra header lines (`extra` ends in CRLF).
    #[allow(clippy::too_many_arguments)]
    fn respond_error_with(
        &mut self,
        key: usize,
        status: Status,
        why: &str,
        close: bool,
        http11: bool,
        cors: &Cors,
        extra: &[u8],
    ) {
        let mut out = Vec::with_capacity(256);
        http::write_head(&mut out, status, http11, self.date.get());
        out.extend_from_slice(b"Content-Type: application/json\r\nCache-Control: no-cache\r\n");
        if status == Status::MethodNotAllowed {
            out.extend_from_slice(b"Allow: GET, HEAD, OPTIONS\r\n");
        }
        out.extend_from_slice(extra);
        cors.write_headers(&mut out, &self.shared.config.mailbox.cors_origins);
        let mut body = Vec::with_capacity(why.len() + 16);
        body.extend_from_slice(b"{\"error\":");
        encode::write_json_string(&mut body, why);
        body.extend_from_slice(b"}\n");
        http::write_connection(&mut out, http11, !close);
        http::write_content_length(&mut out, body.len());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body);
        let result = self.conns[key].send(&[Part::Copy(&out)]);
        self.finish_response(key, result, !close);
    }

    /// `/cometbox.js` and `/cometbox.mjs`, the browser client, embedded in
    /// the binary.
    fn respond_client_script(
        &mut self,
        key: usize,
        req: &Request<'_>,
        script: &'static crate::transport::ClientScript,
        keep_alive: bool,
    ) {
        let not_modified = req.if_none_match.is_some_and(|tags| {
            tags.split(|&b| b == b',')
                .any(|t| t.trim_ascii() == script.etag.as_bytes() || t.trim_ascii() == b"*")
        });
        let status = if not_modified {
            Status::NotModified
        } else {
            Status::Ok
        };
        let mut out = Vec::with_capacity(512);
        http::write_head(&mut out, status, req.http11, self.date.get());
        out.extend_from_slice(b"Content-Type: text/javascript; charset=utf-8\r\n");
        // The URL carries no version, so a week rather than forever; the
        // ETag changes with the file, so revalidation is one cheap 304.
        out.extend_from_slice(b"Cache-Control: public, max-age=604800\r\n");
        // Public code without credentials: any origin may load it, which
        // `<script type="module">` from another origin needs.
        out.extend_from_slice(b"Access-Control-Allow-Origin: *\r\n");
        http::write_header(&mut out, "ETag", script.etag.as_bytes());
        http::write_connection(&mut out, req.http11, keep_alive);
        if !not_modified {
            http::write_content_length(&mut out, script.body.len());
        }
        out.extend_from_slice(b"\r\n");
        let with_body = !not_modified && req.method() == Method::Get;
        let body: &[u8] = if with_body { script.body } else { b"" };
        let result = self.conns[key].send(&[Part::Copy(&out), Part::Copy(body)]);
        self.finish_response(key, result, keep_alive);
    }

    fn respond_preflight(&mut self, key: usize, req: &Request<'_>, cors: &Cors, keep_alive: bool) {
        let mut out = Vec::with_capacity(512);
        http::write_head(&mut out, Status::NoContent, req.http11, self.date.get());
        if *cors != Cors::None {
            cors.write_headers(&mut out, &self.shared.config.mailbox.cors_origins);
            out.extend_from_slice(
                b"Access-Control-Allow-Methods: GET, HEAD, OPTIONS\r\n\
                  Access-Control-Allow-Headers: Last-Event-ID, Authorization, Accept, Cache-Control, Content-Type, X-Requested-With\r\n\
                  Access-Control-Max-Age: 86400\r\n",
            );
        }
        http::write_connection(&mut out, req.http11, keep_alive);
        out.extend_from_slice(b"\r\n");
        let result = self.conns[key].send(&[Part::Copy(&out)]);
        self.finish_response(key, result, keep_alive);
    }

    // ----- timers ----------------------------------------------------------

    fn tick(&mut self) {
        self.next_tick = self.now_ms + TICK_MS;
        if std::mem::take(&mut self.accept_blocked) {
            self.accept_http();
        }
        self.date.refresh();
        if self.deliveries > 0 {
            self.shared
                .metrics
                .deliveries
                .fetch_add(self.deliveries, Ordering::Relaxed);
            self.deliveries = 0;
        }
        let now = self.now_ms;
        let expired: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.dead && c.deadline <= now)
            .map(|(k, _)| k)
            .collect();
        for key in expired {
            self.on_deadline(key);
        }
    }

    fn on_deadline(&mut self, key: usize) {
        let heartbeat = Self::ms(self.shared.config.mailbox.heartbeat);
        let conn = &mut self.conns[key];
        match &mut conn.phase {
            Phase::Head => {
                if !conn.inbuf.is_empty() {
                    metrics::inc(&self.shared.metrics.header_timeouts);
                    self.respond_error(
                        key,
                        Status::RequestTimeout,
                        "request header timeout",
                        true,
                        true,
                        &Cors::None,
                    );
                } else {
                    metrics::inc(&self.shared.metrics.idle_keepalive_closed);
                    self.kill(key);
                }
            }
            Phase::Held { .. } => self.answer_timeout(key),
            Phase::Stream(stream) => {
                if stream.ends_at.is_some_and(|end| end <= self.now_ms) {
                    return self.end_stream(key);
                }
                let beat: &[u8] = match stream.kind {
                    StreamKind::Sse => b":\n\n",
                    // Whitespace between JSON lines and in HTML is ignored.
                    StreamKind::Ndjson | StreamKind::Iframe => b"\n",
                };
                self.scratch.clear();
                chunk_into(&mut self.scratch, beat, stream.reply.http11);
                let next = self.now_ms + heartbeat;
                conn.deadline = stream.ends_at.map_or(next, |e| e.min(next));
                if conn.send(&[Part::Copy(&self.scratch)]).is_err() {
                    self.kill(key);
                }
            }
            Phase::WebSocket(ws) => {
                if ws.ends_at.is_some_and(|end| end <= self.now_ms) {
                    return self.end_stream(key);
                }
                if ws.ping_outstanding {
                    debug!("{}: websocket peer did not answer our ping", conn.peer);
                    return self.kill(key);
                }
                ws.ping_outstanding = true;
                self.scratch.clear();
                websocket::encode_ping(b"", &mut self.scratch);
                let next = self.now_ms + heartbeat;
                conn.deadline = ws.ends_at.map_or(next, |e| e.min(next));
                if conn.send(&[Part::Copy(&self.scratch)]).is_err() {
                    self.kill(key);
                }
            }
            Phase::Draining => self.kill(key),
        }
    }

    /// The poll timeout passed: an empty answer with the cursor unchanged.
    fn answer_timeout(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let Phase::Held { reply, .. } = std::mem::replace(&mut conn.phase, Phase::Head) else {
            return;
        };
        let cursor = conn.sub.as_ref().expect("held polls are subscribed").cursor;
        metrics::dec(&self.shared.metrics.polls_waiting);
        self.ready_polls.retain(|&k| k != key);
        self.unsubscribe(key);
        self.answer_poll(key, &reply, &[], false, cursor, false);
        self.resume_pipelined(key);
    }

    // ----- shutdown and reaping -------------------------------------------

    fn begin_shutdown(&mut self) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        self.shutdown_deadline =
            Some(self.now_ms + Self::ms(self.shared.config.server.shutdown_timeout));
        // Stop accepting; once every handle is closed, the kernel refuses
        // new clients instead of queueing them behind a gateway going away.
        if let Some(listener) = self.listener.take() {
            let _ = watch_listener(&self.poll, &listener, libc::EPOLL_CTL_DEL);
        }
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            if self.conns[key].dead {
                continue;
            }
            match &mut self.conns[key].phase {
                Phase::Held { reply, .. } => {
                    // Answer waiting polls now, so clients re-poll elsewhere
                    // (or here, after a restart) with their cursor.
                    reply.keep_alive = false;
                    self.answer_timeout(key);
                }
                Phase::Stream(_) | Phase::WebSocket(_) => self.end_stream(key),
                Phase::Head => self.kill(key),
                Phase::Draining => {}
            }
        }
        let backend_keys: Vec<usize> = self.backends.iter().map(|(k, _)| k).collect();
        for key in backend_keys {
            let backend = &mut self.backends[key];
            backend.closing = true;
            if backend.flush().unwrap_or(true) {
                self.dead_backends.push(key);
            }
        }
    }

    fn kill(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if !conn.dead {
            conn.dead = true;
            self.dead.push(key);
        }
    }

    fn release_http_slot(&self, ip: IpAddr) {
        metrics::dec(&self.shared.metrics.connections_open);
        if self.shared.config.server.max_connections_per_ip > 0 {
            self.shared.ip_limiter.release(ip);
        }
    }

    fn reap(&mut self) {
        while let Some(key) = self.dead.pop() {
            if !self.conns.contains(key) {
                continue;
            }
            match &self.conns[key].phase {
                Phase::Held { .. } => metrics::dec(&self.shared.metrics.polls_waiting),
                Phase::Stream(_) => metrics::dec(&self.shared.metrics.streams_open),
                Phase::WebSocket(_) => metrics::dec(&self.shared.metrics.websockets_open),
                Phase::Head | Phase::Draining => {}
            }
            self.unsubscribe(key);
            let mut conn = self.conns.remove(key);
            let _ = self.poll.registry().deregister(&mut conn.sock);
            self.release_http_slot(conn.peer);
        }
        if !self.ready_polls.is_empty() {
            let conns = &self.conns;
            self.ready_polls.retain(|&k| conns.contains(k));
        }
        while let Some(key) = self.dead_backends.pop() {
            if !self.backends.contains(key) {
                continue;
            }
            let mut backend = self.backends.remove(key);
            let _ = self.poll.registry().deregister(&mut backend.sock);
            metrics::dec(&self.shared.metrics.backend_connections_open);
        }
    }

    // ----- backend connections ---------------------------------------------

    fn backend_event(&mut self, key: usize, readable: bool, writable: bool) {
        let Some(backend) = self.backends.get_mut(key) else {
            return;
        };
        if backend.dead {
            return;
        }
        if writable {
            match backend.flush() {
                Ok(true) if backend.closing => return self.kill_backend(key),
                Ok(true) if backend.paused => {
                    backend.paused = false;
                    self.again.push(backend_token(key));
                }
                Ok(_) => {}
                Err(_) => return self.kill_backend(key),
            }
        }
        if readable {
            self.backend_read(key);
        }
    }

    fn kill_backend(&mut self, key: usize) {
        let backend = &mut self.backends[key];
        if !backend.dead {
            backend.dead = true;
            self.dead_backends.push(key);
        }
    }

    fn backend_read(&mut self, key: usize) {
        let backend = &mut self.backends[key];
        if backend.closing || backend.paused {
            return;
        }
        let (eof, more) = backend.read_some(READ_BUDGET);
        if more {
            self.again.push(backend_token(key));
        }
        let now = self.now();
        let mut hub = crate::backend::WorkerHub {
            shared: &self.shared,
            outbox: &mut self.outbox,
            now,
        };
        let backend = &mut self.backends[key];
        backend.execute_buffered(&mut hub);
        if backend.out_len() > BACKEND_MAX_PENDING_REPLIES {
            backend.paused = true;
        }
        match backend.flush() {
            Ok(done) if done && (backend.closing || eof) => self.kill_backend(key),
            Ok(_) if eof => {
                // The client half-closed: finish writing, then close.
                backend.closing = true;
            }
            Ok(_) => {}
            Err(_) => self.kill_backend(key),
        }
    }
}

/// Appends `data` as one chunk (HTTP/1.1) or as is (HTTP/1.0).
fn chunk_into(out: &mut Vec<u8>, data: &[u8], chunked: bool) {
    if chunked {
        http::write_chunk_header(out, data.len());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(data);
    }
}
