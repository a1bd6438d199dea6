//! The local store as a node's cache of a shared store (`store::redis`):
//! messages whose cursors were allocated elsewhere are put in, in order,
//! rather than published here. The rules of the module above hold: one
//! incarnation (generation) per mailbox at a time, retained messages in seq
//! order with no holes, and every message added under the shard lock is
//! announced to the workers counted there.
//!
//! The generation of a cached mailbox is its epoch in the shared store
//! (time of birth in microseconds, so a later incarnation has a larger
//! one); 0 while it is unborn (deleted, or never published).

use std::sync::Arc;
use std::time::Instant;

use super::{LocalStore, Mailbox};
use crate::store::{Cursor, Message};

/// Where a cached mailbox stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub generation: u64,
    /// First retained seq (`last + 1` when nothing is retained).
    pub first: u64,
    pub last: u64,
}

/// Messages added to the cache, and the workers to announce them to.
#[derive(Debug, Default)]
pub struct Appended {
    pub messages: Vec<Arc<Message>>,
    pub workers: u64,
}

impl Mailbox {
    fn span(&self) -> Span {
        Span {
            generation: self.generation,
            first: self.messages.front().map_or(self.last_seq + 1, |m| m.seq()),
            last: self.last_seq,
        }
    }
}

impl LocalStore {
    /// The cached span of `name`, if this node caches it.
    pub fn span(&self, name: &str) -> Option<Span> {
        self.shard(name).boxes.get(name).map(|m| m.span())
    }

    /// Every cached mailbox and where it stands (to catch up after Redis
    /// came back).
    pub fn spans(&self) -> Vec<(Arc<str>, Span)> {
        let mut all = Vec::new();
        for shard in self.shards.iter() {
            let shard = super::lock(shard);
            all.extend(shard.boxes.values().map(|m| (m.name.clone(), m.span())));
        }
        all
    }

    /// Drops what is cached of `name` and makes it unborn (the shared store
    /// deleted it, or lost it). Its subscribers are told at once: the
    /// returned marker (seq 0 of the unborn incarnation, no payload) is a
    /// gap to every cursor into the old incarnation, so each reads the
    /// cache, finds `missed`, and stands before seq 1 of the next one.
    pub fn unbirth(&self, name: &str, now: Instant) -> Appended {
        let mut shard = self.shard(name);
        let Some(mailbox) = shard.boxes.get_mut(name) else {
            return Appended::default();
        };
        let existed = mailbox.last_seq > 0 || !mailbox.messages.is_empty();
        while !mailbox.messages.is_empty() {
            self.drop_front(mailbox);
        }
        mailbox.generation = Cursor::UNBORN_GENERATION;
        mailbox.last_seq = 0;
        mailbox.touch_idle(now);
        let workers = mailbox.worker_mask();
        let marker = Message::new(
            mailbox.name.clone(),
            Cursor::unborn(self.epoch),
            Box::default(),
            now,
            Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        );
        self.forget_if_unneeded(&mut shard, name, now, self.grace());
        if !existed || workers == 0 {
            return Appended::default();
        }
        Appended {
            messages: vec![Arc::new(marker)],
            workers,
        }
    }

