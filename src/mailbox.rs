//! The mailbox store: retained messages per mailbox, message ids and cursors,
//! and which workers hold subscribers of each mailbox.
//!
//! The store is shared by every worker. It is split into shards, each behind
//! its own mutex, so two publishes only contend when their mailboxes hash to
//! the same shard: there is no global lock on the per-message path. A message
//! is stored once (`Arc<Message>`) and every subscriber, on every worker and
//! transport, shares it and its cached wire encodings.
//!
//! Ordering and the "never miss, never repeat" promise rest on one rule: a
//! subscriber reads the backlog and registers its worker *under the same shard
//! lock*, so any message published after that read is announced to its worker.
//! Announcements may reach a worker out of order (two publishers, two
//! channels); workers compare sequence numbers and fall back to
//! [`Store::read_after`] when they see a gap, so the store is the one truth.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::transport::encode::{self, Encoding};

/// Mailbox names: 1–200 characters of `A-Z a-z 0-9 . _ : @ -` (the contract).
pub const MAX_NAME_LEN: usize = 200;

/// Shards of the store. 64 keeps contention negligible for any worker count
/// we allow (at most 64) while costing only 64 small hash maps.
const SHARDS: usize = 64;

/// An empty mailbox without subscribers is forgotten only after this long
/// idle (and never sooner than the message TTL), so a long-polling client that
/// re-polls a quiet mailbox keeps a valid cursor instead of seeing `missed`.
const MIN_IDLE_BEFORE_FORGET: Duration = Duration::from_secs(60);

pub fn is_valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-'))
}

/// Where a client stands in a mailbox: the mailbox incarnation it read from
/// (store start time + generation) and the last sequence number it has seen.
/// On the wire it is the id of that message: `{store:x}.{generation:x}-{seq:010}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub store: u64,
    pub generation: u64,
    pub seq: u64,
}

/// Width of the zero-padded sequence, so that ids of one mailbox also sort
/// as strings (clients may compare them).
const SEQ_WIDTH: usize = 10;

impl Cursor {
    pub fn parse(text: &[u8]) -> Option<Cursor> {
        let text = std::str::from_utf8(text).ok()?;
        let (epoch, seq) = text.rsplit_once('-')?;
        let (store, generation) = epoch.split_once('.')?;
        let all_digits =
            |s: &str, radix: u32| !s.is_empty() && s.chars().all(|c| c.is_digit(radix));
        if !all_digits(store, 16) || !all_digits(generation, 16) || !all_digits(seq, 10) {
            return None;
        }
        Some(Cursor {
            store: u64::from_str_radix(store, 16).ok()?,
            generation: u64::from_str_radix(generation, 16).ok()?,
            seq: seq.parse().ok()?,
        })
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "{:x}.{:x}-{:0width$}",
            self.store,
            self.generation,
            self.seq,
            width = SEQ_WIDTH
        );
    }

    pub fn to_text(self) -> String {
        let mut out = Vec::with_capacity(32);
        self.write(&mut out);
        // Only ASCII digits and punctuation were written.
        String::from_utf8(out).expect("cursor text is ASCII")
    }

    fn same_incarnation(&self, other: &Cursor) -> bool {
        self.store == other.store && self.generation == other.generation
    }
}

/// One published message. Immutable once built, shared by all subscribers;
/// each transport's bytes are encoded at most once, on first use.
pub struct Message {
    pub mailbox: Arc<str>,
    pub cursor: Cursor,
    pub id: Box<str>,
    pub payload: Box<[u8]>,
    pub published_at: Instant,
    encodings: [OnceLock<Box<[u8]>>; Encoding::COUNT],
}

impl Message {
    fn new(mailbox: Arc<str>, cursor: Cursor, payload: Box<[u8]>, now: Instant) -> Message {
        Message {
            mailbox,
            id: cursor.to_text().into_boxed_str(),
            cursor,
            payload,
            published_at: now,
            encodings: Default::default(),
        }
    }

    pub fn seq(&self) -> u64 {
        self.cursor.seq
    }

    /// The message's bytes for one transport, built once and shared.
    pub fn encoded(&self, kind: Encoding) -> &[u8] {
        self.encodings[kind as usize].get_or_init(|| encode::encode(kind, self))
    }
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("mailbox", &self.mailbox)
            .field("id", &self.id)
            .field("len", &self.payload.len())
            .finish()
    }
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

