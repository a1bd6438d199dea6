//! Mailboxes shared by several gateways through Redis (`cluster.redis`,
//! docs/cluster.md). Redis holds the truth: per mailbox a counter, an epoch
//! and a capped log, changed only by the functions of `script`. Each node
//! keeps a [`LocalStore`] as its cache of the mailboxes it serves, fed in
//! Redis' order by one subscription per node, and serves reads from it;
//! workers never wait on Redis, they get a ticket and a completion later.
//!
//! Threads: `client` owns the command connection and the cache's writes
//! (notifications, catch-up, the answers to attaches); `subscriber` owns the
//! SUBSCRIBE connection and forwards what it hears. Both talk to the rest
//! of the gateway only through channels and the [`Outlet`].

mod client;
mod script;
mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::{
    Answer, Attach, Cursor, LocalStore, Message, Published, Register, StoreError, StoreLimits,
    Ticket, is_valid_name,
};
use crate::config::{ClusterConfig, RedisAddr};
pub use script::Names;

/// How the Redis threads hand results to workers (implemented over the
/// workers' inboxes in `shared`, so the store needs nothing of them).
pub trait Outlet: Send + Sync {
    /// New messages for subscribers on `worker`.
    fn deliver(&self, worker: usize, messages: Vec<Arc<Message>>);
    /// The answer to an attach that was `Pending`.
    fn attached(&self, worker: usize, ticket: Ticket, result: Result<Attach, StoreError>);
    /// Answers to PUBLISH and DEL that were `Pending`.
    fn completed(&self, worker: usize, done: Vec<(Ticket, Result<u64, StoreError>)>);
    /// A message stored by any node, heard on the subscription, whether
    /// this node caches its mailbox or not (Bayeux wildcards find new
    /// mailboxes here).
    fn heard(&self, _mailbox: &str, _cursor: Cursor) {}
}

/// What the client thread takes.
enum Event {
    Publish {
        ticket: Ticket,
        worker: usize,
        name: String,
        payload: Vec<u8>,
    },
    Attach {
        ticket: Ticket,
        worker: usize,
        name: String,
        since: Option<Cursor>,
        register: Register,
    },
    Delete {
        ticket: Ticket,
        worker: usize,
        names: Vec<String>,
    },
    /// Heard on the channel.
    Note(script::Note),
    /// The subscription is (again) in place: catch every cached mailbox up.
    SubscribedAgain,
    /// The subscription is lost: the cache may fall behind.
    Unsubscribed,
}

/// What the store and its threads share.
struct Inner {
    local: LocalStore,
    /// The subscription is up and the cache caught up since: a reader whose
    /// cursor lies inside a cached span can be served without Redis.
    synced: AtomicBool,
    /// Redis answered the last time we tried (for INFO).
    reachable: AtomicBool,
}

/// Connection settings for the threads.
#[derive(Clone)]
struct Target {
    addr: RedisAddr,
    password: Option<String>,
    names: Names,
}

pub struct RedisStore {
    inner: Arc<Inner>,
    tx: Sender<Event>,
    next_ticket: AtomicU64,
    store_id: u64,
    max_message_size: usize,
    addr: String,
}

/// The first part of every cursor in a cluster: the same on every node and
/// across restarts, from the key prefix, so that two deployments sharing
/// one Redis do not take each other's cursors. Never 0.
pub fn store_id(prefix: &str) -> u64 {
    // FNV-1a, 48 bits so the hex stays short.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in prefix.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h & 0xffff_ffff_ffff).max(1)
}