    /// Puts what the shared store holds into the cache: `last` is the
    /// mailbox's last seq there and `entries` (ascending, no holes) the
    /// messages read from it. Creates the entry if `name` is not cached.
    /// The shared store is the truth: an older cached incarnation is
    /// replaced, a hole before the entries drops what was cached before it
    /// (subscribers there then see `missed`), and entries older than the
    /// cached ones fill in at the front while there is room. Nothing
    /// changes if the cache already holds a later incarnation (the read
    /// crossed a notification).
    pub fn ingest(
        &self,
        name: &str,
        generation: u64,
        last: u64,
        entries: Vec<(u64, Vec<u8>)>,
        now: Instant,
    ) -> Appended {
        let mut shard = self.shard(name);
        let mailbox = self.entry(&mut shard, name);
        if generation < mailbox.generation && mailbox.generation != Cursor::UNBORN_GENERATION {
            return Appended::default();
        }
        let _ = self.count_mailbox(mailbox); // a cache holds what it is given
        self.expire(mailbox, now);
        let first_entry = entries.first().map_or(last + 1, |e| e.0);
        if generation != mailbox.generation || first_entry > mailbox.last_seq + 1 {
            while !mailbox.messages.is_empty() {
                self.drop_front(mailbox);
            }
            mailbox.generation = generation;
            mailbox.last_seq = first_entry - 1;
        }
        let mut front = Vec::new();
        let first_cached = mailbox.span().first;
        let mut out = Appended::default();
        for (seq, payload) in entries {
            if seq == mailbox.last_seq + 1 {
                out.messages.push(self.push(mailbox, seq, payload, now));
            } else if seq < first_cached
                && mailbox.messages.len() + front.len() < self.limits.max_messages
            {
                front.push((seq, payload));
            }
        }
        // Older entries go in front only if they join the cached run.
        if front
            .last()
            .is_some_and(|&(seq, _)| seq + 1 == first_cached)
        {
            for (seq, payload) in front.into_iter().rev() {
                let message = self.message(mailbox, seq, payload, now);
                mailbox.messages.push_front(message);
            }
        }
        if last > mailbox.last_seq && out.messages.is_empty() {
            // The shared store holds later mail than it gave us (trimmed or
            // expired there): what we cached before is behind a hole.
            while !mailbox.messages.is_empty() {
                self.drop_front(mailbox);
            }
            mailbox.last_seq = last;
        }
        mailbox.touch_idle(now);
        out.workers = mailbox.worker_mask();
        out
    }

    /// A notification of one new message: cached and announced if it is the
    /// next one of the cached incarnation. `None` if it does not follow
    /// (not cached here, a hole, another incarnation): the caller decides
    /// whether to read the shared store.
    pub fn append_next(
        &self,
        name: &str,
        generation: u64,
        seq: u64,
        payload: Vec<u8>,
        now: Instant,
    ) -> Option<Appended> {
        let mut shard = self.shard(name);
        let mailbox = shard.boxes.get_mut(name)?;
        if mailbox.generation != generation || seq != mailbox.last_seq + 1 {
            return None;
        }
        self.expire(mailbox, now);
        let message = self.push(mailbox, seq, payload, now);
        Some(Appended {
            messages: vec![message],
            workers: mailbox.worker_mask(),
        })
    }

    fn message(
        &self,
        mailbox: &mut Mailbox,
        seq: u64,
        payload: Vec<u8>,
        now: Instant,
    ) -> Arc<Message> {
        let len = payload.len();
        let cursor = Cursor {
            store: self.epoch,
            generation: mailbox.generation,
            seq,
        };
        let message = Arc::new(Message::new(
            mailbox.name.clone(),
            cursor,
            payload.into_boxed_slice(),
            now,
            self.memory.clone(),
        ));
        mailbox.bytes += len;
        self.retained_bytes
            .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
        self.memory
            .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
        message
    }

