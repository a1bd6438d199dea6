//! What every thread shares, and how threads talk to a worker: [`Shared`]
//! (config, tokens, the store, metrics, per-IP counts, each worker's
//! [`Peer`]) and the messages a worker's inbox takes ([`ToWorker`]). Kept
//! apart from the modules that use them so that none imports another in a
//! circle.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::{ArcSwap, ArcSwapOption, Guard};
use crossbeam_channel::Sender;
use mio::Waker;

use crate::auth::Auth;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::net::BackendStream;
use crate::session::{Sessions, Wake};
use crate::store::{Attach, Cursor, Message, Outlet, Store, StoreError, Ticket};

/// Which pub/sub family an [`Event`] belongs to (`backend::events`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventFamily {
    /// `__cometbox:events`: join and leave.
    Presence,
    /// `__cometbox:upstream`: what browsers sent.
    Upstream,
}

/// A JSON event for backends in pub/sub mode, about one mailbox.
#[derive(Debug)]
pub struct Event {
    pub family: EventFamily,
    pub mailbox: Arc<str>,
    pub payload: Vec<u8>,
}

/// What a worker's inbox takes.
pub enum ToWorker {
    /// An event for this worker's subscribed backends.
    Event(Arc<Event>),
    /// A backend connection to adopt.
    Backend(BackendStream),
    /// Messages published on another worker for subscribers here.
    Deliver(Vec<Arc<Message>>),
    /// A store's late answer to an attach (`Answer::Pending`).
    Attached(Ticket, Result<Attach, StoreError>),
    /// A store's late answers to commands made on this worker (a reply
    /// that waited on a ticket): PUBLISH's or DEL's count, or why it failed.
    Published(Vec<(Ticket, Result<u64, StoreError>)>),
    /// A held Bayeux `/meta/connect` to answer now (docs/bayeux.md).
    Wake(Wake),
    /// Take browsers from the shared listener's backlog: another worker
    /// holds more connections than this one and left them
    /// (`reactor::http_io::ACCEPT_SLACK`).
    Accept,
    /// Shutdown, second step (after [`Shared::stopping`]): answer polls,
    /// end streams, flush, exit.
    Shutdown,
}

/// Announcements a worker's inbox may hold before the backends feeding it
/// are no longer read: a worker that falls behind its publishers would
/// otherwise queue without bound (each queued message also outlives its
/// eviction), and shutdown waits for the backlog to be delivered. 4,096 is
/// one turn's share (`reactor::INBOX_PER_TURN`): a worker is at most a turn
/// behind.
pub const INBOX_HIGH_WATER: usize = 4096;

/// The handle other threads hold on a worker.
pub struct Peer {
    tx: Sender<ToWorker>,
    waker: Waker,
    /// A wake is already on its way: several posts cost one eventfd write.
    wake_pending: AtomicBool,
    /// Messages in `Deliver` batches posted and not yet taken.
    queued: AtomicUsize,
    /// Browser connections the worker holds, as it last said: what the
    /// workers balance their accepts by.
    pub connections: AtomicUsize,
}

impl Peer {
    pub fn new(tx: Sender<ToWorker>, waker: Waker) -> Peer {
        Peer {
            tx,
            waker,
            wake_pending: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
        }
    }

    pub fn post(&self, message: ToWorker) {
        if let ToWorker::Deliver(batch) = &message {
            self.queued.fetch_add(batch.len(), Ordering::Relaxed);
        }
        if self.tx.send(message).is_ok() && !self.wake_pending.swap(true, Ordering::AcqRel) {
            let _ = self.waker.wake();
        }
    }

    /// The worker is draining its inbox: the next post must wake it again.
    pub fn rearm(&self) {
        self.wake_pending.store(false, Ordering::Release);
    }

    /// Wakes the worker with nothing posted (it checks [`Shared::stopping`]).
    pub fn wake(&self) {
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            let _ = self.waker.wake();
        }
    }

    /// The worker took a `Deliver` batch of `n` messages off its inbox.
    pub fn taken(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::Relaxed);
    }

    /// Announcements waiting in the inbox: past [`INBOX_HIGH_WATER`],
    /// publishers wait.
    pub fn is_backed_up(&self) -> bool {
        self.queued.load(Ordering::Relaxed) > INBOX_HIGH_WATER
    }
}

/// How a store's own threads (Redis', the disk's writer) reach the
/// workers (their inboxes) and the Bayeux sessions.
pub struct PeerOutlet {
    pub peers: Arc<[Peer]>,
    pub sessions: Arc<Sessions>,
}

impl Outlet for PeerOutlet {
    fn deliver(&self, worker: usize, messages: Vec<Arc<Message>>) {
        if let Some(peer) = self.peers.get(worker) {
            peer.post(ToWorker::Deliver(messages));
        }
    }

    fn attached(&self, worker: usize, ticket: Ticket, result: Result<Attach, StoreError>) {
        if let Some(peer) = self.peers.get(worker) {
            peer.post(ToWorker::Attached(ticket, result));
        }
    }

    fn completed(&self, worker: usize, done: Vec<(Ticket, Result<u64, StoreError>)>) {
        if let Some(peer) = self.peers.get(worker) {
            peer.post(ToWorker::Published(done));
        }
    }

