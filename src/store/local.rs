//! The in-memory store: sharded, each shard behind its own mutex, so two
//! publishes only contend when their mailboxes hash to the same shard; there
//! is no global lock on the per-message path.
//!
//! Ordering and the "never miss, never repeat" promise rest on one rule: a
//! subscriber reads the backlog and registers its worker *under the same shard
//! lock*, so any message published after that read is announced to its worker.
//! Announcements may reach a worker out of order (two publishers, two
//! channels); workers compare sequence numbers ([`Cursor::follows`]) and fall
//! back to [`LocalStore::read_after`] when they see a gap.
//!
//! Readers create nothing: a read of a mailbox that does not exist answers
//! the unborn cursor. A waiting subscriber of such a mailbox leaves an entry
//! that counts subscribers only (not against `mailbox.max-mailboxes`) and
//! goes the moment its last subscriber does.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod cache;
mod counts;

pub use cache::{Appended, Span};
use counts::Counts;

use super::is_valid_name;
use super::{Attach, Cursor, Message, Published, Register, StoreError, StoreLimits, StoreStats};

mod restore;
pub(crate) use restore::MailboxImage;

/// Shards of the store. 64 keeps contention negligible for any worker count
/// we allow (at most 64) while costing only 64 small hash maps.
pub(crate) const SHARDS: usize = 64;

/// Most workers: subscriber presence is a bit per worker in a u64.
pub const MAX_WORKERS: usize = 64;

/// A mailbox that held mail and is now empty, without subscribers, is
/// forgotten only after this long idle (and never sooner than the message
/// TTL), so a long-polling client that re-polls a quiet mailbox keeps a valid
/// cursor instead of seeing `missed`.
const MIN_IDLE_BEFORE_FORGET: Duration = Duration::from_secs(60);

struct Mailbox {
    name: Arc<str>,
    generation: u64,
    last_seq: u64,
    messages: VecDeque<Arc<Message>>,
    bytes: usize,
    /// Subscriber connections per worker. A worker may count a connection a
    /// little longer than it waits (until its detach runs, at the end of the
    /// event that ended it), never shorter: over-counting costs a wasted
    /// announcement, under-counting a lost message.
    subscribers: Counts,
    /// The incarnation this one continues (generation, its last seq): set
    /// when a disk store restarts after a crash and moves every mailbox to
    /// a new generation, so that ids are never reused for messages that were
    /// lost. Cursors into it up to that seq read on without `missed`; its
    /// retained messages keep their ids, and seqs run on across both.
    /// Boxed: set only after a crash, and 16 bytes inline would move every
    /// entry into the next malloc size class.
    prev: Option<Box<(u64, u64)>>,
    /// Counted against `mailbox.max-mailboxes`: it has held mail. An entry
    /// that only holds waiting subscribers is not.
    counted: bool,
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

    /// Nothing left that a reader could need: no mail, no subscribers, and
    /// either no history a cursor could point into or the grace passed.
    fn is_forgettable(&self, now: Instant, grace: Duration) -> bool {
        self.messages.is_empty()
            && self.subscriber_total() == 0
            && (self.last_seq == 0
                || self
                    .idle_since
                    .is_some_and(|since| now.saturating_duration_since(since) >= grace))
    }

    fn touch_idle(&mut self, now: Instant) {
        if self.messages.is_empty() && self.subscriber_total() == 0 {
            self.idle_since.get_or_insert(now);
        } else {
            self.idle_since = None;
        }
    }

    /// A cursor into the incarnation this one continues, up to where that
    /// one ended, stands at the same seq of this one.
    fn continued(&self, store: u64, since: &Cursor) -> Cursor {
        match self.prev.as_deref() {
            Some(&(generation, last_seq))
                if since.store == store
                    && since.generation == generation
                    && since.seq <= last_seq =>
            {
                Cursor {
                    generation: self.generation,
                    ..*since
                }
            }
            _ => *since,
        }
    }

