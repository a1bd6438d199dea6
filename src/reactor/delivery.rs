//! Fan-out on a worker: a published message reaches each local subscriber
//! of its mailbox by reference to its shared encodings. Streams and
//! WebSockets get it written at once; held polls collect what arrives and
//! are answered at the end of the turn. A subscriber that sees a gap reads
//! the store to catch up, so the store is the one truth.

use std::sync::Arc;

use log::debug;

use super::Worker;
use crate::conn::{Phase, Subscription};
use crate::metrics;
use crate::out::Part;
use crate::shared::ToWorker;
use crate::store::{Attach, Follows, Message};
use crate::transport::encode::{Encoding, encoded};
use crate::transport::{stream, ws_session};

/// What a held poll is answered with: mostly the one message that woke it,
/// kept without an allocation.
type Ready = smallvec::SmallVec<[Arc<Message>; 2]>;

impl Worker {
    /// Adds a registered subscriber to this worker's list for a mailbox;
    /// `attach` is the store's answer that registered it.
    pub(super) fn subscribe_local(&mut self, key: usize, name: &str, attach: &Attach) {
        let cursor = attach.position;
        let (mailbox, slot) = self.subs.add(name, attach.name.as_ref(), key);
        self.conns[key].subs.push(Subscription {
            mailbox,
            cursor,
            slot,
        });
    }

    /// Removes a connection from every mailbox it follows, here and in the
    /// store.
    pub(super) fn unsubscribe(&mut self, key: usize) {
        let subs = self.conns[key].subs.take();
        if subs.is_empty() {
            return;
        }
        if let Phase::WebSocket(ws) = self.conns[key].phase()
            && let Some(session) = ws.bayeux()
        {
            // A Bayeux socket ends: its session keeps where it stood.
            self.bayeux_ws_write_back(session, &subs);
        }
        for sub in subs.drain_all() {
            if let Some(moved) = self.subs.remove(&sub.mailbox, sub.slot, key)
                && let Some(s) = self.conns[moved as usize].subs.get_mut(&sub.mailbox)
            {
                s.slot = sub.slot;
            }
            let last = self.detach_one(&sub.mailbox);
            self.announce_leave(key, &sub.mailbox, last);
        }
        if !self.presence.is_empty() {
            // Skipped when empty: hashing the key is a cost on every answer.
            self.presence.remove(&key);
        }
    }

    /// Hands a published message to this worker's subscribers of its mailbox.
    pub(super) fn deliver(&mut self, message: &Arc<Message>) {
        // Deliveries may end subscriptions (slow readers, byte caps), which
        // edits the list; walk a copy of the keys, kept in a buffer the
        // worker reuses, so fan-out allocates nothing per subscriber.
        let mut keys = std::mem::take(&mut self.fanout_keys);
        if self.subs.keys_into(&message.mailbox, &mut keys) {
            // Once per message and worker, on the real clock: the loop's
            // clock is only as fine as a turn.
            let waited = std::time::Instant::now().saturating_duration_since(message.published_at);
            self.counts.latency.observe(waited);
            for &key in &keys {
                self.deliver_to(key as usize, message);
            }
        }
        self.fanout_keys = keys;
    }

    fn deliver_to(&mut self, key: usize, message: &Arc<Message>) {
        let Some(conn) = self.conns.get_mut(key).filter(|c| !c.dead) else {
            return;
        };
        let Some(sub) = conn.subs.get(&message.mailbox) else {
            return;
        };
        let follows = sub.cursor.follows(&message.cursor);
        if follows == Follows::Seen {
            return; // already delivered (it was in the backlog)
        }
        let in_order = follows == Follows::Next;
        match conn.phase_mut() {
            Phase::Held(held) => {
                if held.ready.is_none() {
                    held.ready = Some(message.clone());
                    held.ready_more = !in_order;
                    self.ready_polls.push(key);
                } else {
                    held.ready_more = true;
                }
            }
            Phase::Stream(_) | Phase::WebSocket(_) => {
                if in_order {
                    self.send_to_stream(key, message);
                } else {
                    self.catch_up(key, &message.mailbox);
                }
            }
            Phase::Head | Phase::Attaching(_) | Phase::BayeuxWaiting(_) | Phase::Draining => {}
        }
    }

