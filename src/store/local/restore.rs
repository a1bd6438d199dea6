//! What a disk store needs of the in-memory store beyond serving: rebuild
//! it from a log (each record put back with the id it had, the retention
//! limits applied as a publish applies them), move every mailbox to a new
//! generation after a crash, and read out what is retained so the log can
//! be rewritten from it.

use super::*;

/// One mailbox as compaction writes it: its state, then its messages.
pub(crate) struct MailboxImage {
    pub name: Arc<str>,
    pub generation: u64,
    /// The seq before the first of `messages` (the last seq when empty).
    pub before: u64,
    pub last_seq: u64,
    pub prev: Option<(u64, u64)>,
    pub messages: Vec<Arc<Message>>,
}

impl LocalStore {
    /// The first part of every id this store gives.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The generation the next new incarnation gets.
    pub(crate) fn next_generation(&self) -> u64 {
        self.next_generation.load(Ordering::Relaxed)
    }

    /// Makes sure no incarnation born from now on takes `seen` or below.
    pub(crate) fn raise_next_generation(&self, seen: u64) {
        self.next_generation
            .fetch_max(seen.saturating_add(1), Ordering::Relaxed);
    }

    /// The entry for `name`, created at `generation` if there is none.
    fn restored_entry<'s>(
        &self,
        shard: &'s mut Shard,
        name: &str,
        generation: u64,
    ) -> &'s mut Mailbox {
        if !shard.boxes.contains_key(name) {
            let mailbox = Mailbox {
                generation,
                ..self.new_mailbox(name)
            };
            shard.boxes.insert(mailbox.name.clone(), Box::new(mailbox));
        }
        shard.boxes.get_mut(name).expect("inserted above")
    }

    fn clear(&self, mailbox: &mut Mailbox) {
        while !mailbox.messages.is_empty() {
            self.drop_front(mailbox);
        }
    }

    /// Puts back a message read from the log, with the id it had. A gap in
    /// the seqs (a record lost to corruption) drops what came before it, so
    /// a reader from before the gap is told `missed`; an expired message
    /// only moves the mailbox's last seq on.
    pub(crate) fn restore_publish(
        &self,
        name: &str,
        (generation, seq): (u64, u64),
        published_at: Instant,
        payload: Box<[u8]>,
        now: Instant,
    ) {
        self.raise_next_generation(generation);
        let len = payload.len();
        let fits = len <= self.limits.max_mailbox_bytes && len <= self.limits.max_memory;
        if fits && self.memory_used() + len > self.limits.max_memory {
            let slack = self.limits.max_memory / 16;
            self.reclaim(self.limits.max_memory.saturating_sub(len + slack));
        }
        let mut shard = self.shard(name);
        let mailbox = self.restored_entry(&mut shard, name, generation);
        let continues = mailbox.generation == generation
            || mailbox
                .prev
                .as_deref()
                .is_some_and(|&(g, last)| g == generation && seq <= last);
        if !continues {
            // Forgotten and born again: a new incarnation.
            self.clear(mailbox);
            mailbox.generation = generation;
            mailbox.prev = None;
            mailbox.last_seq = 0;
        }
        if seq != mailbox.last_seq + 1 {
            self.clear(mailbox);
        }
        mailbox.last_seq = seq;
        if self.count_mailbox(mailbox).is_err() {
            shard.boxes.remove(name);
            return;
        }
        self.expire(mailbox, now);
        if fits && now.saturating_duration_since(published_at) < self.limits.message_ttl {
            let cursor = Cursor {
                store: self.epoch,
                generation,
                seq,
            };
            let message = Message::new(
                mailbox.name.clone(),
                cursor,
                payload,
                published_at,
                self.memory.clone(),
            );
            self.retain(mailbox, Arc::new(message));
        }
        mailbox.touch_idle(now);
    }

    /// A DEL read from the log: the mailbox is gone (it does not come back).
    pub(crate) fn restore_delete(&self, name: &str, generation: u64, now: Instant) {
        self.raise_next_generation(generation);
        let mut shard = self.shard(name);
        if let Some(mailbox) = shard.boxes.get_mut(name) {
            self.clear(mailbox);
            mailbox.generation = generation;
            mailbox.last_seq = 0;
            mailbox.prev = None;
            mailbox.touch_idle(now);
            self.forget_if_unneeded(&mut shard, name, now, self.grace());
        }
    }

    /// A mailbox's state read from the log: written by compaction before
    /// its messages, and after a crash to move it to a new generation. The
    /// messages already restored stay when the state continues from them.
    pub(crate) fn restore_state(
        &self,
        name: &str,
        (generation, last_seq): (u64, u64),
        prev: Option<(u64, u64)>,
        now: Instant,
    ) {
        self.raise_next_generation(generation);
        if let Some((g, _)) = prev {
            self.raise_next_generation(g);
        }
        let mut shard = self.shard(name);
        let mailbox = self.restored_entry(&mut shard, name, generation);
        let continued = mailbox.last_seq == last_seq
            && (mailbox.generation == generation
                || prev.is_some_and(|p| p.0 == mailbox.generation));
        if !continued {
            self.clear(mailbox);
        }
        mailbox.generation = generation;
        mailbox.last_seq = last_seq;
        mailbox.prev = prev.map(Box::new);
        if last_seq > 0 && self.count_mailbox(mailbox).is_err() {
            shard.boxes.remove(name);
            return;
        }
        mailbox.touch_idle(now);
    }

    /// After a crash: every mailbox moves to a new generation that continues
    /// the old one, so ids the lost messages had are never given again,
    /// while cursors up to what survived read on. Returns each mailbox's
    /// new state, for the log.
    pub(crate) fn continue_all(&self) -> Vec<MailboxImage> {
        let mut moved = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            for mailbox in shard.boxes.values_mut() {
                if mailbox.last_seq == 0 {
                    continue;
                }
                mailbox.prev = Some(Box::new((mailbox.generation, mailbox.last_seq)));
                mailbox.generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
                moved.push(MailboxImage {
                    name: mailbox.name.clone(),
                    generation: mailbox.generation,
                    before: mailbox.last_seq,
                    last_seq: mailbox.last_seq,
                    prev: mailbox.prev.as_deref().copied(),
                    messages: Vec::new(),
                });
            }
        }
        moved
    }

    /// What shard `index` retains, for compaction. The shard is locked
    /// while its messages are cloned (a pointer each), nothing longer.
    pub(crate) fn snapshot_shard(&self, index: usize, now: Instant, out: &mut Vec<MailboxImage>) {
        let mut shard = lock(&self.shards[index]);
        for mailbox in shard.boxes.values_mut() {
            self.expire(mailbox, now);
            if mailbox.last_seq == 0 && mailbox.messages.is_empty() {
                continue; // only waiting subscribers: nothing a restart needs
            }
            out.push(MailboxImage {
                name: mailbox.name.clone(),
                generation: mailbox.generation,
                before: mailbox
                    .messages
                    .front()
                    .map_or(mailbox.last_seq, |m| m.seq() - 1),
                last_seq: mailbox.last_seq,
                prev: mailbox.prev.as_deref().copied(),
                messages: mailbox.messages.iter().cloned().collect(),
            });
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

    fn seqs(store: &LocalStore, name: &str) -> Vec<u64> {
        let a = store.attach(name, None, 0, Register::Never, Instant::now());
        a.unwrap().backlog.iter().map(|m| m.seq()).collect()
    }

    #[test]
    fn restored_messages_keep_their_ids_and_limits_apply() {
        let store = LocalStore::with_epoch(limits(), 1, 77);
        let now = Instant::now();
        for seq in 1..=5 {
            store.restore_publish("box", (9, seq), now, vec![seq as u8].into(), now);
        }
        assert_eq!(seqs(&store, "box"), vec![3, 4, 5], "max-messages 3");
        let p = store.publish(b"box", b"new".to_vec(), now).unwrap();
        assert_eq!(p.message.id.as_ref(), "4d.9-0000000006");
        assert!(store.next_generation() > 9);
        // An expired one moves the seq on but is not kept.
        let old = now - Duration::from_secs(11);
        store.restore_publish("old", (2, 1), old, b"x".to_vec().into(), now);
        assert!(seqs(&store, "old").is_empty());
        assert_eq!(store.position("old", now).seq, 1);
    }

    #[test]
    fn a_delete_in_the_log_keeps_the_mailbox_gone() {
        let store = LocalStore::with_epoch(limits(), 1, 1);
        let now = Instant::now();
        store.restore_publish("box", (3, 1), now, b"a".to_vec().into(), now);
        store.restore_delete("box", 4, now);
        assert_eq!(store.mailbox_count(), 0);
        assert_eq!(store.position("box", now).generation, 0);
        store.restore_publish("box", (4, 1), now, b"b".to_vec().into(), now);
        assert_eq!(seqs(&store, "box"), vec![1]);
        assert_eq!(store.position("box", now).generation, 4);
    }

    #[test]
    fn after_a_crash_old_cursors_read_on_and_lost_ones_are_missed() {
        let store = LocalStore::with_epoch(limits(), 1, 1);
        let now = Instant::now();
        for seq in 1..=2 {
            store.restore_publish("box", (3, seq), now, b"m".to_vec().into(), now);
        }
        let moved = store.continue_all();
        assert_eq!(moved.len(), 1);
        assert_eq!(moved[0].prev, Some((3, 2)));
        let p = store.publish(b"box", b"new".to_vec(), now).unwrap();
        assert_eq!(
            (p.message.cursor.generation, p.message.seq()),
            (moved[0].generation, 3)
        );
        let at = |seq| Cursor {
            store: 1,
            generation: 3,
            seq,
        };
        let (got, missed) = store.read_after("box", &at(1), now);
        assert!(!missed);
        assert_eq!(got.iter().map(|m| m.seq()).collect::<Vec<_>>(), vec![2, 3]);
        // It saw seq 3 of generation 3, which did not survive.
        assert!(store.read_after("box", &at(3), now).1);
        // The state record written for the move restores the same.
        let again = LocalStore::with_epoch(limits(), 1, 1);
        for seq in 1..=2 {
            again.restore_publish("box", (3, seq), now, b"m".to_vec().into(), now);
        }
        let m = &moved[0];
        again.restore_state("box", (m.generation, m.last_seq), m.prev, now);
        assert_eq!(seqs(&again, "box"), vec![1, 2]);
        assert!(!again.read_after("box", &at(2), now).1);
    }

    #[test]
    fn a_snapshot_restores_to_the_same_store() {
        let store = LocalStore::with_epoch(limits(), 1, 5);
        let now = Instant::now();
        for i in 0..5u8 {
            store.publish(b"a", vec![i], now).unwrap();
        }
        store.publish(b"b", vec![9], now).unwrap();
        let mut images = Vec::new();
        for i in 0..SHARDS {
            store.snapshot_shard(i, now, &mut images);
        }
        let copy = LocalStore::with_epoch(limits(), 1, 5);
        for image in &images {
            copy.restore_state(
                &image.name,
                (image.generation, image.before),
                image.prev,
                now,
            );
            for m in &image.messages {
                let id = (m.cursor.generation, m.seq());
                copy.restore_publish(&image.name, id, m.published_at, m.payload.clone(), now);
            }
        }
        assert_eq!(seqs(&copy, "a"), vec![3, 4, 5]);
        assert_eq!(store.position("a", now), copy.position("a", now));
        assert_eq!(store.position("b", now), copy.position("b", now));
        let zero = Cursor {
            seq: 1,
            ..copy.position("a", now)
        };
        assert!(copy.read_after("a", &zero, now).1, "seq 2 was evicted");
    }
}