    /// Messages with seq > cursor, and whether the cursor lost anything.
    fn after(&self, store: u64, since: Option<&Cursor>) -> (Vec<Arc<Message>>, bool) {
        let position = self.position(store);
        let Some(since) = since else {
            return (self.messages.iter().cloned().collect(), false);
        };
        let since = &self.continued(store, since);
        let unborn = since.generation != position.generation;
        if !since.reads(&position) || (!unborn && since.seq > self.last_seq) {
            return (self.messages.iter().cloned().collect(), true);
        }
        let since_seq = if unborn { 0 } else { since.seq };
        let first_retained = self.messages.front().map_or(self.last_seq + 1, |m| m.seq());
        let missed = since_seq + 1 < first_retained;
        // Messages are in seq order with no gaps, so the first wanted one is
        // at a computable offset.
        let skip = (since_seq + 1).saturating_sub(first_retained) as usize;
        (self.messages.iter().skip(skip).cloned().collect(), missed)
    }
}

struct Shard {
    /// Boxed: a slot of the table is 24 bytes rather than 136, and tables
    /// run a third to a half empty, so an entry costs less than inline
    /// (about 170 bytes against 220 at 10,000 mailboxes), the more so as
    /// most entries of a busy gateway only count one waiting subscriber.
    boxes: HashMap<Arc<str>, Box<Mailbox>>,
}

pub struct LocalStore {
    shards: Box<[Mutex<Shard>]>,
    /// Start of this store in microseconds since the Unix epoch: the first part
    /// of every id, so cursors from an earlier process are recognised.
    epoch: u64,
    /// Generation 0 is the unborn incarnation (see [`Cursor::unborn`]).
    next_generation: AtomicU64,
    mailboxes: AtomicUsize,
    retained_bytes: AtomicUsize,
    retained_messages: AtomicUsize,
    /// Payload plus cached encodings of retained messages; shared with each
    /// message, which adds its encodings as they are built.
    memory: Arc<AtomicUsize>,
    workers: usize,
    limits: StoreLimits,
    pub stats: StoreStats,
    /// A cache of a shared store: new and deleted mailboxes are unborn
    /// rather than given a generation of ours.
    cache: bool,
}

impl LocalStore {
    pub fn new(limits: StoreLimits, workers: usize) -> LocalStore {
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        LocalStore::with_epoch(limits, workers, epoch)
    }

    /// A node's cache of a shared store (`cache.rs`): its cursors carry
    /// `store_id`, one constant for the whole cluster, so that cursors from
    /// any node (and any restart) are recognised, and the generations are
    /// the shared store's epochs, 0 (unborn) until one is known.
    pub fn with_store_id(limits: StoreLimits, workers: usize, store_id: u64) -> LocalStore {
        let mut store = LocalStore::with_epoch(limits, workers, store_id);
        store.cache = true;
        store
    }