    /// A stream saw a gap in `mailbox` (announcements crossed): read the store.
    fn catch_up(&mut self, key: usize, mailbox: &Arc<str>) {
        let conn = &self.conns[key];
        let Some(sub) = conn.subs.get(mailbox) else {
            return;
        };
        let named = conn.subs.is_multiplexed();
        let (messages, missed) = self
            .shared
            .store
            .read_after(mailbox, &sub.cursor, self.now());
        if missed {
            self.counts.missed += 1;
            let conn = &mut self.conns[key];
            let marker = &mut self.scratch.head;
            marker.clear();
            let name = named.then_some(&**mailbox);
            match conn.phase() {
                Phase::WebSocket(ws) if ws.bayeux().is_some() => {
                    crate::endpoint::bayeux::reply::write_missed_frame(mailbox, marker)
                }
                Phase::WebSocket(_) => ws_session::write_missed(name, marker),
                Phase::Stream(s) => {
                    let tail = &mut self.scratch.tail;
                    tail.clear();
                    stream::write_missed(s.kind, s.reply.callback.as_deref(), name, tail);
                    stream::chunk_into(marker, tail, s.reply.http11);
                }
                _ => {}
            }
            if conn
                .send(&mut self.counts.bytes_out, &[Part::Copy(marker)])
                .is_err()
            {
                return self.kill(key);
            }
            if messages.is_empty() {
                let position = self.shared.store.position(mailbox, self.now());
                if let Some(sub) = self.conns[key].subs.get_mut(mailbox) {
                    sub.cursor = position;
                }
            }
        }
        for message in &messages {
            if !self.send_to_stream(key, message) {
                return;
            }
        }
    }

    /// Writes one message to a stream or WebSocket connection, then applies
    /// the stream limits. Returns false if the connection is gone or ended.
    pub(super) fn send_to_stream(&mut self, key: usize, message: &Arc<Message>) -> bool {
        let max_pending = self.shared.config().mailbox.max_pending_bytes;
        let max_bytes = self.shared.config().mailbox.stream_max_bytes;
        let conn = &mut self.conns[key];
        if let Some(sub) = conn.subs.get_mut(&message.mailbox) {
            sub.cursor = message.cursor;
        }
        let named = conn.subs.is_multiplexed();
        let result = match conn.phase() {
            Phase::WebSocket(ws) if ws.bayeux().is_some() => conn.send(
                &mut self.counts.bytes_out,
                &[Part::Shared(encoded(message, Encoding::BayeuxWsFrame))],
            ),
            Phase::WebSocket(_) => {
                let frame = if named {
                    Encoding::NamedWsFrame
                } else {
                    Encoding::WsFrame
                };
                conn.send(
                    &mut self.counts.bytes_out,
                    &[Part::Shared(encoded(message, frame))],
                )
            }
            Phase::Stream(s) => {
                let composite = &mut self.scratch.cursor;
                composite.clear();
                if named {
                    conn.subs.write_cursor(composite);
                }
                let parts = stream::message_parts(
                    s,
                    message,
                    named.then_some(&composite[..]),
                    &mut self.scratch.head,
                );
                conn.send(&mut self.counts.bytes_out, &parts)
            }
            _ => return false,
        };
        if result.is_err() {
            self.kill(key);
            return false;
        }
        self.counts.deliveries += 1;
        if conn.out.pending_bytes() > max_pending {
            // A reader this slow would make us buffer without bound. It
            // resumes from its cursor and loses nothing still retained.
            metrics::inc(&self.shared.metrics.slow_subscribers_closed);
            debug!(
                "{}: closing slow subscriber ({} bytes queued)",
                conn.peer,
                conn.out.pending_bytes()
            );
            self.kill(key);
            return false;
        }
        let sent = match conn.phase_mut() {
            Phase::Stream(s) => &mut s.sent,
            Phase::WebSocket(ws) => &mut ws.sent,
            _ => return true,
        };
        *sent += message.payload.len() as u64;
        if max_bytes.is_some_and(|max| *sent >= max) {
            self.end_stream(key);
            return false;
        }
        true
    }