impl RedisStore {
    /// Starts the Redis threads. Redis need not be up: until it is,
    /// publishes and cache misses fail fast with `Unavailable`.
    pub fn start(
        cluster: &ClusterConfig,
        limits: StoreLimits,
        workers: usize,
        outlet: Arc<dyn Outlet>,
    ) -> Result<RedisStore, String> {
        let addr = cluster
            .redis
            .clone()
            .ok_or_else(|| "cluster.redis is not set".to_string())?;
        let password = match &cluster.redis_password_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| {
                        format!(
                            "cluster.redis-password-file: cannot read {}: {e}",
                            path.display()
                        )
                    })?
                    .trim_end()
                    .to_string(),
            ),
            None => None,
        };
        let store_id = store_id(&cluster.key_prefix);
        let names = Names::new(&cluster.key_prefix);
        let settings = script::Settings {
            max_messages: limits.max_messages,
            message_ttl: limits.message_ttl,
            max_message_size: limits.max_message_size,
        };
        let library = script::library(&names, &settings);
        let max_message_size = limits.max_message_size;
        let inner = Arc::new(Inner {
            local: LocalStore::with_store_id(limits, workers, store_id),
            synced: AtomicBool::new(false),
            reachable: AtomicBool::new(false),
        });
        let (tx, rx) = crossbeam_channel::unbounded();
        let target = Target {
            addr: addr.clone(),
            password,
            names,
        };
        client::spawn(
            inner.clone(),
            target,
            library,
            rx,
            tx.clone(),
            outlet,
            workers,
        )
        .map_err(|e| format!("cannot start the Redis client thread: {e}"))?;
        Ok(RedisStore {
            inner,
            tx,
            next_ticket: AtomicU64::new(1),
            store_id,
            max_message_size,
            addr: addr.to_string(),
        })
    }

    /// This node's cache: what reads, counts and sweeps use.
    pub fn local(&self) -> &LocalStore {
        &self.inner.local
    }

    fn ticket(&self) -> Ticket {
        Ticket(self.next_ticket.fetch_add(1, Ordering::Relaxed))
    }

    fn send(&self, event: Event) -> Result<(), StoreError> {
        self.tx
            .send(event)
            .map_err(|_| StoreError::Unavailable("the Redis client thread stopped".into()))
    }

    pub fn publish(
        &self,
        name: &[u8],
        payload: Vec<u8>,
        worker: usize,
    ) -> Answer<Result<Published, StoreError>> {
        if !is_valid_name(name) {
            return Answer::Ready(Err(StoreError::BadName));
        }
        if payload.len() > self.max_message_size {
            return Answer::Ready(Err(StoreError::TooLarge {
                limit: self.max_message_size,
            }));
        }
        let ticket = self.ticket();
        // Valid names are ASCII.
        let name = String::from_utf8_lossy(name).into_owned();
        let event = Event::Publish {
            ticket,
            worker,
            name,
            payload,
        };
        match self.send(event) {
            Ok(()) => Answer::Pending(ticket),
            Err(e) => Answer::Ready(Err(e)),
        }
    }

    /// Served from the cache when the cursor lies inside what it holds of
    /// the current incarnation (a long-poll's next request, usually);
    /// otherwise Redis is read first (`client`).
    pub fn attach(
        &self,
        name: &str,
        since: Option<&Cursor>,
        worker: usize,
        register: Register,
        now: Instant,
    ) -> Answer<Result<Attach, StoreError>> {
        if let Some(since) = since
            && self.inner.synced.load(Ordering::Acquire)
            && since.store == self.store_id
            && since.generation != Cursor::UNBORN_GENERATION
            && let Some(span) = self.inner.local.span(name)
            && span.generation == since.generation
            && span.first <= since.seq + 1
            && since.seq <= span.last
        {
            return Answer::Ready(self.inner.local.attach(
                name,
                Some(since),
                worker,
                register,
                now,
            ));
        }
        let ticket = self.ticket();
        let event = Event::Attach {
            ticket,
            worker,
            name: name.to_string(),
            since: since.copied(),
            register,
        };
        match self.send(event) {
            Ok(()) => Answer::Pending(ticket),
            Err(e) => Answer::Ready(Err(e)),
        }
    }

    /// DEL for every node: Redis deletes, every node's cache hears it.
    pub fn delete_all(&self, names: &[&[u8]], worker: usize) -> Answer<u64> {
        let names: Vec<String> = names
            .iter()
            .filter(|n| is_valid_name(n))
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect();
        if names.is_empty() {
            return Answer::Ready(0);
        }
        let ticket = self.ticket();
        match self.send(Event::Delete {
            ticket,
            worker,
            names,
        }) {
            Ok(()) => Answer::Pending(ticket),
            Err(_) => Answer::Ready(0),
        }
    }

    /// INFO's `# Cluster` lines: this node's view.
    pub fn write_info(&self, out: &mut String) {
        use std::fmt::Write;
        let flag = |b: &AtomicBool| u8::from(b.load(Ordering::Relaxed));
        let _ = write!(
            out,
            "cluster_redis:{}\r\ncluster_redis_reachable:{}\r\ncluster_subscribed_in_sync:{}\r\n",
            self.addr,
            flag(&self.inner.reachable),
            flag(&self.inner.synced),
        );
    }
}

/// How long Redis may go without answering (connecting, or between two
/// replies of a pipelined batch) before it counts as down: PUBLISH must fail
/// within a second or two, never hang. One second was too tight on a
/// loaded two-core machine (a bench run saw spurious TRYAGAINs).
const IO_TIMEOUT: Duration = Duration::from_millis(2000);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_id_is_fixed_per_prefix_and_never_zero() {
        assert_eq!(store_id("cometbox:"), store_id("cometbox:"));
        assert_ne!(store_id("cometbox:"), store_id("other:"));
        assert!(store_id("") > 0 && store_id("cometbox:") <= 0xffff_ffff_ffff);
    }
}
