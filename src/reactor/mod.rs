//! A worker: one thread, one mio `Poll`, the connections it owns (a slab of
//! HTTP clients and one of backend connections), its subscriber lists, its
//! timer wheel and its clock. Workers share only what is in [`Shared`] (the
//! store, the metrics, each other's inboxes).
//!
//! One turn of the loop: wait for events; handle them (reads parse requests
//! and act on what the endpoints decide; backend commands publish into the
//! store and collect announcements per worker); post the announcements, one
//! batch per worker; answer the long-polls that became ready; fire the
//! timers that are due; reap closed connections. See docs/architecture.md.
//!
//! The rooms: `http_io` (accept, read, parse, after-I/O decisions),
//! `respond` (plain responses and errors), `subscribe` (the transports'
//! phases: poll, stream, WebSocket), `delivery` (fan-out and catch-up),
//! `timers`, `backend_io`, `lifecycle` (shutdown and reaping).

mod admission;
mod backend_io;
mod bayeux;
mod bayeux_wait;
mod delivery;
mod events;
mod http_io;
mod lifecycle;
mod respond;
mod subscribe;
mod timers;

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use log::debug;
use mio::{Events, Poll, Token};
use slab::Slab;

use crate::backend::BackendConn;
use crate::conn::Conn;
use crate::fanout::Subscribers;
use crate::http::DateCache;
use crate::shared::{Shared, ToWorker};
use crate::store::{Message, Ticket};
use crate::transport::longpoll;
use timers::{TICK_MS, TimerWheel};

pub const WAKER: Token = Token(usize::MAX);
/// The shared HTTP listener. Even, like connection tokens: checked first.
const LISTENER: Token = Token(usize::MAX - 1);

/// Bytes read from one socket per event before others get a turn; the rest
/// is read on the next loop turn (edge-triggered, so we remember to).
const READ_BUDGET: usize = 256 * 1024;

/// Scratch read size: a whole request head fits, as do many pipelined ones.
const READ_CHUNK: usize = 16 * 1024;

/// Announced messages delivered from the inbox per turn (whole batches: the
/// last one may take it past), so that a backlog never keeps the worker
/// from its sockets, or from noticing shutdown, for long.
const INBOX_PER_TURN: usize = 4096;

/// How soon throttled backends are looked at again.
const THROTTLE_RETRY_MS: u64 = 2;

fn http_token(key: usize) -> Token {
    Token(key << 1)
}

fn backend_token(key: usize) -> Token {
    Token((key << 1) | 1)
}

/// Buffers the worker reuses for whatever it is writing right now, so that
/// building output allocates nothing per message.
#[derive(Default)]
struct Scratch {
    /// A head, a frame, a chunk header.
    head: Vec<u8>,
    /// A chunk's end, a suffix.
    tail: Vec<u8>,
    /// A composite cursor.
    cursor: Vec<u8>,
    poll: longpoll::Scratch,
    bayeux: crate::endpoint::bayeux::reply::Scratch,
    /// A WebSocket read's complete text messages (upstream, Bayeux): kept
    /// here, not in each connection, since they are handled at once.
    texts: Vec<Vec<u8>>,
}

