//! What every thread shares, and how threads talk to a worker: [`Shared`]
//! (config, tokens, the store, metrics, per-IP counts, each worker's
//! [`Peer`]) and the messages a worker's inbox takes ([`ToWorker`]). Kept
//! apart from the modules that use them so that none imports another in a
//! circle.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::Sender;
use mio::Waker;

use crate::auth::Auth;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::net::BackendStream;
use crate::store::{Attach, Message, Store, StoreError, Ticket};

/// What a worker's inbox takes.
pub enum ToWorker {
    /// A backend connection to adopt.
    Backend(BackendStream),
    /// Messages published on another worker for subscribers here.
    Deliver(Vec<Arc<Message>>),
    /// A store's late answer to an attach (`Answer::Pending`).
    Attached(Ticket, Result<Attach, StoreError>),
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
    pub auth: Option<Auth>,
    pub store: Store,
    pub peers: Vec<Peer>,
    pub metrics: Metrics,
    pub ip_limiter: IpLimiter,
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
            peers: Vec::new(),
            metrics: Metrics::default(),
            ip_limiter: IpLimiter::default(),
            started: Instant::now(),
        })
    }
}