    /// Appends `seq` (the next one) and trims by count and bytes as a
    /// publish does; the memory cap is the sweep's to keep.
    fn push(
        &self,
        mailbox: &mut Mailbox,
        seq: u64,
        payload: Vec<u8>,
        now: Instant,
    ) -> Arc<Message> {
        use std::sync::atomic::Ordering::Relaxed;
        let len = payload.len();
        while mailbox.messages.len() >= self.limits.max_messages {
            self.drop_front(mailbox);
            self.stats.evicted_by_count.fetch_add(1, Relaxed);
        }
        while !mailbox.messages.is_empty() && mailbox.bytes + len > self.limits.max_mailbox_bytes {
            self.drop_front(mailbox);
            self.stats.evicted_by_memory.fetch_add(1, Relaxed);
        }
        let message = self.message(mailbox, seq, payload, now);
        mailbox.messages.push_back(message.clone());
        mailbox.last_seq = seq;
        mailbox.idle_since = None;
        self.stats.published.fetch_add(1, Relaxed);
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::limits;
    use crate::store::{Follows, Register};

    fn entries(seqs: std::ops::RangeInclusive<u64>) -> Vec<(u64, Vec<u8>)> {
        seqs.map(|s| (s, format!("m{s}").into_bytes())).collect()
    }

    fn seqs(messages: &[Arc<Message>]) -> Vec<u64> {
        messages.iter().map(|m| m.seq()).collect()
    }

    #[test]
    fn a_snapshot_then_notifications_in_order_and_holes_refused() {
        let store = LocalStore::with_store_id(limits(), 1, 7);
        let now = Instant::now();
        let got = store.ingest("box", 100, 3, entries(1..=3), now);
        assert_eq!(seqs(&got.messages), [1, 2, 3]);
        assert_eq!(got.messages[0].id.as_ref(), "7.64-0000000001");
        assert!(
            store
                .append_next("box", 100, 5, b"x".to_vec(), now)
                .is_none(),
            "a hole"
        );
        assert!(
            store
                .append_next("box", 99, 4, b"x".to_vec(), now)
                .is_none()
        );
        assert!(
            store
                .append_next("nope", 100, 1, b"x".to_vec(), now)
                .is_none()
        );
        let next = store
            .append_next("box", 100, 4, b"x".to_vec(), now)
            .unwrap();
        assert_eq!(seqs(&next.messages), [4]);
        // A reread that overlaps adds only what is new.
        let got = store.ingest("box", 100, 6, entries(2..=6), now);
        assert_eq!(seqs(&got.messages), [5, 6]);
        assert_eq!(
            store.span("box"),
            Some(Span {
                generation: 100,
                first: 1,
                last: 6
            })
        );
    }

    #[test]
    fn older_entries_fill_in_at_the_front_and_a_later_epoch_replaces() {
        let store = LocalStore::with_store_id(limits(), 1, 7);
        let now = Instant::now();
        store.ingest("box", 100, 6, entries(5..=6), now);
        let got = store.ingest("box", 100, 6, entries(2..=6), now);
        assert!(got.messages.is_empty());
        assert_eq!(store.span("box").unwrap().first, 2);
        let since = Cursor {
            store: 7,
            generation: 100,
            seq: 2,
        };
        let a = store
            .attach("box", Some(&since), 0, Register::Always, now)
            .unwrap();
        assert_eq!((seqs(&a.backlog), a.missed), (vec![3, 4, 5, 6], false));
        // Stale: an earlier incarnation changes nothing.
        assert!(
            store
                .ingest("box", 50, 9, entries(9..=9), now)
                .messages
                .is_empty()
        );
        let got = store.ingest("box", 200, 1, entries(1..=1), now);
        assert_eq!(got.workers, 1, "the subscriber's worker is told");
        assert_eq!(since.follows(&got.messages[0].cursor), Follows::Gap);
        let (_, missed) = store.read_after("box", &since, now);
        assert!(missed, "another incarnation");
    }

    #[test]
    fn unborn_after_a_delete_elsewhere_reads_the_next_incarnation_from_its_start() {
        let store = LocalStore::with_store_id(limits(), 1, 7);
        let now = Instant::now();
        store.ingest("box", 100, 2, entries(1..=2), now);
        let a = store.attach("box", None, 0, Register::Always, now).unwrap();
        let marker = store.unbirth("box", now);
        assert_eq!(marker.workers, 1);
        assert_eq!(a.position.follows(&marker.messages[0].cursor), Follows::Gap);
        let (backlog, missed) = store.read_after("box", &a.position, now);
        assert!(backlog.is_empty() && missed);
        let position = store.position("box", now);
        assert_eq!(position, Cursor::unborn(7));
        let got = store.ingest("box", 300, 1, entries(1..=1), now);
        assert_eq!(position.follows(&got.messages[0].cursor), Follows::Next);
        assert_eq!(a.position.follows(&got.messages[0].cursor), Follows::Gap);
    }

    #[test]
    fn a_trimmed_history_leaves_a_hole_that_reads_as_missed() {
        let store = LocalStore::with_store_id(limits(), 1, 7);
        let now = Instant::now();
        store.ingest("box", 100, 2, entries(1..=2), now);
        store.ingest("box", 100, 20, entries(18..=20), now);
        let since = Cursor {
            store: 7,
            generation: 100,
            seq: 2,
        };
        let (backlog, missed) = store.read_after("box", &since, now);
        assert_eq!((seqs(&backlog), missed), (vec![18, 19, 20], true));
        store.ingest("box", 100, 30, Vec::new(), now);
        assert_eq!(store.position("box", now).seq, 30);
    }
}