pub struct Worker {
    id: usize,
    poll: Poll,
    inbox: Receiver<ToWorker>,
    shared: Arc<Shared>,
    conns: Slab<Conn>,
    backends: Slab<BackendConn>,
    subs: Subscribers,
    timers: TimerWheel,
    /// Announcements collected this turn, per destination worker.
    outbox: Vec<Vec<Arc<Message>>>,
    ready_polls: Vec<usize>,
    fanout_keys: Vec<u32>,
    dead: Vec<usize>,
    dead_backends: Vec<usize>,
    /// Sockets whose read budget ran out, or whose input waited on their
    /// output: read again next turn.
    again: Vec<Token>,
    /// Backends not read because a worker's inbox is backed up.
    throttled: Vec<usize>,
    scratch: Scratch,
    /// Where idle connections' reads land; zeroed once.
    read_scratch: Box<[u8]>,
    /// Connections waiting in `Phase::Attaching` for a store's answer, and
    /// the mailboxes of those that closed before it came (to detach).
    attaching: HashMap<Ticket, (usize, usize)>,
    abandoned: HashMap<Ticket, String>,
    /// Backend connections whose reply waits for a store's answer.
    publishing: HashMap<Ticket, usize>,
    /// Bayeux batches and sockets waiting for a store's answers.
    bayeux_waits: bayeux_wait::Waits,
    date: DateCache,
    clock: Instant,
    now_ms: u64,
    next_tick: u64,
    /// Subscribers this turn's publishes were announced to (bounds a turn:
    /// `backend::TURN_DELIVERIES`).
    announced: u64,
    /// Backends here in pub/sub mode (this worker's bit in
    /// `Shared::event_listeners` is set while it is not 0).
    listening_backends: usize,
    /// Who each subscribed connection is, for leave events (only while
    /// some backend listens).
    presence: HashMap<usize, events::Presence>,
    /// Per-message counts since the last tick, folded into the shared
    /// metrics.
    counts: crate::metrics::WorkerCounts,
    /// Backends are no longer read (shutdown's first step); the acceptor is
    /// told once this turn's announcements are posted.
    publishing_stopped: bool,
    stop_unacknowledged: bool,
    /// The inbox held more than one turn's share: take the rest next turn.
    inbox_more: bool,
    /// Set on shutdown: the time by which everything is closed.
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
        mut listener: mio::net::TcpListener,
        shared: Arc<Shared>,
    ) -> io::Result<Worker> {
        crate::net::watch_listener(&poll, &mut listener, LISTENER, true)?;
        let workers = shared.peers.len();
        Ok(Worker {
            id,
            poll,
            inbox,
            shared,
            conns: Slab::new(),
            backends: Slab::new(),
            subs: Subscribers::default(),
            timers: TimerWheel::default(),
            outbox: (0..workers).map(|_| Vec::new()).collect(),
            ready_polls: Vec::new(),
            fanout_keys: Vec::new(),
            dead: Vec::new(),
            dead_backends: Vec::new(),
            again: Vec::new(),
            throttled: Vec::new(),
            scratch: Scratch::default(),
            read_scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            attaching: HashMap::new(),
            abandoned: HashMap::new(),
            publishing: HashMap::new(),
            bayeux_waits: Default::default(),
            date: DateCache::default(),
            clock: Instant::now(),
            now_ms: 0,
            next_tick: TICK_MS,
            announced: 0,
            counts: Default::default(),
            listening_backends: 0,
            presence: HashMap::new(),
            publishing_stopped: false,
            stop_unacknowledged: false,
            inbox_more: false,
            shutdown_deadline: None,
            listener: Some(listener),
            accept_blocked: false,
        })
    }

    fn now(&self) -> Instant {
        self.clock + Duration::from_millis(self.now_ms)
    }

    fn ms(d: Duration) -> u64 {
        d.as_millis().min(u64::MAX as u128) as u64
    }

    /// A Unix time (seconds) on the worker clock (ms since it started).
    fn unix_to_worker_ms(&self, unix_secs: u64) -> u64 {
        let now_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let until = unix_secs.saturating_mul(1000).saturating_sub(now_unix);
        self.now_ms + until
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = if !self.again.is_empty() || self.inbox_more {
                Duration::ZERO
            } else if !self.throttled.is_empty() {
                // Backends wait for another worker to catch up: look again soon.
                Duration::from_millis(THROTTLE_RETRY_MS)
            } else {
                Duration::from_millis(self.next_tick.saturating_sub(self.now_ms))
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                log::error!("worker {}: poll failed: {e}", self.id);
                return;
            }
            self.now_ms = self.clock.elapsed().as_millis() as u64;
            self.notice_stopping();
            if self.inbox_more {
                self.drain_inbox();
            }
            for event in events.iter() {
                let token = event.token();
                let readable = event.is_readable() || event.is_read_closed();
                if token == WAKER {
                    self.drain_inbox();
                } else if token == LISTENER {
                    self.accept_http();
                } else if token.0 & 1 == 0 {
                    self.http_event(token.0 >> 1, readable, event.is_writable());
                } else {
                    self.backend_event(token.0 >> 1, readable, event.is_writable());
                }
            }
            self.retry_throttled();
            for token in std::mem::take(&mut self.again) {
                if token.0 & 1 == 0 {
                    self.http_event(token.0 >> 1, true, false);
                } else {
                    self.backend_event(token.0 >> 1, true, false);
                }
            }
            self.post_outbox();
            self.announced = 0;
            self.acknowledge_stop();
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

    /// Delivers about [`INBOX_PER_TURN`] announced messages from the inbox;
    /// the rest wait for the next turn.
    fn drain_inbox(&mut self) {
        self.shared.peers[self.id].rearm();
        self.inbox_more = false;
        let mut delivered = 0;
        loop {
            if delivered >= INBOX_PER_TURN {
                self.inbox_more = true;
                return;
            }
            // Deliveries of a long backlog take a while: shutdown's first
            // step must not wait behind them.
            self.notice_stopping();
            let Ok(message) = self.inbox.try_recv() else {
                return;
            };
            match message {
                ToWorker::Backend(sock) => self.adopt_backend(sock),
                ToWorker::Event(event) => self.deliver_event(&event),
                ToWorker::Deliver(batch) => {
                    self.shared.peers[self.id].taken(batch.len());
                    delivered += batch.len();
                    for message in &batch {
                        self.deliver(message);
                    }
                }
                ToWorker::Attached(ticket, result) => self.attached(ticket, result),
                ToWorker::Published(done) => self.published(done),
                ToWorker::Wake(wake) => self.wake(wake),
                ToWorker::Accept => self.accept_http(),
                ToWorker::Shutdown => self.begin_shutdown(),
            }
        }
    }
}
