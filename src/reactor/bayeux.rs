//! The worker's side of Bayeux: announcing client publishes, holding a
//! `/meta/connect` for its session (and letting go of an older one),
//! answering it with the session's replies and deliveries, writing the
//! cursors back, and waking a held connect when its session changed.

use std::sync::Arc;

use super::Worker;
use crate::conn::{Phase, Subs};
use crate::endpoint::Follow;
use crate::endpoint::bayeux::{self, Connect, MAX_WS_WAITING, WsSession, reply, websocket_batch};
use crate::out::Part;
use crate::session::{Hold, Sessions, Wake};
use crate::store::{Answer, Attach, Register};
use crate::store::{Cursor, Message};
use crate::transport::ReplyTo;

impl Worker {
    /// Records where this connect is held. False (answer at once) if the
    /// session is gone, or changed its subscriptions since the connect
    /// read them (a subscribe on another worker crossed it).
    pub(super) fn bayeux_hold(
        &mut self,
        key: usize,
        connect: &Connect,
        follows: &[Follow],
    ) -> bool {
        let hold = Hold {
            worker: self.id,
            key,
            serial: connect.serial,
        };
        let outcome = Sessions::with_held(&connect.session, |s| {
            let same = s.follows.len() == follows.len()
                && follows.iter().all(|f| s.cursor(&f.mailbox).is_some());
            if !same {
                return (false, None);
            }
            (true, s.held.replace(hold))
        });
        match outcome {
            None => false,
            Some((holding, older)) => {
                // One held connect per session: the older one is answered.
                self.shared.wake(older.filter(|o| *o != hold));
                holding
            }
        }
    }

    /// Moves the session's cursors past what this answer delivers, and
    /// marks it no longer held (unless a newer connect holds it).
    pub(super) fn bayeux_write_back<'c>(
        &self,
        connect: &Connect,
        cursors: impl Iterator<Item = (&'c str, Cursor)>,
    ) {
        let now = self.now();
        Sessions::with_held(&connect.session, |s| {
            for (mailbox, cursor) in cursors {
                s.advance(mailbox, cursor);
            }
            if s.held.is_some_and(|h| h.serial == connect.serial) {
                s.held = None;
            }
            s.last_seen = now;
        });
    }

    pub(super) fn answer_bayeux(
        &mut self,
        key: usize,
        reply: &ReplyTo,
        connect: &Connect,
        messages: &[Arc<Message>],
        missed: &[Arc<str>],
    ) {
        let answer = reply::Answer {
            replies: &connect.replies,
            messages,
            missed,
        };
        let parts = reply::build(
            reply,
            &answer,
            self.date.get(),
            &self.shared.config().mailbox.cors_origins,
            &mut self.scratch.bayeux,
        );
        let result = self.conns[key].send_all(&mut self.counts.bytes_out, &parts);
        drop(parts);
        self.counts.deliveries += messages.len() as u64;
        self.finish_response(key, result, reply.keep_alive);
    }

    /// A held connect's session changed: answer it now with what it has;
    /// its client connects again at once and attaches anew. A Bayeux
    /// WebSocket follows the session's new set of mailboxes instead.
    pub(super) fn wake(&mut self, wake: Wake) {
        let Some(conn) = self.conns.get_mut(wake.key).filter(|c| !c.dead) else {
            return;
        };
        if matches!(conn.phase(), Phase::WebSocket(ws)
            if ws.bayeux().is_some_and(|b| b.serial == wake.serial))
        {
            return self.bayeux_ws_sync(wake.key);
        }
        let ours = matches!(conn.phase(), Phase::Held(h)
            if h.bayeux.as_ref().is_some_and(|b| b.serial == wake.serial));
        if !ours {
            return; // answered already, or the slot holds another connection
        }
        let Phase::Held(held) = conn.set_phase(Phase::Head, &self.shared.metrics) else {
            unreachable!("matched above")
        };
        self.ready_polls.retain(|&k| k != wake.key);
        self.answer_held(wake.key, held, &[], &[]);
        self.resume_pipelined(wake.key);
    }

    // ----- Bayeux over WebSocket -----------------------------------------------

    /// Runs one text message of a Bayeux WebSocket; false if the socket
    /// died writing the replies.
    pub(super) fn bayeux_ws_text(&mut self, key: usize, text: &[u8]) -> bool {
        let Phase::WebSocket(ws) = self.conns[key].phase() else {
            return false;
        };
        let Some(session) = ws.bayeux() else {
            return true;
        };
        if session.waiting >= MAX_WS_WAITING {
            let reply =
                br#"{"successful":false,"error":"503::too many requests waiting for the store"}"#;
            return self.send_ws_array(key, reply);
        }
        let mut batch = match websocket_batch(text, session.token.as_deref(), &self.shared) {
            Ok(batch) => batch,
            Err(reply) => return self.send_ws_array(key, &reply),
        };
        let serial = session.serial;
        // Replies that wait for the store go out when it answered.
        self.bayeux_ws_store_calls(key, serial, &mut batch);
        let mut replies = bayeux::join(&batch.replies);
        if let Some(connect) = batch.connect {
            let hold = Hold {
                worker: self.id,
                key,
                serial,
            };
            let held =
                Sessions::with_held(&connect.session, |s| (s.held.replace(hold), s.id.clone()));
            let (older, client_id) = held.unzip();
            self.shared.wake(older.flatten().filter(|o| *o != hold));
            let reply = connect.reply;
            let conn = &mut self.conns[key];
            let Phase::WebSocket(ws) = conn.phase_mut() else {
                unreachable!("matched above")
            };
            let session = ws.bayeux_mut().expect("matched above");
            if let Some(id) = client_id
                && session.client_id.as_ref() != Some(&id)
            {
                session.client_id = Some(id);
            }
            // One connect waits at a time; an earlier one is answered now.
            let earlier = session.pending_connect.take();
            let now: Vec<Vec<u8>> = if connect.hold {
                session.pending_connect = Some(reply);
                earlier.into_iter().collect()
            } else {
                earlier.into_iter().chain([reply]).collect()
            };
            for r in now {
                if !replies.is_empty() {
                    replies.push(b',');
                }
                replies.extend_from_slice(&r);
            }
        }
        self.shared.wake(
            batch
                .wakes
                .into_iter()
                .filter(|w| w.key != key || w.worker != self.id),
        );
        if !replies.is_empty() && !self.send_ws_array(key, &replies) {
            return false;
        }
        self.bayeux_ws_sync(key);
        self.conns.get(key).is_some_and(|c| !c.dead)
    }

