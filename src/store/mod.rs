//! The mailbox store: retained messages per mailbox, message ids and cursors,
//! and which workers hold subscribers of each mailbox.
//!
//! Workers reach the store only through [`Store`], an enum of the known
//! backends: [`LocalStore`], the sharded in-memory store; [`DiskStore`],
//! the same with an append-only log that survives a restart (`disk/`,
//! docs/storage.md); and [`RedisStore`], mailboxes shared by several
//! gateways through Redis (`redis/`, docs/cluster.md), which keeps a
//! `LocalStore` as this node's cache. Operations that a store cannot answer
//! at once (a round trip to Redis, a PUBLISH that waits for the disk's
//! fsync) return [`Answer::Pending`] with a ticket; the store's threads
//! finish them through the [`Outlet`], whose completion reaches the worker
//! as a message on its inbox. The local store always answers
//! [`Answer::Ready`], so it costs nothing.
//!
//! Subscriber *interest* (which connections wait on which mailbox) stays in
//! each worker (`fanout`) for every backend; the store only counts
//! subscribers per worker, so that a publish knows whom to announce to.

mod disk;
mod local;
mod message;
pub mod redis;

pub use disk::{DiskStore, LogSnapshot, record};
pub use local::LocalStore;
pub use message::{Cursor, ENCODING_SLOTS, Follows, Message};
pub use redis::RedisStore;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

/// Mailbox names: 1–200 characters of `A-Z a-z 0-9 . _ : @ -` and `/`,
/// where `/` separates segments: not first, not last, not doubled (the
/// contract). A name with `/` is a Bayeux channel's mailbox: `/a/b` is `a/b`.
pub const MAX_NAME_LEN: usize = 200;

pub fn is_valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.split(|&b| b == b'/').all(|segment| {
            !segment.is_empty()
                && segment.iter().all(|&b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-')
                })
        })
}

/// Limits the store enforces, taken from the config.
#[derive(Clone, Debug)]
pub struct StoreLimits {
    pub max_messages: usize,
    pub message_ttl: Duration,
    pub max_message_size: usize,
    pub max_mailboxes: usize,
    pub max_subscribers: usize,
    pub max_mailbox_bytes: usize,
    pub max_memory: usize,
}