    fn heard(&self, mailbox: &str, cursor: Cursor) {
        for wake in self.sessions.on_stored(mailbox, cursor) {
            if let Some(peer) = self.peers.get(wake.worker) {
                peer.post(ToWorker::Wake(wake));
            }
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

/// Bytes that many connections on many workers hold together, against a
/// limit: today the argument memory of every backend's unfinished command
/// (`backend::MAX_COMMANDS_TOTAL`). Clone it into each connection; a
/// connection that would push it over the limit is refused, as Redis
/// refuses a client past `client-query-buffer-limit`.
#[derive(Clone, Debug)]
pub struct Budget {
    held: Arc<AtomicUsize>,
    limit: usize,
}

impl Budget {
    pub fn new(limit: usize) -> Budget {
        Budget {
            held: Arc::new(AtomicUsize::new(0)),
            limit,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Moves one connection's share from `from` to `to` bytes. False, and
    /// the share left at `from`, if growing would pass the limit.
    pub fn update(&self, from: usize, to: usize) -> bool {
        if to <= from {
            self.held.fetch_sub(from - to, Ordering::Relaxed);
            return true;
        }
        let grow = to - from;
        let before = self.held.fetch_add(grow, Ordering::Relaxed);
        if before.saturating_add(grow) > self.limit {
            self.held.fetch_sub(grow, Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// What all threads share.
///
/// The config and the token keys can be replaced while the gateway runs
/// (SIGHUP, `gateway::reload`): read them per request through
/// [`Shared::config`] and [`Shared::auth`], and do not keep the guard
/// across event-loop turns. A reader sees either the old or the new value,
/// never a mix; `arc-swap` makes the read a thread-local bookkeeping step,
/// with no shared cache line written.
pub struct Shared {
    pub config: ArcSwap<Config>,
    /// Token checks, when `auth.required` is on.
    pub auth: ArcSwapOption<Auth>,
    /// Set when shutdown begins: `/health` says so.
    pub draining: AtomicBool,
    /// A bit per worker that has a backend in pub/sub mode: events are
    /// built and posted only when some backend listens.
    pub event_listeners: AtomicU64,
    pub store: Store,
    pub peers: Arc<[Peer]>,
    pub metrics: Metrics,
    pub ip_limiter: IpLimiter,
    /// Argument memory of all backends' unfinished commands.
    pub backend_budget: Budget,
    /// Shutdown, first step: set by the acceptor. Every worker, at its next
    /// turn (not behind its inbox), stops reading backend commands, posts
    /// what it announced, and sends its id on `stopped`. After every worker
    /// has, no publish acknowledged to a backend has announcements still to
    /// post, so the `Shutdown` that follows in each inbox comes after them.
    pub stopping: AtomicBool,
    pub stopped: Sender<usize>,
    /// When the whole shutdown must be over, in ms after `started`: set
    /// with `stopping`, so the two steps share one `server.shutdown-timeout`.
    pub stop_deadline_ms: AtomicU64,
    pub started: Instant,
    /// Bayeux sessions, whichever worker their requests land on (shared
    /// with a Redis store's threads, which find wildcard mailboxes).
    pub sessions: Arc<Sessions>,
}

/// The session table the config asks for.
pub fn sessions_for(config: &Config) -> Arc<Sessions> {
    let bayeux = &config.bayeux;
    Arc::new(Sessions::new(
        bayeux.max_sessions,
        bayeux.session_timeout,
        config.mailbox.poll_timeout,
    ))
}

impl Shared {
    /// Tells the workers holding these connects to answer them.
    pub fn wake(&self, wakes: impl IntoIterator<Item = Wake>) {
        for wake in wakes {
            if let Some(peer) = self.peers.get(wake.worker) {
                peer.post(ToWorker::Wake(wake));
            }
        }
    }

    /// The config in force now.
    pub fn config(&self) -> Guard<Arc<Config>> {
        self.config.load()
    }

    /// The token checks in force now (`None`: tokens are off).
    pub fn auth(&self) -> Guard<Option<Arc<Auth>>> {
        self.auth.load()
    }

    /// A gateway's shared state without threads, for unit tests of the
    /// code that reads it (endpoints).
    #[cfg(test)]
    pub fn for_tests(config: Config) -> Arc<Shared> {
        let auth = Auth::from_config(&config.auth).expect("test auth config");
        let store = Store::local(crate::store::StoreLimits::from_config(&config.mailbox), 1);
        let sessions = sessions_for(&config);
        Arc::new(Shared {
            config: ArcSwap::from_pointee(config),
            auth: ArcSwapOption::from(auth.map(Arc::new)),
            draining: AtomicBool::new(false),
            event_listeners: AtomicU64::new(0),
            store,
            peers: Arc::new([]),
            metrics: Metrics::default(),
            ip_limiter: IpLimiter::default(),
            backend_budget: Budget::new(usize::MAX),
            stopping: AtomicBool::new(false),
            stopped: crossbeam_channel::unbounded().0,
            stop_deadline_ms: AtomicU64::new(u64::MAX),
            started: Instant::now(),
            sessions,
        })
    }
}