    /// A store whose ids start with `epoch`: the disk store keeps its epoch
    /// across restarts so that cursors from before resume.
    pub(crate) fn with_epoch(limits: StoreLimits, workers: usize, epoch: u64) -> LocalStore {
        assert!(
            (1..=MAX_WORKERS).contains(&workers),
            "1 to {MAX_WORKERS} workers (a u64 mask)"
        );
        LocalStore {
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
            retained_messages: AtomicUsize::new(0),
            memory: Arc::new(AtomicUsize::new(0)),
            workers,
            limits,
            stats: StoreStats::default(),
            cache: false,
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

    pub fn retained_messages(&self) -> usize {
        self.retained_messages.load(Ordering::Relaxed)
    }

    pub fn memory_used(&self) -> usize {
        self.memory.load(Ordering::Relaxed)
    }

    fn shard(&self, name: &str) -> MutexGuard<'_, Shard> {
        let mut hasher = DefaultHasher::new();
        name.hash(&mut hasher);
        let index = hasher.finish() as usize % SHARDS;
        lock(&self.shards[index])
    }

    fn fresh_generation(&self) -> u64 {
        if self.cache {
            Cursor::UNBORN_GENERATION
        } else {
            self.next_generation.fetch_add(1, Ordering::Relaxed)
        }
    }

    /// A mailbox entry that holds no mail yet (and so is not counted).
    fn new_mailbox(&self, name: &str) -> Mailbox {
        Mailbox {
            name: Arc::from(name),
            generation: self.fresh_generation(),
            last_seq: 0,
            messages: VecDeque::new(),
            bytes: 0,
            subscribers: Counts::new(self.workers),
            prev: None,
            counted: false,
            idle_since: None,
        }
    }

    fn entry<'s>(&self, shard: &'s mut Shard, name: &str) -> &'s mut Mailbox {
        if !shard.boxes.contains_key(name) {
            let mailbox = self.new_mailbox(name);
            shard.boxes.insert(mailbox.name.clone(), Box::new(mailbox));
        }
        shard.boxes.get_mut(name).expect("inserted above")
    }

    /// Counts a mailbox against `mailbox.max-mailboxes` when it first
    /// receives mail.
    fn count_mailbox(&self, mailbox: &mut Mailbox) -> Result<(), StoreError> {
        if mailbox.counted {
            return Ok(());
        }
        let limit = self.limits.max_mailboxes;
        self.mailboxes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .map_err(|_| StoreError::TooManyMailboxes { limit })?;
        mailbox.counted = true;
        Ok(())
    }

    /// Removes `name` if nothing in it is needed any more.
    fn forget_if_unneeded(&self, shard: &mut Shard, name: &str, now: Instant, grace: Duration) {
        if shard
            .boxes
            .get(name)
            .is_some_and(|m| m.is_forgettable(now, grace))
            && let Some(mailbox) = shard.boxes.remove(name)
            && mailbox.counted
        {
            self.mailboxes.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn grace(&self) -> Duration {
        self.limits.message_ttl.max(MIN_IDLE_BEFORE_FORGET)
    }

    fn drop_front(&self, mailbox: &mut Mailbox) {
        if let Some(old) = mailbox.messages.pop_front() {
            let len = old.payload.len();
            mailbox.bytes -= len;
            self.retained_bytes.fetch_sub(len, Ordering::Relaxed);
            self.retained_messages.fetch_sub(1, Ordering::Relaxed);
            self.memory
                .fetch_sub(len + old.release_encodings(), Ordering::Relaxed);
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
        self.publish_logged(name, payload, now, |_| {})
    }

    /// A publish that hands what it stored (the message, its receivers and
    /// their workers) to `log` while the mailbox's shard is still locked, so
    /// that a log fed from several workers holds each mailbox's messages in
    /// seq order.
    pub(crate) fn publish_logged(
        &self,
        name: &[u8],
        payload: Vec<u8>,
        now: Instant,
        log: impl FnOnce(&Published),
    ) -> Result<Published, StoreError> {
        let result = self.try_publish(name, payload, now, log);
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
            StoreError::BadName | StoreError::Unavailable(_) => return,
            StoreError::TooLarge { .. } => &self.stats.rejected_too_large,
            StoreError::TooManyMailboxes { .. } => &self.stats.rejected_mailbox_limit,
            StoreError::TooManySubscribers { .. } => &self.stats.rejected_subscriber_limit,
            StoreError::OutOfMemory { .. } => &self.stats.rejected_out_of_memory,
            StoreError::Disk(_) => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn try_publish(
        &self,
        name: &[u8],
        payload: Vec<u8>,
        now: Instant,
        log: impl FnOnce(&Published),
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
        if self.memory_used() + len > self.limits.max_memory {
            // Free a little more than needed so that a store at its cap does
            // not rescan on every publish. Done before taking our own shard
            // lock: a thread never holds two.
            let slack = self.limits.max_memory / 16;
            self.reclaim(self.limits.max_memory.saturating_sub(len + slack));
        }
        let mut shard = self.shard(name);
        let mailbox = self.entry(&mut shard, name);
        if let Err(e) = self.count_mailbox(mailbox) {
            self.forget_if_unneeded(&mut shard, name, now, self.grace());
            return Err(e);
        }
        self.expire(mailbox, now);
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
            self.memory.clone(),
        ));
        self.retain(mailbox, message.clone());
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        let published = Published {
            message,
            workers: mailbox.worker_mask(),
            receivers: mailbox.subscriber_total(),
        };
        log(&published);
        Ok(published)
    }

    /// Makes room for `message` (by count, then per-mailbox bytes; each
    /// eviction is visible to late readers as `missed`) and keeps it.
    fn retain(&self, mailbox: &mut Mailbox, message: Arc<Message>) {
        let len = message.payload.len();
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
        mailbox.messages.push_back(message);
        mailbox.bytes += len;
        mailbox.idle_since = None;
        self.retained_bytes.fetch_add(len, Ordering::Relaxed);
        self.retained_messages.fetch_add(1, Ordering::Relaxed);
        self.memory.fetch_add(len, Ordering::Relaxed);
    }

    /// Evicts the oldest messages of the whole store until at most `target`
    /// bytes of memory are used (`mailbox.max-memory`). Each round takes the
    /// front (oldest) message of every mailbox in age order, so the store
    /// sheds its globally oldest mail first; readers see it as `missed`.
    fn reclaim(&self, target: usize) {
        while self.memory_used() > target {
            let mut fronts: Vec<(Instant, usize, Arc<str>)> = Vec::new();
            for (index, shard) in self.shards.iter().enumerate() {
                let shard = lock(shard);
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
                if self.memory_used() <= target {
                    return;
                }
                let mut shard = lock(&self.shards[index]);
                if let Some(mailbox) = shard.boxes.get_mut(&*name) {
                    self.drop_front(mailbox);
                    self.stats.evicted_by_memory.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

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
        let Some(mailbox) = shard.boxes.get_mut(name) else {
            return self.attach_unborn(&mut shard, name, since, worker, register);
        };
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
        let mut first = false;
        if wants {
            let limit = self.limits.max_subscribers;
            let total = mailbox.subscriber_total();
            if limit > 0 && total >= limit as u64 {
                return Err(StoreError::TooManySubscribers { limit });
            }
            first = total == 0;
            mailbox.subscribers[worker] += 1;
        }
        mailbox.touch_idle(now);
        Ok(Attach {
            backlog,
            missed,
            position,
            registered: wants,
            first,
            name: wants.then(|| mailbox.name.clone()),
        })
    }

    /// A read of a mailbox that does not exist: nothing to deliver, the
    /// unborn position, and an entry only if a subscriber waits.
    fn attach_unborn(
        &self,
        shard: &mut Shard,
        name: &str,
        since: Option<&Cursor>,
        worker: usize,
        register: Register,
    ) -> Result<Attach, StoreError> {
        let unborn = Cursor::unborn(self.epoch);
        // A cursor into an incarnation that is gone (deleted, forgotten, or
        // another process's) may have lost mail.
        let missed = since.is_some_and(|c| !c.reads(&unborn));
        let wants = match register {
            Register::Always => true,
            Register::IfIdle => !missed,
            Register::Never => false,
        };
        let mut shared = None;
        if wants {
            // The first subscriber of a mailbox is always within
            // `max-subscribers` (at least 1 when set).
            let mailbox = self.entry(shard, name);
            mailbox.subscribers[worker] += 1;
            shared = Some(mailbox.name.clone());
        }
        let position = match since {
            Some(c) if !missed => *c,
            _ => unborn,
        };
        let first = wants && self.entry_total(shard, name) == 1;
        Ok(Attach {
            backlog: Vec::new(),
            missed,
            position,
            registered: wants,
            first,
            name: shared,
        })
    }

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
            None => (Vec::new(), !since.reads(&Cursor::unborn(self.epoch))),
        }
    }

    pub fn position(&self, name: &str, now: Instant) -> Cursor {
        let mut shard = self.shard(name);
        match shard.boxes.get_mut(name) {
            Some(mailbox) => {
                self.expire(mailbox, now);
                mailbox.position(self.epoch)
            }
            None => Cursor::unborn(self.epoch),
        }
    }

    /// True when that left the mailbox without subscribers (on any
    /// worker): presence's `leave`.
    pub fn detach(&self, name: &str, worker: usize, count: u32, now: Instant) -> bool {
        let mut shard = self.shard(name);
        let Some(mailbox) = shard.boxes.get_mut(name) else {
            return false;
        };
        let n = &mut mailbox.subscribers[worker];
        debug_assert!(*n >= count, "detaching more subscribers than attached");
        let had = *n > 0 && count > 0;
        *n = n.saturating_sub(count);
        mailbox.touch_idle(now);
        let last = had && mailbox.subscriber_total() == 0;
        // A waiting subscriber's entry goes with it.
        self.forget_if_unneeded(&mut shard, name, now, self.grace());
        last
    }

    /// Subscribers of `name` on all workers (under its shard's lock).
    fn entry_total(&self, shard: &Shard, name: &str) -> u64 {
        shard.boxes.get(name).map_or(0, |m| m.subscriber_total())
    }

    /// DEL: drops the retained messages and starts a new incarnation, so every
    /// cursor into the old one is answered with `missed`. Subscribers stay
    /// attached and receive what is published next. Returns whether the
    /// mailbox existed.
    pub fn delete(&self, name: &[u8], now: Instant) -> bool {
        self.delete_logged(name, now, |_, _| {})
    }

    /// A DEL that hands the mailbox and its new generation to `log` under
    /// the shard lock (see [`LocalStore::publish_logged`]).
    pub(crate) fn delete_logged(
        &self,
        name: &[u8],
        now: Instant,
        log: impl FnOnce(&Arc<str>, u64),
    ) -> bool {
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
        mailbox.generation = self.fresh_generation();
        mailbox.last_seq = 0;
        mailbox.prev = None;
        log(&mailbox.name, mailbox.generation);
        mailbox.touch_idle(now);
        self.forget_if_unneeded(&mut shard, name, now, self.grace());
        had_messages
    }

    pub fn subscriber_count(&self, name: &[u8]) -> u64 {
        let Ok(name) = std::str::from_utf8(name) else {
            return 0;
        };
        self.shard(name)
            .boxes
            .get(name)
            .map_or(0, |m| m.subscriber_total())
    }

    /// Names of mailboxes that have subscribers right now (PUBSUB CHANNELS).
    /// Each shard is locked only to copy its names; the caller filters them
    /// (a pattern, say) with no lock held, so a slow filter stalls nobody.
    pub fn active_names(&self) -> Vec<Arc<str>> {
        let mut names = Vec::new();
        for shard in self.shards.iter() {
            let shard = lock(shard);
            names.extend(
                shard
                    .boxes
                    .values()
                    .filter(|m| m.subscriber_total() > 0)
                    .map(|m| m.name.clone()),
            );
        }
        names
    }

    /// Drops expired messages, forgets idle empty mailboxes, and brings the
    /// store back under `mailbox.max-memory` if cached encodings grew past
    /// it since the last publish. Each shard is locked only for its own pass.
    pub fn sweep(&self, now: Instant) {
        let grace = self.grace();
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            let mut forgotten = 0;
            shard.boxes.retain(|_, mailbox| {
                self.expire(mailbox, now);
                mailbox.touch_idle(now);
                let forget = mailbox.is_forgettable(now, grace);
                if forget && mailbox.counted {
                    forgotten += 1;
                }
                !forget
            });
            if forgotten > 0 {
                self.mailboxes.fetch_sub(forgotten, Ordering::Relaxed);
            }
        }
        if self.memory_used() > self.limits.max_memory {
            self.reclaim(self.limits.max_memory);
        }
    }
}

/// A poisoned shard means a panic while holding it; the data is plain and
/// still consistent enough to serve, so carry on rather than taking every
/// later publish down with it.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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
        assert!(is_valid_name(b"chat/room42/x"));
        for bad in [&b"/a"[..], b"a/", b"a//b", b"/"] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
        assert!(!is_valid_name(b"a b"));
        assert!(!is_valid_name("é".as_bytes()));
    }

    #[test]
    fn ids_increase_and_sort_as_strings() {
        let store = LocalStore::new(limits(), 1);
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
        let store = LocalStore::new(limits(), 1);
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
        let store = LocalStore::new(limits(), 1);
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
        let store = LocalStore::new(limits(), 1);
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
        let store = LocalStore::new(limits(), 1);
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
        let store = LocalStore::new(limits(), 3);
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
        let store = LocalStore::new(limits(), 1);
        let now = Instant::now();
        assert_eq!(
            store.publish(b"a//b", vec![], now).unwrap_err(),
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
        let store = LocalStore::new(l, 1);
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
        let store = LocalStore::new(l, 1);
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
        let store = LocalStore::new(limits(), 1);
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

    #[test]
    fn reads_of_a_mailbox_that_does_not_exist_create_nothing() {
        let mut l = limits();
        l.max_mailboxes = 1;
        let store = LocalStore::new(l, 1);
        let now = Instant::now();
        for i in 0..1000 {
            let name = format!("nobody-{i}");
            let a = store.attach(&name, None, 0, Register::Never, now).unwrap();
            assert!(a.backlog.is_empty() && !a.missed && !a.registered);
            assert_eq!(a.position.generation, Cursor::UNBORN_GENERATION);
        }
        assert_eq!(store.mailbox_count(), 0);
        // A publisher still finds room.
        store.publish(b"real", b"x".to_vec(), now).unwrap();
    }

    #[test]
    fn a_waiting_subscriber_is_counted_apart_and_freed_when_it_leaves() {
        let mut l = limits();
        l.max_mailboxes = 1;
        let store = LocalStore::new(l, 1);
        let now = Instant::now();
        for i in 0..10 {
            let a = store
                .attach(&format!("w{i}"), None, 0, Register::IfIdle, now)
                .unwrap();
            assert!(a.registered);
        }
        assert_eq!(store.mailbox_count(), 0, "waiting is not a mailbox");
        assert_eq!(store.subscriber_count(b"w3"), 1);
        for i in 0..10 {
            store.detach(&format!("w{i}"), 0, 1, now);
        }
        assert!(store.active_names().is_empty());
        assert_eq!(lock(&store.shards[0]).boxes.len(), 0);
        let total: usize = store.shards.iter().map(|s| lock(s).boxes.len()).sum();
        assert_eq!(total, 0, "nothing kept for empty mailboxes");
        store.publish(b"w0", b"x".to_vec(), now).unwrap();
        assert_eq!(store.mailbox_count(), 1);
    }

    #[test]
    fn an_unborn_cursor_receives_the_first_message_without_missed() {
        let store = LocalStore::new(limits(), 1);
        let now = Instant::now();
        let a = store.attach("box", None, 0, Register::IfIdle, now).unwrap();
        store.detach("box", 0, 1, now);
        store.publish(b"box", b"first".to_vec(), now).unwrap();
        let b = store
            .attach("box", Some(&a.position), 0, Register::IfIdle, now)
            .unwrap();
        assert!(!b.missed);
        assert_eq!(seqs(&b.backlog), vec![1]);
        // A cursor of another process's store is told it missed.
        let foreign = Cursor::unborn(a.position.store + 1);
        assert!(store.read_after("box", &foreign, now).1);
        assert!(store.read_after("nothing", &foreign, now).1);
        assert!(!store.read_after("nothing", &a.position, now).1);
    }

    #[test]
    fn cached_encodings_count_against_max_memory() {
        let mut l = limits();
        l.max_messages = 100;
        l.max_memory = 1000;
        let store = LocalStore::new(l, 1);
        let now = Instant::now();
        let p = store.publish(b"a", vec![b'<'; 100], now).unwrap();
        // Escaping `<` as \u003c makes the JSON six times the payload.
        p.message.encoded_with(0, |m| vec![0; m.payload.len() * 6]);
        assert_eq!(store.memory_used(), 700);
        assert_eq!(store.retained_bytes(), 100);
        store.publish(b"b", vec![0; 400], now).unwrap();
        assert!(store.memory_used() <= 1000, "{}", store.memory_used());
        assert_eq!(
            store
                .read_after("a", &Cursor::unborn(store.epoch), now)
                .0
                .len(),
            0
        );
        // Encodings built after eviction are not the store's.
        p.message.encoded_with(1, |_| vec![0; 500]);
        assert!(store.memory_used() <= 1000);
        store.sweep(now);
        assert!(store.memory_used() <= 1000);
    }

    /// Every mailbox entry is a heap chunk of its own: past 128 bytes glibc
    /// hands out the next size class, 16 bytes more for every mailbox
    /// (docs/BENCHMARKS.md counts them per idle subscriber).
    #[test]
    fn mailbox_entry_stays_in_its_size_class() {
        let size = std::mem::size_of::<Mailbox>();
        assert!(size <= 128, "Mailbox grew to {size} bytes");
    }
}