#[derive(Debug, PartialEq, Eq)]
pub enum StoreError {
    BadName,
    TooLarge { limit: usize },
    TooManyMailboxes { limit: usize },
    TooManySubscribers { limit: usize },
    OutOfMemory { limit: usize },
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::BadName => write!(
                f,
                "invalid mailbox name: use 1-200 characters of A-Z a-z 0-9 . _ : @ -"
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
        }
    }
}

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
pub struct Attach {
    /// Retained messages after the cursor, oldest first.
    pub backlog: Vec<Arc<Message>>,
    /// The cursor fell out of the retained history, or belongs to another
    /// incarnation of the mailbox (a restart, a DEL): something may be lost.
    pub missed: bool,
    /// Where the subscriber stands after the backlog.
    pub position: Cursor,
    pub registered: bool,
}

struct Mailbox {
    name: Arc<str>,
    generation: u64,
    last_seq: u64,
    messages: VecDeque<Arc<Message>>,
    bytes: usize,
    /// Subscriber connections per worker. A worker may count a connection a
    /// little longer than it waits (it detaches in batches), never shorter:
    /// over-counting costs a wasted announcement, under-counting a lost message.
    subscribers: Box<[u32]>,
    idle_since: Option<Instant>,
}

impl Mailbox {
    fn position(&self, store: u64) -> Cursor {
        Cursor {
            store,
            generation: self.generation,
            seq: self.last_seq,
        }
    }

    fn subscriber_total(&self) -> u64 {
        self.subscribers.iter().map(|&n| n as u64).sum()
    }

    fn worker_mask(&self) -> u64 {
        self.subscribers
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .fold(0, |mask, (w, _)| mask | (1 << w))
    }

    fn is_forgettable(&self, now: Instant, grace: Duration) -> bool {
        self.messages.is_empty()
            && self.subscriber_total() == 0
            && self
                .idle_since
                .is_some_and(|since| now.saturating_duration_since(since) >= grace)
    }

    fn touch_idle(&mut self, now: Instant) {
        if self.messages.is_empty() && self.subscriber_total() == 0 {
            self.idle_since.get_or_insert(now);
        } else {
            self.idle_since = None;
        }
    }

    /// Messages with seq > cursor, and whether the cursor lost anything.
    fn after(&self, store: u64, since: Option<&Cursor>) -> (Vec<Arc<Message>>, bool) {
        let position = self.position(store);
        let Some(since) = since else {
            return (self.messages.iter().cloned().collect(), false);
        };
        if !since.same_incarnation(&position) || since.seq > self.last_seq {
            return (self.messages.iter().cloned().collect(), true);
        }
        let first_retained = self.messages.front().map_or(self.last_seq + 1, |m| m.seq());
        let missed = since.seq + 1 < first_retained;
        // Messages are in seq order with no gaps, so the first wanted one is
        // at a computable offset.
        let skip = (since.seq + 1).saturating_sub(first_retained) as usize;
        (self.messages.iter().skip(skip).cloned().collect(), missed)
    }
}

struct Shard {
    boxes: HashMap<Arc<str>, Mailbox>,
}

pub struct Store {
    shards: Box<[Mutex<Shard>]>,
    /// Start of this store in microseconds since the Unix epoch: the first part
    /// of every id, so cursors from an earlier process are recognised.
    epoch: u64,
    next_generation: AtomicU64,
    mailboxes: AtomicUsize,
    retained_bytes: AtomicUsize,
    workers: usize,
    limits: StoreLimits,
    pub stats: StoreStats,
}