    pub(super) fn send_ws_array(&mut self, key: usize, replies: &[u8]) -> bool {
        let mut array = Vec::with_capacity(replies.len() + 2);
        array.push(b'[');
        array.extend_from_slice(replies);
        array.push(b']');
        let head = &mut self.scratch.tail;
        head.clear();
        reply::write_frame(&array, head);
        if self.conns[key]
            .send(&mut self.counts.bytes_out, &[Part::Copy(head)])
            .is_err()
        {
            self.kill(key);
            return false;
        }
        true
    }

    /// Makes the socket follow exactly its session's mailboxes: attaches
    /// the new ones from the session's cursors (sending what they hold),
    /// lets go of those no longer subscribed.
    pub(super) fn bayeux_ws_sync(&mut self, key: usize) {
        let Phase::WebSocket(ws) = self.conns[key].phase() else {
            return;
        };
        let Some(session) = ws.bayeux() else {
            return;
        };
        let serial = session.serial;
        let Some(client) = session.client_id.clone() else {
            return;
        };
        let Some(follows) = self.shared.sessions.with(&client, |s| s.follows.clone()) else {
            return;
        };
        // Let go of what the session no longer follows.
        let subs = self.conns[key].subs.take();
        for sub in subs.drain_all() {
            if follows.iter().any(|(m, _)| **m == *sub.mailbox) {
                self.conns[key].subs.push(sub);
                continue;
            }
            if let Some(moved) = self.subs.remove(&sub.mailbox, sub.slot, key)
                && let Some(s) = self.conns[moved as usize].subs.get_mut(&sub.mailbox)
            {
                s.slot = sub.slot;
            }
            self.detach_one(&sub.mailbox);
        }
        let now = self.now();
        for (mailbox, cursor) in follows {
            let mailbox: Arc<str> = mailbox.as_str().into();
            let conn = &mut self.conns[key];
            if conn.dead || conn.subs.follows(&mailbox) {
                continue;
            }
            let Phase::WebSocket(ws) = conn.phase_mut() else {
                return;
            };
            let session = ws.bayeux_mut().expect("a Bayeux socket, checked above");
            if session.attaching.contains(&mailbox) {
                continue; // the store answers that one later
            }
            let answer =
                self.shared
                    .store
                    .attach(&mailbox, Some(&cursor), self.id, Register::Always, now);
            match answer {
                Answer::Ready(Ok(attach)) => {
                    if !self.bayeux_ws_follow(key, &mailbox, attach) {
                        return;
                    }
                }
                // Refused (a limit): the next sync asks again.
                Answer::Ready(Err(_)) => {}
                Answer::Pending(ticket) => {
                    session.attaching.push(mailbox.clone());
                    self.bayeux_ws_pending(ticket, key, serial, mailbox);
                }
            }
        }
    }

    /// The socket follows `mailbox` from its attach: the missed marker if
    /// so, then the backlog. False if the socket died.
    pub(super) fn bayeux_ws_follow(&mut self, key: usize, mailbox: &str, attach: Attach) -> bool {
        if attach.missed {
            let marker = &mut self.scratch.head;
            marker.clear();
            reply::write_missed_frame(mailbox, marker);
            if self.conns[key]
                .send(&mut self.counts.bytes_out, &[Part::Copy(marker)])
                .is_err()
            {
                if attach.registered {
                    self.detach_one(mailbox);
                }
                self.kill(key);
                return false;
            }
        }
        self.subscribe_local(key, mailbox, &attach);
        for message in &attach.backlog {
            if !self.send_to_stream(key, message) {
                return false;
            }
        }
        true
    }

    /// The session's cursors from what this socket delivered; the session
    /// is no longer held by it.
    pub(super) fn bayeux_ws_write_back(&self, session: &WsSession, subs: &Subs) {
        let Some(client) = &session.client_id else {
            return;
        };
        let now = self.now();
        self.shared.sessions.with(client, |s| {
            for sub in subs.iter() {
                s.advance(&sub.mailbox, sub.cursor);
            }
            if s.held.is_some_and(|h| h.serial == session.serial) {
                s.held = None;
            }
            s.last_seen = now;
        });
    }

    /// At a heartbeat: the session's cursors catch up with the socket, and
    /// its client counts as connecting.
    pub(super) fn bayeux_ws_touch(&mut self, key: usize) {
        let Some(conn) = self.conns.get(key).filter(|c| !c.dead) else {
            return;
        };
        let Phase::WebSocket(ws) = conn.phase() else {
            return;
        };
        let Some(session) = ws.bayeux() else {
            return;
        };
        let Some(client) = &session.client_id else {
            return;
        };
        let now = self.now();
        self.shared.sessions.with(client, |s| {
            for sub in conn.subs.iter() {
                s.advance(&sub.mailbox, sub.cursor);
            }
            s.last_seen = now;
        });
    }
}
