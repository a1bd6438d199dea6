//! What every thread shares, and how threads talk to a worker: [`Shared`]
//! (config, tokens, the store, metrics, per-IP counts, each worker's
//! [`Peer`]) and the messages a worker's inbox takes ([`ToWorker`]). Kept
//! apart from the modules that use them so that none imports another in a
//! circle.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::Sender;
use mio::Waker;

use crate::auth::Auth;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::net::BackendStream;
use crate::store::{Attach, Completions, Message, PublishDone, Store, StoreError, Ticket};

/// What a worker's inbox takes.
pub enum ToWorker {
    /// A backend connection to adopt.
    Backend(BackendStream),
    /// Messages published on another worker for subscribers here.
    Deliver(Vec<Arc<Message>>),
    /// A store's late answer to an attach (`Answer::Pending`).
    Attached(Ticket, Result<Attach, StoreError>),
    /// A store's late answers to publishes made on this worker (a reply
    /// that waited on a ticket): PUBLISH's count, or why it failed.
    Published(Vec<PublishDone>),
    /// Shutdown, first step: stop taking publishes, post what was
    /// announced, then tell `ack`. After every worker has, nothing
    /// acknowledged to a backend is still on its way.
    StopPublishing { ack: Sender<usize> },
    /// Shutdown, second step: answer polls, end streams, flush, exit.
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

    /// The worker is draining its inbox: the next post must wake it again.
    pub fn rearm(&self) {
        self.wake_pending.store(false, Ordering::Release);
    }
}

/// How a store's late answers to publishes reach the workers: posted to
/// the inbox of the worker that took each publish.
pub struct PeerCompletions(pub Arc<[Peer]>);

impl Completions for PeerCompletions {
    fn published(&self, worker: usize, done: Vec<PublishDone>) {
        if let Some(peer) = self.0.get(worker) {
            peer.post(ToWorker::Published(done));
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
pub struct Shared {
    pub config: Config,
    /// Token checks, when `auth.required` is on.
    pub auth: Option<Auth>,
    pub store: Store,
    pub peers: Arc<[Peer]>,
    pub metrics: Metrics,
    pub ip_limiter: IpLimiter,
    /// Argument memory of all backends' unfinished commands.
    pub backend_budget: Budget,
    pub started: Instant,
}

impl Shared {
    /// A gateway's shared state without threads, for unit tests of the
    /// code that reads it (endpoints).
    #[cfg(test)]
    pub fn for_tests(config: Config) -> Arc<Shared> {
        let auth = Auth::from_config(&config.auth).expect("test auth config");
        let store = Store::local(crate::store::StoreLimits::from_config(&config.mailbox), 1);
        Arc::new(Shared {
            config,
            auth,
            store,
            peers: Arc::new([]),
            metrics: Metrics::default(),
            ip_limiter: IpLimiter::default(),
            backend_budget: Budget::new(usize::MAX),
            started: Instant::now(),
        })
    }
}