impl Store {
    pub fn new(limits: StoreLimits, workers: usize) -> Store {
        assert!((1..=64).contains(&workers), "1 to 64 workers (a u64 mask)");
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        Store {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        boxes: HashMap::new(),
                    })
                })
                .collect(),
            epoch,
            next_generation: AtomicU64::new(1),
            mailboxes: AtomicUsize::new(0),
            retained_bytes: AtomicUsize::new(0),
            workers,
            limits,
            stats: StoreStats::default(),
        }
    }

    pub fn limits(&self) -> &StoreLimits {
        &self.limits
    }

    pub fn mailbox_count(&self) -> usize {
        self.mailboxes.load(Ordering::Relaxed)
    }

    pub fn retained_bytes(&self) -> usize {
        self.retained_bytes.load(Ordering::Relaxed)
    }

    fn shard(&self, name: &str) -> MutexGuard<'_, Shard> {
        let mut hasher = DefaultHasher::new();
        name.hash(&mut hasher);
        let index = hasher.finish() as usize % SHARDS;
        // A poisoned shard means a panic while holding it; the data is plain
        // and still consistent enough to serve, so carry on rather than
        // taking every later publish down with it.
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn new_mailbox(&self, name: &str) -> Result<Mailbox, StoreError> {
        let limit = self.limits.max_mailboxes;
        if self
            .mailboxes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_err()
        {
            return Err(StoreError::TooManyMailboxes { limit });
        }
        Ok(Mailbox {
            name: Arc::from(name),
            generation: self.next_generation.fetch_add(1, Ordering::Relaxed),
            last_seq: 0,
            messages: VecDeque::new(),
            bytes: 0,
            subscribers: vec![0; self.workers].into_boxed_slice(),
            idle_since: None,
        })
    }

    fn entry<'s>(&self, shard: &'s mut Shard, name: &str) -> Result<&'s mut Mailbox, StoreError> {
        if !shard.boxes.contains_key(name) {
            let mailbox = self.new_mailbox(name)?;
            shard.boxes.insert(mailbox.name.clone(), mailbox);
        }
        Ok(shard.boxes.get_mut(name).expect("inserted above"))
    }

    fn drop_front(&self, mailbox: &mut Mailbox) {
        if let Some(old) = mailbox.messages.pop_front() {
            mailbox.bytes -= old.payload.len();
            self.retained_bytes
                .fetch_sub(old.payload.len(), Ordering::Relaxed);
        }
    }

    fn expire(&self, mailbox: &mut Mailbox, now: Instant) {
        while let Some(front) = mailbox.messages.front() {
            if now.saturating_duration_since(front.published_at) < self.limits.message_ttl {
                break;
            }
            self.drop_front(mailbox);
            self.stats.evicted_by_ttl.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn publish(
        &self,
        name: &[u8],
        payload: Vec<u8>,
        now: Instant,
    ) -> Result<Published, StoreError> {
        let result = self.try_publish(name, payload, now);
        if let Err(e) = &result {
            self.stats
                .rejected_publishes
                .fetch_add(1, Ordering::Relaxed);
            self.count_refusal(e);
        }
        result
    }

    fn count_refusal(&self, error: &StoreError) {
        let counter = match error {
            StoreError::BadName => return,
            StoreError::TooLarge { .. } => &self.stats.rejected_too_large,
            StoreError::TooManyMailboxes { .. } => &self.stats.rejected_mailbox_limit,
            StoreError::TooManySubscribers { .. } => &self.stats.rejected_subscriber_limit,
            StoreError::OutOfMemory { .. } => &self.stats.rejected_out_of_memory,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn try_publish(
        &self,
        name: &[u8],
        payload: Vec<u8>,
        now: Instant,
    ) -> Result<Published, StoreError> {
        if !is_valid_name(name) {
            return Err(StoreError::BadName);
        }
        let name = std::str::from_utf8(name).map_err(|_| StoreError::BadName)?;
        let len = payload.len();
        if len > self.limits.max_message_size {
            return Err(StoreError::TooLarge {
                limit: self.limits.max_message_size,
            });
        }
        if len > self.limits.max_mailbox_bytes || len > self.limits.max_memory {
            // Even an emptied store could not hold it: refuse rather than
            // accept and drop it.
            let limit = self.limits.max_memory.min(self.limits.max_mailbox_bytes);
            return Err(StoreError::OutOfMemory { limit });
        }
        if self.retained_bytes() + len > self.limits.max_memory {
            // Free a little more than needed so that a store at its cap does
            // not rescan on every publish. Done before taking our own shard
            // lock: a thread never holds two.
            let slack = self.limits.max_memory / 16;
            self.reclaim(self.limits.max_memory.saturating_sub(len + slack));
        }
        let mut shard = self.shard(name);
        let mailbox = self.entry(&mut shard, name)?;
        self.expire(mailbox, now);

        // Make room: by count, then per-mailbox bytes, then the global memory
        // cap. Each eviction is visible to late readers as `missed`.
        while mailbox.messages.len() >= self.limits.max_messages {
            self.drop_front(mailbox);
            self.stats.evicted_by_count.fetch_add(1, Ordering::Relaxed);
        }
        while !mailbox.messages.is_empty() && mailbox.bytes + len > self.limits.max_mailbox_bytes {
            self.drop_front(mailbox);
            self.stats.evicted_by_memory.fetch_add(1, Ordering::Relaxed);
        }
        // Concurrent publishers may have refilled what `reclaim` freed; the
        // overshoot is bounded by one message per worker.

        mailbox.last_seq += 1;
        let cursor = Cursor {
            store: self.epoch,
            generation: mailbox.generation,
            seq: mailbox.last_seq,
        };
        let message = Arc::new(Message::new(
            mailbox.name.clone(),
            cursor,
            payload.into_boxed_slice(),
            now,
        ));
        mailbox.messages.push_back(message.clone());
        mailbox.bytes += len;
        mailbox.idle_since = None;
        self.retained_bytes.fetch_add(len, Ordering::Relaxed);
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        Ok(Published {
            message,
            workers: mailbox.worker_mask(),
            receivers: mailbox.subscriber_total(),
        })
    }

    /// Evicts the oldest messages of the whole store until at most `target`
    /// bytes are retained (`mailbox.max-memory`). Each round takes the
    /// front (oldest) message of every mailbox in age order, so the store
    /// sheds its globally oldest mail first; readers see it as `missed`.
    fn reclaim(&self, target: usize) {
        while self.retained_bytes() > target {
            let mut fronts: Vec<(Instant, usize, Arc<str>)> = Vec::new();
            for (index, shard) in self.shards.iter().enumerate() {
                let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
                fronts.extend(shard.boxes.values().filter_map(|m| {
                    m.messages
                        .front()
                        .map(|f| (f.published_at, index, m.name.clone()))
                }));
            }
            if fronts.is_empty() {
                return;
            }
            fronts.sort_unstable_by_key(|f| f.0);
            for (_, index, name) in fronts {
                if self.retained_bytes() <= target {
                    return;
                }
                let mut shard = self.shards[index].lock().unwrap_or_else(|p| p.into_inner());
                if let Some(mailbox) = shard.boxes.get_mut(&*name) {
                    self.drop_front(mailbox);
                    self.stats.evicted_by_memory.fetch_add(1, Ordering::Relaxed);
                }
            }
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
    ) -> Result<Attach, StoreError> {
        let result = self.try_attach(name, since, worker, register, now);
        if let Err(e) = &result {
            self.count_refusal(e);
        }
        result
    }

    fn try_attach(
        &self,
        name: &str,
        since: Option<&Cursor>,
        worker: usize,
        register: Register,
        now: Instant,
    ) -> Result<Attach, StoreError> {
        let mut shard = self.shard(name);
        let mailbox = self.entry(&mut shard, name)?;
        self.expire(mailbox, now);
        let (backlog, missed) = mailbox.after(self.epoch, since);
        let position = match (backlog.last(), since) {
            (Some(last), _) => last.cursor,
            (None, Some(since)) if !missed => *since,
            _ => mailbox.position(self.epoch),
        };
        let wants = match register {
            Register::Always => true,
            Register::IfIdle => backlog.is_empty() && !missed,
            Register::Never => false,
        };
        if wants {
            let limit = self.limits.max_subscribers;
            if limit > 0 && mailbox.subscriber_total() >= limit as u64 {
                return Err(StoreError::TooManySubscribers { limit });
            }
            mailbox.subscribers[worker] += 1;
        }
        mailbox.touch_idle(now);
        Ok(Attach {
            backlog,
            missed,
            position,
            registered: wants,
        })
    }

    /// The slow path for a subscriber that saw a gap: everything after its
    /// cursor, and whether it lost something.
    pub fn read_after(
        &self,
        name: &str,
        since: &Cursor,
        now: Instant,
    ) -> (Vec<Arc<Message>>, bool) {
        let mut shard = self.shard(name);
        match shard.boxes.get_mut(name) {
            Some(mailbox) => {
                self.expire(mailbox, now);
                mailbox.after(self.epoch, Some(since))
            }
            None => (Vec::new(), true),
        }
    }

    /// Forgets `count` subscribers of `name` on `worker`.
    pub fn detach(&self, name: &str, worker: usize, count: u32, now: Instant) {
        let mut shard = self.shard(name);
        if let Some(mailbox) = shard.boxes.get_mut(name) {
            let n = &mut mailbox.subscribers[worker];
            debug_assert!(*n >= count, "detaching more subscribers than attached");
            *n = n.saturating_sub(count);
            mailbox.touch_idle(now);
        }
    }

    /// DEL: drops the retained messages and starts a new incarnation, so every
    /// cursor into the old one is answered with `missed`. Subscribers stay
    /// attached and receive what is published next. Returns whether the
    /// mailbox existed.
    pub fn delete(&self, name: &[u8], now: Instant) -> bool {
        let Ok(name) = std::str::from_utf8(name) else {
            return false;
        };
        let mut shard = self.shard(name);
        let Some(mailbox) = shard.boxes.get_mut(name) else {
            return false;
        };
        let had_messages = !mailbox.messages.is_empty() || mailbox.last_seq > 0;
        while !mailbox.messages.is_empty() {
            self.drop_front(mailbox);
        }
        mailbox.generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        mailbox.last_seq = 0;
        if mailbox.subscriber_total() == 0 {
            shard.boxes.remove(name);
            self.mailboxes.fetch_sub(1, Ordering::Relaxed);
        } else {
            mailbox.touch_idle(now);
        }
        had_messages
    }

    pub fn subscriber_count(&self, name: &[u8]) -> u64 {
        let Ok(name) = std::str::from_utf8(name) else {
            return 0;
        };
        self.shard(name)
            .boxes
            .get(name)
            .map_or(0, Mailbox::subscriber_total)
    }

    /// Names of mailboxes that have subscribers right now (PUBSUB CHANNELS).
    pub fn active_names(&self, mut keep: impl FnMut(&str) -> bool) -> Vec<Arc<str>> {
        let mut names = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            names.extend(
                shard
                    .boxes
                    .values()
                    .filter(|m| m.subscriber_total() > 0 && keep(&m.name))
                    .map(|m| m.name.clone()),
            );
        }
        names
    }

    /// Drops expired messages and forgets idle empty mailboxes. Called about
    /// once a second; each shard is locked only for its own pass.
    pub fn sweep(&self, now: Instant) {
        let grace = self.limits.message_ttl.max(MIN_IDLE_BEFORE_FORGET);
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            let before = shard.boxes.len();
            shard.boxes.retain(|_, mailbox| {
                self.expire(mailbox, now);
                mailbox.touch_idle(now);
                !mailbox.is_forgettable(now, grace)
            });
            let forgotten = before - shard.boxes.len();
            if forgotten > 0 {
                self.mailboxes.fetch_sub(forgotten, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> StoreLimits {
        StoreLimits {
            max_messages: 3,
            message_ttl: Duration::from_secs(10),
            max_message_size: 1024,
            max_mailboxes: 4,
            max_subscribers: 0,
            max_mailbox_bytes: 4096,
            max_memory: 1 << 20,
        }
    }

    fn seqs(messages: &[Arc<Message>]) -> Vec<u64> {
        messages.iter().map(|m| m.seq()).collect()
    }

    #[test]
    fn names_follow_the_contract() {
        assert!(is_valid_name(b"alice"));
        assert!(is_valid_name(b"user:alice@example.com_1-2"));
        assert!(is_valid_name(&[b'a'; 200]));
        assert!(!is_valid_name(&[b'a'; 201]));
        assert!(!is_valid_name(b""));
        assert!(!is_valid_name(b"a/b"));
        assert!(!is_valid_name(b"a b"));
        assert!(!is_valid_name("é".as_bytes()));
    }

    #[test]
    fn cursor_roundtrip_and_rejects_garbage() {
        let c = Cursor {
            store: 0x18a3f2b1c0d9e,
            generation: 0x1f,
            seq: 42,
        };
        let text = c.to_text();
        assert_eq!(text, "18a3f2b1c0d9e.1f-0000000042");
        assert_eq!(Cursor::parse(text.as_bytes()), Some(c));
        for bad in [
            "", "abc", "1-2", "x.1-2", "1.1-", "1.1-x", "1.1-2-", ".1-2", "1.-2", "1.1--2",
        ] {
            assert_eq!(Cursor::parse(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn ids_increase_and_sort_as_strings() {
        let store = Store::new(limits(), 1);
        let now = Instant::now();
        let mut last = String::new();
        for _ in 0..12 {
            let p = store.publish(b"box", b"x".to_vec(), now).unwrap();
            assert!(*p.message.id > *last, "{} > {}", p.message.id, last);
            last = p.message.id.to_string();
        }
    }

    #[test]
    fn backlog_after_cursor_and_missed_on_eviction() {
        let store = Store::new(limits(), 1);
        let now = Instant::now();
        let ids: Vec<Cursor> = (0..3)
            .map(|i| store.publish(b"box", vec![i], now).unwrap().message.cursor)
            .collect();
        let a = store.attach("box", None, 0, Register::IfIdle, now).unwrap();
        assert_eq!(seqs(&a.backlog), vec![1, 2, 3]);
        assert!(!a.missed && !a.registered);
        assert_eq!(a.position, ids[2]);

        let a = store
            .attach("box", Some(&ids[0]), 0, Register::IfIdle, now)
            .unwrap();
        assert_eq!(seqs(&a.backlog), vec![2, 3]);
        assert!(!a.missed);

        // Up to date: nothing to deliver, registered, cursor unchanged.
        let a = store
            .attach("box", Some(&ids[2]), 0, Register::IfIdle, now)
            .unwrap();
        assert!(a.backlog.is_empty() && a.registered && !a.missed);
        assert_eq!(a.position, ids[2]);

        // Two more evict seqs 1 and 2 (max 3 retained): a reader at seq 1 missed seq 2.
        store.publish(b"box", vec![4], now).unwrap();
        store.publish(b"box", vec![5], now).unwrap();
        let a = store
            .attach("box", Some(&ids[0]), 0, Register::IfIdle, now)
            .unwrap();
        assert!(a.missed);
        assert_eq!(seqs(&a.backlog), vec![3, 4, 5]);
        // A reader at seq 2 missed nothing: seq 3 is still there.
        let a = store
            .attach("box", Some(&ids[1]), 0, Register::IfIdle, now)
            .unwrap();
        assert!(!a.missed);
        assert_eq!(seqs(&a.backlog), vec![3, 4, 5]);
    }

    #[test]
    fn ttl_expiry_shows_as_missed_only_to_those_who_lost_mail() {
        let store = Store::new(limits(), 1);
        let t0 = Instant::now();
        let first = store
            .publish(b"box", b"a".to_vec(), t0)
            .unwrap()
            .message
            .cursor;
        let later = t0 + Duration::from_secs(11);
        let a = store
            .attach("box", None, 0, Register::IfIdle, later)
            .unwrap();
        assert!(a.backlog.is_empty() && !a.missed);
        let zero = Cursor { seq: 0, ..first };
        let a = store
            .attach("box", Some(&zero), 0, Register::IfIdle, later)
            .unwrap();
        assert!(a.missed, "seq 1 expired unread");
        let a = store
            .attach("box", Some(&first), 0, Register::IfIdle, later)
            .unwrap();
        assert!(!a.missed && a.registered);
    }

    #[test]
    fn foreign_or_future_cursor_is_missed_with_everything() {
        let store = Store::new(limits(), 1);
        let now = Instant::now();
        let c = store
            .publish(b"box", b"a".to_vec(), now)
            .unwrap()
            .message
            .cursor;
        for bad in [
            Cursor {
                store: c.store - 1,
                ..c
            },
            Cursor {
                generation: c.generation + 7,
                ..c
            },
            Cursor {
                seq: c.seq + 5,
                ..c
            },
        ] {
            let a = store
                .attach("box", Some(&bad), 0, Register::IfIdle, now)
                .unwrap();
            assert!(a.missed && !a.registered);
            assert_eq!(seqs(&a.backlog), vec![1]);
        }
    }

    #[test]
    fn delete_starts_a_new_incarnation() {
        let store = Store::new(limits(), 1);
        let now = Instant::now();
        let c = store
            .publish(b"box", b"a".to_vec(), now)
            .unwrap()
            .message
            .cursor;
        assert!(store.delete(b"box", now));
        assert!(!store.delete(b"box", now));
        let p = store.publish(b"box", b"b".to_vec(), now).unwrap();
        assert_ne!(p.message.cursor.generation, c.generation);
        assert_eq!(p.message.seq(), 1);
        let a = store
            .attach("box", Some(&c), 0, Register::IfIdle, now)
            .unwrap();
        assert!(a.missed);
        assert_eq!(&*a.backlog[0].payload, b"b");
    }

    #[test]
    fn publish_reports_workers_and_receivers() {
        let store = Store::new(limits(), 3);
        let now = Instant::now();
        store.attach("box", None, 2, Register::Always, now).unwrap();
        store.attach("box", None, 2, Register::Always, now).unwrap();
        store.attach("box", None, 0, Register::IfIdle, now).unwrap();
        let p = store.publish(b"box", b"x".to_vec(), now).unwrap();
        assert_eq!(p.workers, 0b101);
        assert_eq!(p.receivers, 3);
        assert_eq!(store.subscriber_count(b"box"), 3);
        store.detach("box", 2, 2, now);
        store.detach("box", 0, 1, now);
        let p = store.publish(b"box", b"y".to_vec(), now).unwrap();
        assert_eq!((p.workers, p.receivers), (0, 0));
    }

    #[test]
    fn limits_refuse_cleanly() {
        let store = Store::new(limits(), 1);
        let now = Instant::now();
        assert_eq!(
            store.publish(b"a/b", vec![], now).unwrap_err(),
            StoreError::BadName
        );
        assert!(matches!(
            store.publish(b"box", vec![0; 1025], now),
            Err(StoreError::TooLarge { .. })
        ));
        for name in ["a", "b", "c", "d"] {
            store.publish(name.as_bytes(), vec![], now).unwrap();
        }
        assert!(matches!(
            store.publish(b"e", vec![], now),
            Err(StoreError::TooManyMailboxes { .. })
        ));
        assert_eq!(store.stats.rejected_publishes.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn memory_cap_evicts_oldest_of_the_mailbox_first() {
        let mut l = limits();
        l.max_messages = 100;
        l.max_mailbox_bytes = 250;
        let store = Store::new(l, 1);
        let now = Instant::now();
        for i in 0..5u8 {
            store.publish(b"box", vec![i; 100], now).unwrap();
        }
        let a = store.attach("box", None, 0, Register::IfIdle, now).unwrap();
        assert_eq!(seqs(&a.backlog), vec![4, 5]);
        assert_eq!(store.retained_bytes(), 200);
    }

    #[test]
    fn memory_cap_evicts_the_oldest_mail_of_the_whole_store() {
        let mut l = limits();
        l.max_messages = 100;
        l.max_memory = 1000;
        l.max_mailbox_bytes = 1000;
        let store = Store::new(l, 1);
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        store.publish(b"old", vec![0; 300], at(0)).unwrap();
        store.publish(b"mid", vec![0; 300], at(1)).unwrap();
        store.publish(b"new", vec![0; 300], at(2)).unwrap();
        // 900 retained; 300 more needs room: "old" goes first, not "new".
        store.publish(b"new", vec![0; 300], at(3)).unwrap();
        assert!(store.retained_bytes() <= 1000);
        let old = store
            .attach("old", None, 0, Register::Never, at(3))
            .unwrap();
        assert!(old.backlog.is_empty());
        let zero = Cursor {
            seq: 0,
            ..old.position
        };
        assert!(
            store
                .attach("old", Some(&zero), 0, Register::Never, at(3))
                .unwrap()
                .missed
        );
        let new = store
            .attach("new", None, 0, Register::Never, at(3))
            .unwrap();
        assert_eq!(new.backlog.len(), 2);
        assert!(store.stats.evicted_by_memory.load(Ordering::Relaxed) >= 1);
        // Bigger than the whole cap: refused, nothing lost.
        assert!(matches!(
            store.publish(b"new", vec![0; 1001], at(4)),
            Err(StoreError::TooLarge { .. } | StoreError::OutOfMemory { .. })
        ));
    }

    #[test]
    fn sweep_forgets_idle_mailboxes_only_after_grace() {
        let store = Store::new(limits(), 1);
        let t0 = Instant::now();
        store.publish(b"box", b"a".to_vec(), t0).unwrap();
        store.sweep(t0 + Duration::from_secs(11));
        assert_eq!(
            store.mailbox_count(),
            1,
            "kept for cursors of recent readers"
        );
        store.sweep(t0 + Duration::from_secs(11 + 61));
        assert_eq!(store.mailbox_count(), 0);
        assert_eq!(store.retained_bytes(), 0);
    }
}