impl StoreLimits {
    pub fn from_config(m: &crate::config::MailboxConfig) -> StoreLimits {
        StoreLimits {
            max_messages: m.max_messages,
            message_ttl: m.message_ttl,
            max_message_size: m.max_message_size,
            max_mailboxes: m.max_mailboxes,
            max_subscribers: m.max_subscribers,
            max_mailbox_bytes: m.max_mailbox_bytes,
            max_memory: m.max_memory,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    BadName,
    TooLarge {
        limit: usize,
    },
    TooManyMailboxes {
        limit: usize,
    },
    TooManySubscribers {
        limit: usize,
    },
    OutOfMemory {
        limit: usize,
    },
    /// A shared store (Redis) is out of reach or did not answer in time;
    /// the text says which. Backends get `-TRYAGAIN`, browsers a 503.
    Unavailable(String),
    /// The disk store could not write or fsync its log; the text says why.
    Disk(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::BadName => write!(
                f,
                "invalid mailbox name: use 1-200 characters of A-Z a-z 0-9 . _ : @ - and / between segments"
            ),
            StoreError::TooLarge { limit } => {
                write!(
                    f,
                    "message exceeds mailbox.max-message-size ({limit} bytes)"
                )
            }
            StoreError::TooManyMailboxes { limit } => {
                write!(f, "too many mailboxes (mailbox.max-mailboxes = {limit})")
            }
            StoreError::TooManySubscribers { limit } => write!(
                f,
                "too many subscribers on this mailbox (mailbox.max-subscribers = {limit})"
            ),
            StoreError::OutOfMemory { limit } => write!(
                f,
                "retained messages would exceed mailbox.max-memory ({limit} bytes)"
            ),
            StoreError::Unavailable(why) => write!(f, "cluster store unavailable: {why}"),
            StoreError::Disk(why) => write!(f, "disk store: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// Counters the store keeps; read by INFO.
#[derive(Default)]
pub struct StoreStats {
    pub published: AtomicU64,
    pub evicted_by_count: AtomicU64,
    pub evicted_by_ttl: AtomicU64,
    pub evicted_by_memory: AtomicU64,
    pub rejected_publishes: AtomicU64,
    pub rejected_too_large: AtomicU64,
    pub rejected_mailbox_limit: AtomicU64,
    pub rejected_subscriber_limit: AtomicU64,
    pub rejected_out_of_memory: AtomicU64,
}

/// Outcome of a publish: the stored message, the workers that hold
/// subscribers of its mailbox (a bit per worker) and how many subscriber
/// connections that is right now (PUBLISH's reply).
#[derive(Debug)]
pub struct Published {
    pub message: Arc<Message>,
    pub workers: u64,
    pub receivers: u64,
}

/// When a subscriber wants to be registered for live messages.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Register {
    /// Long-poll: only if there is nothing to deliver at once.
    IfIdle,
    /// Streams: always, after the backlog.
    Always,
    /// HEAD: just look.
    Never,
}

/// What a subscriber finds when it attaches to a mailbox.
#[derive(Debug)]
pub struct Attach {
    /// Retained messages after the cursor, oldest first.
    pub backlog: Vec<Arc<Message>>,
    /// The cursor fell out of the retained history, or belongs to another
    /// incarnation of the mailbox (a restart, a DEL): something may be lost.
    pub missed: bool,
    /// Where the subscriber stands after the backlog.
    pub position: Cursor,
    pub registered: bool,
    /// This subscriber is the mailbox's first (on any worker): presence's
    /// `join`.
    pub first: bool,
    /// The store's own `Arc` of the name, when registered: the worker's
    /// subscriber list and the subscription share it rather than copy it.
    pub name: Option<Arc<str>>,
}

/// An attach's outcome: what the subscriber finds, or why it may not.
pub type AttachResult = Result<Attach, StoreError>;

/// Names one operation a store will finish later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ticket(pub u64);

/// An answer now, or a promise of one: the completion arrives on the
/// worker's inbox with the same ticket.
#[derive(Debug)]
pub enum Answer<T> {
    Ready(T),
    Pending(Ticket),
}

/// How a store's own threads (Redis', the disk's writer) hand results to
/// the workers. The gateway implements it over the workers' inboxes
/// (`shared`), which the store cannot name without an import cycle; hence a
/// trait object, not an enum.
pub trait Outlet: Send + Sync {
    /// New messages for subscribers on `worker`.
    fn deliver(&self, worker: usize, messages: Vec<Arc<Message>>);
    /// The answer to an attach that was `Pending`.
    fn attached(&self, worker: usize, ticket: Ticket, result: Result<Attach, StoreError>);
    /// Answers to PUBLISH and DEL that were `Pending`.
    fn completed(&self, worker: usize, done: Vec<(Ticket, Result<u64, StoreError>)>);
    /// A message stored by any node, heard on the cluster subscription,
    /// whether this node caches its mailbox or not (Bayeux wildcards find
    /// new mailboxes here).
    fn heard(&self, _mailbox: &str, _cursor: Cursor) {}
}

/// The store behind the one seam every worker uses.
pub enum Store {
    /// In memory, in this process (the default).
    Local(LocalStore),
    /// In memory, with a log on disk (`mailbox.store = "disk"`).
    Disk(DiskStore),
    /// Shared with other gateways through Redis (`cluster.redis`).
    Redis(RedisStore),
}

impl Store {
    pub fn local(limits: StoreLimits, workers: usize) -> Store {
        Store::Local(LocalStore::new(limits, workers))
    }

    /// The in-memory store that serves reads: the store itself, or the
    /// node's cache of a shared one.
    fn serving(&self) -> &LocalStore {
        match self {
            Store::Local(s) => s,
            Store::Disk(d) => d.local(),
            Store::Redis(r) => r.local(),
        }
    }

    pub fn limits(&self) -> &StoreLimits {
        self.serving().limits()
    }

    pub fn stats(&self) -> &StoreStats {
        &self.serving().stats
    }

    /// Mailboxes that hold (or held) mail; waiting subscribers of empty
    /// mailboxes are not counted here. (Redis: those this node caches.)
    pub fn mailbox_count(&self) -> usize {
        self.serving().mailbox_count()
    }

    /// Payload bytes retained.
    pub fn retained_bytes(&self) -> usize {
        self.serving().retained_bytes()
    }

    /// Messages retained.
    pub fn retained_messages(&self) -> usize {
        self.serving().retained_messages()
    }

    /// Payload plus cached encodings: what `mailbox.max-memory` caps.
    pub fn memory_used(&self) -> usize {
        self.serving().memory_used()
    }

    /// Stores a message. A store that answers later (Redis; the disk with
    /// `store-fsync = "always"`) delivers it to subscribers and completes
    /// the ticket through its [`Outlet`]: the completion
    /// (`ToWorker::Published`) goes to `worker`, and the backend connection
    /// keeps its replies in order with a queue of reply slots.
    pub fn publish(
        &self,
        name: &[u8],
        payload: Vec<u8>,
        now: Instant,
        worker: usize,
    ) -> Answer<Result<Published, StoreError>> {
        match self {
            Store::Local(s) => Answer::Ready(s.publish(name, payload, now)),
            Store::Disk(d) => d.publish(name, payload, now, worker),
            Store::Redis(r) => r.publish(name, payload, worker),
        }
    }

    /// Reads the backlog after `since` and, per `register`, counts one more
    /// subscriber of this mailbox on `worker`, atomically.
    pub fn attach(
        &self,
        name: &str,
        since: Option<&Cursor>,
        worker: usize,
        register: Register,
        now: Instant,
    ) -> Answer<Result<Attach, StoreError>> {
        match self {
            Store::Redis(r) => r.attach(name, since, worker, register, now),
            _ => Answer::Ready(self.serving().attach(name, since, worker, register, now)),
        }
    }

    /// Everything after `since`, and whether it lost something: the slow
    /// path of a subscriber that saw a gap. Local by construction: the
    /// messages a worker catches up on are the ones it was told about.
    pub fn read_after(
        &self,
        name: &str,
        since: &Cursor,
        now: Instant,
    ) -> (Vec<Arc<Message>>, bool) {
        self.serving().read_after(name, since, now)
    }

    /// The mailbox's current position (where a reader stands with nothing
    /// retained).
    pub fn position(&self, name: &str, now: Instant) -> Cursor {
        self.serving().position(name, now)
    }

    /// Forgets `count` subscribers of `name` on `worker`; true when none
    /// is left on any worker (presence's `leave`).
    pub fn detach(&self, name: &str, worker: usize, count: u32, now: Instant) -> bool {
        self.serving().detach(name, worker, count, now)
    }

    /// DEL. Returns whether the mailbox existed (a shared store: whether
    /// this node knew it; backends' DEL goes through [`Store::delete_all`]).
    pub fn delete(&self, name: &[u8], now: Instant) -> bool {
        match self {
            Store::Local(s) => s.delete(name, now),
            Store::Disk(d) => d.delete(name, now),
            Store::Redis(r) => r.local().delete(name, now),
        }
    }

    /// `DEL name…`: how many existed. A shared store deletes for every
    /// node and answers later, to `worker`.
    pub fn delete_all(&self, names: &[&[u8]], now: Instant, worker: usize) -> Answer<u64> {
        match self {
            Store::Redis(r) => r.delete_all(names, worker),
            _ => Answer::Ready(names.iter().filter(|name| self.delete(name, now)).count() as u64),
        }
    }

    /// At shutdown, after the workers stopped: the disk store writes and
    /// fsyncs what is left and marks its directory clean.
    pub fn close(&self) {
        if let Store::Disk(d) = self {
            d.close();
        }
    }

    /// INFO's `# Store` lines: which store, and the disk store's log.
    pub fn write_info(&self, out: &mut String) {
        match self {
            Store::Local(_) => out.push_str("store:memory\r\n"),
            Store::Disk(d) => d.write_info(out),
            Store::Redis(_) => out.push_str("store:redis\r\n"),
        }
    }

    pub fn subscriber_count(&self, name: &[u8]) -> u64 {
        self.serving().subscriber_count(name)
    }

    /// Names of mailboxes with subscribers right now.
    pub fn active_names(&self) -> Vec<Arc<str>> {
        self.serving().active_names()
    }

    /// Expiry, forgetting idle mailboxes, and the memory cap. About once a
    /// second, off the workers.
    pub fn sweep(&self, now: Instant) {
        self.serving().sweep(now)
    }
}

/// Helpers for the unit tests of code that handles messages.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Roomy limits: nothing in a unit test hits them unless it means to.
    pub(crate) fn limits() -> StoreLimits {
        StoreLimits {
            max_messages: 10,
            message_ttl: Duration::from_secs(10),
            max_message_size: 1 << 20,
            max_mailboxes: 10,
            max_subscribers: 0,
            max_mailbox_bytes: 1 << 20,
            max_memory: 1 << 20,
        }
    }

    /// A stored message in mailbox `box`, as a publish makes it.
    pub(crate) fn message(payload: &[u8]) -> Arc<Message> {
        LocalStore::new(limits(), 1)
            .publish(b"box", payload.to_vec(), Instant::now())
            .expect("a roomy store takes it")
            .message
    }
}