    /// Sends this turn's announcements: one batch per worker with
    /// subscribers. The other workers' batches go first, so that they write
    /// their share while this worker writes its own, in place: posting at
    /// the end would serialise the two halves of a fan-out.
    pub(super) fn post_outbox(&mut self) {
        for worker in 0..self.outbox.len() {
            if worker != self.id && !self.outbox[worker].is_empty() {
                let batch = std::mem::take(&mut self.outbox[worker]);
                self.shared.peers[worker].post(ToWorker::Deliver(batch));
            }
        }
        if self.outbox[self.id].is_empty() {
            return;
        }
        let mut own = std::mem::take(&mut self.outbox[self.id]);
        for message in &own {
            self.deliver(message);
        }
        own.clear();
        self.outbox[self.id] = own; // keep the allocation
    }

    /// Answers held polls that received messages this turn, in one pass so
    /// that several messages for one mailbox go out in one response.
    pub(super) fn answer_ready_polls(&mut self) {
        let mut ready = std::mem::take(&mut self.ready_polls);
        for &key in &ready {
            let Some(conn) = self.conns.get(key).filter(|c| !c.dead) else {
                continue;
            };
            if !matches!(conn.phase(), Phase::Held(h) if h.ready.is_some()) {
                continue;
            }
            let (messages, missed) = self.collect_ready(key);
            let conn = &mut self.conns[key];
            let Phase::Held(held) = conn.phase_mut() else {
                unreachable!("matched above")
            };
            held.ready = None;
            if messages.is_empty() && missed.is_empty() {
                // Only duplicates arrived: keep waiting.
                held.ready_more = false;
                continue;
            }
            let Phase::Held(held) = conn.set_phase(Phase::Head, &self.shared.metrics) else {
                unreachable!("matched above")
            };
            self.answer_held(key, held, &messages, &missed);
            self.resume_pipelined(key);
        }
        ready.clear();
        if self.ready_polls.is_empty() {
            self.ready_polls = ready; // keep the allocation
        }
    }

    /// What a ready poll answers with, its cursors moved past it: the one
    /// message announced if it followed, else whatever the store holds
    /// after each cursor.
    fn collect_ready(&mut self, key: usize) -> (Ready, Vec<Arc<str>>) {
        let now = self.now();
        let conn = &mut self.conns[key];
        let multiplexed = conn.subs.is_multiplexed();
        let Phase::Held(held) = conn.phase_mut() else {
            return (Ready::new(), Vec::new());
        };
        let mut messages = Ready::new();
        let mut missed = Vec::new();
        // Taken, not cloned: each clone and drop of a message's count is a
        // write to a line every worker answering it writes too.
        let ready = held.ready.take();
        if !held.ready_more && !multiplexed {
            messages.extend(ready);
        } else {
            let conn = &self.conns[key];
            for sub in conn.subs.iter() {
                let (after, lost) = self.shared.store.read_after(&sub.mailbox, &sub.cursor, now);
                if lost {
                    missed.push(sub.mailbox.clone());
                }
                messages.extend(after);
            }
        }
        let store = &self.shared.store;
        let conn = &mut self.conns[key];
        for message in &messages {
            if let Some(sub) = conn.subs.get_mut(&message.mailbox) {
                sub.cursor = message.cursor;
            }
        }
        for mailbox in &missed {
            if !messages.iter().any(|m| m.mailbox == *mailbox)
                && let Some(sub) = conn.subs.get_mut(mailbox)
            {
                // Nothing retained to hand over: stand where the mailbox is.
                sub.cursor = store.position(mailbox, now);
            }
        }
        self.counts.missed += missed.len() as u64;
        (messages, missed)
    }
}
