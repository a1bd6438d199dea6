//! Carrying out a subscription plan: attach to the store (now, or when a
//! remote store answers), then hold a long-poll, open a stream, or upgrade
//! to WebSocket, with each transport's framing from `transport`. A plan may
//! follow several mailboxes; each is attached on its own.

use std::sync::Arc;

use smallvec::SmallVec;

use log::debug;

use super::Worker;
use crate::conn::{Attaching, Held, Phase};
use crate::endpoint::{Follow, Subscribe};
use crate::metrics;
use crate::out::Part;
use crate::store::{Answer, Attach, AttachResult, Cursor, Message, Ticket};
use crate::transport::longpoll;
use crate::transport::stream::{self, StreamState};
use crate::transport::ws_session::{self, Step, WsState};
use crate::transport::{ReplyTo, StreamKind, Transport};

/// The store's answers for a plan's mailboxes, in its order: one for most
/// plans, kept without an allocation.
type Attaches = SmallVec<[Attach; 1]>;

impl Worker {
    pub(super) fn subscribe(&mut self, key: usize, plan: Subscribe) {
        let register = plan.register();
        let now = self.now();
        let mut results = SmallVec::with_capacity(plan.follows.len());
        let mut tickets = Vec::new();
        for (i, follow) in plan.follows.iter().enumerate() {
            let answer = self.shared.store.attach(
                &follow.mailbox,
                follow.since.as_ref(),
                self.id,
                register,
                now,
            );
            match answer {
                Answer::Ready(result) => results.push(Some(result)),
                Answer::Pending(ticket) => {
                    results.push(None);
                    tickets.push((ticket, i));
                }
            }
        }
        if tickets.is_empty() {
            let results = results.into_iter().flatten().collect();
            return self.carry_out(key, plan, results);
        }
        for &(ticket, i) in &tickets {
            self.attaching.insert(ticket, (key, i));
        }
        let attaching = Attaching {
            plan,
            results,
            tickets,
        };
        let conn = &mut self.conns[key];
        conn.set_phase(Phase::Attaching(Box::new(attaching)), &self.shared.metrics);
        // A store that does not answer within a poll's time is down.
        let limit = self.after(self.shared.config().mailbox.poll_timeout);
        self.set_deadline(key, limit);
    }

    /// A store's late answer (`ToWorker::Attached`).
    pub(super) fn attached(&mut self, ticket: Ticket, result: AttachResult) {
        let Some(result) = self.bayeux_attached(ticket, result) else {
            return;
        };
        let Some((key, index)) = self.attaching.remove(&ticket) else {
            // Its connection went away meanwhile: give back the registration.
            if let Some(name) = self.abandoned.remove(&ticket)
                && result.as_ref().is_ok_and(|a| a.registered)
            {
                self.shared.store.detach(&name, self.id, 1, self.now());
            }
            return;
        };
        let conn = &mut self.conns[key];
        let Phase::Attaching(attaching) = conn.phase_mut() else {
            unreachable!("only attaching connections are in the map")
        };
        attaching.results[index] = Some(result);
        attaching.tickets.retain(|&(t, _)| t != ticket);
        if !attaching.tickets.is_empty() {
            return;
        }
        let Phase::Attaching(attaching) = conn.set_phase(Phase::Head, &self.shared.metrics) else {
            unreachable!("matched above")
        };
        let Attaching { plan, results, .. } = *attaching;
        let results = results.into_iter().flatten().collect();
        self.carry_out(key, plan, results);
    }

    fn carry_out(&mut self, key: usize, plan: Subscribe, results: SmallVec<[AttachResult; 1]>) {
        let mut attaches = Attaches::with_capacity(results.len());
        let mut failure = None;
        for (follow, result) in plan.follows.iter().zip(results) {
            match result {
                Ok(attach) => {
                    if failure.is_some() && attach.registered {
                        self.detach_one(&follow.mailbox);
                    }
                    attaches.push(attach);
                }
                Err(e) => {
                    if failure.is_none() {
                        // Give back what the earlier mailboxes registered.
                        for (f, a) in plan.follows.iter().zip(&attaches) {
                            if a.registered {
                                self.detach_one(&f.mailbox);
                            }
                        }
                    }
                    failure = failure.or(Some(e));
                }
            }
        }
        if let Some(e) = failure {
            let reply = &plan.reply;
            let cors = reply.cors.clone();
            return self.respond_error(key, e.into(), reply.http11, reply.keep_alive, &cors);
        }
        for (follow, attach) in plan.follows.iter().zip(&attaches) {
            self.counts.missed += u64::from(attach.missed);
            if follow.since.is_some() {
                match attach.missed {
                    true => self.counts.resumes_missed += 1,
                    false => self.counts.resumes_ok += 1,
                }
            }
        }
        let expires_at = plan.token_expires_at.map(|t| self.unix_to_worker_ms(t));
        match plan.transport {
            Transport::WebSocket => self.start_websocket(key, plan, attaches, expires_at),
            Transport::Stream(kind) => self.start_stream(key, kind, plan, attaches, expires_at),
            Transport::LongPoll | Transport::Jsonp => {
                self.start_poll(key, plan, attaches, expires_at)
            }
        }
    }

    /// Gives back one registration the store counted for us; true if the
    /// mailbox has no subscriber left.
    pub(super) fn detach_one(&self, mailbox: &str) -> bool {
        self.shared.store.detach(mailbox, self.id, 1, self.now())
    }

    /// When a stream ends by itself: `mailbox.stream-max-duration` or the
    /// token's expiry, whichever comes first.
    fn stream_end(&self, token_expiry: Option<u64>) -> Option<u64> {
        let by_duration = self
            .shared
            .config()
            .mailbox
            .stream_max_duration
            .map(|d| self.after(d));
        match (by_duration, token_expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn first_beat(&self, ends_at: Option<u64>) -> u64 {
        let heartbeat = self.after(self.shared.config().mailbox.heartbeat);
        ends_at.map_or(heartbeat, |e| e.min(heartbeat))
    }

    // ----- long-poll and JSONP ----------------------------------------------

    fn start_poll(
        &mut self,
        key: usize,
        plan: Subscribe,
        attaches: Attaches,
        expires_at: Option<u64>,
    ) {
        let may_hold = plan.bayeux.as_ref().is_none_or(|b| b.hold);
        if may_hold
            && attaches.iter().all(|a| a.registered)
            && plan
                .bayeux
                .as_ref()
                .is_none_or(|b| self.bayeux_hold(key, b, &plan.follows))
        {
            self.announce_joins(key, &plan, &attaches);
            for (follow, attach) in plan.follows.iter().zip(&attaches) {
                self.subscribe_local(key, &follow.mailbox, attach);
            }
            let held = Held {
                reply: plan.reply,
                ready: None,
                ready_more: false,
                bayeux: plan.bayeux,
            };
            self.conns[key].set_phase(Phase::Held(held), &self.shared.metrics);
            let timeout = self.after(self.shared.config().mailbox.poll_timeout);
            self.set_deadline(key, expires_at.map_or(timeout, |e| e.min(timeout)));
            return;
        }
        // Something to answer at once: the mailboxes that were quiet wait
        // no longer.
        let mut messages: Vec<Arc<Message>> = Vec::new();
        let mut missed: Vec<Arc<str>> = Vec::new();
        let mut cursor = Vec::with_capacity(32 * attaches.len());
        let mut positions: Vec<Cursor> = Vec::with_capacity(attaches.len());
        for (i, (follow, attach)) in plan.follows.iter().zip(attaches).enumerate() {
            if attach.registered {
                self.detach_one(&follow.mailbox);
            }
            if attach.missed {
                missed.push(follow.mailbox.as_str().into());
            }
            if i > 0 {
                cursor.push(b',');
            }
            attach.position.write(&mut cursor);
            positions.push(attach.position);
            messages.extend(attach.backlog);
        }
        if let Some(connect) = &plan.bayeux {
            let positions = plan
                .follows
                .iter()
                .map(|f| f.mailbox.as_str())
                .zip(positions);
            self.bayeux_write_back(connect, positions);
            return self.answer_bayeux(key, &plan.reply, connect, &messages, &missed);
        }
        let answer = longpoll::Answer {
            messages: &messages,
            missed: &missed,
            cursor: &cursor,
            named: plan.is_multiplexed(),
            head_only: plan.head_only,
        };
        self.answer_poll(key, &plan.reply, &answer);
    }

    /// Writes a long-poll (or JSONP) response and moves the connection on.
    pub(super) fn answer_poll(
        &mut self,
        key: usize,
        reply: &ReplyTo,
        answer: &longpoll::Answer<'_>,
    ) {
        let conn = &mut self.conns[key];
        let parts = longpoll::build(
            reply,
            answer,
            self.date.get(),
            &self.shared.config().mailbox.cors_origins,
            &mut self.scratch.poll,
        );
        let result = conn.send_all(&mut self.counts.bytes_out, &parts);
        drop(parts);
        if !answer.head_only {
            self.counts.deliveries += answer.messages.len() as u64;
        }
        self.finish_response(key, result, reply.keep_alive);
    }

    /// The poll timeout passed: an empty answer with the cursor unchanged.
    pub(super) fn answer_timeout(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let Phase::Held(held) = conn.set_phase(Phase::Head, &self.shared.metrics) else {
            return;
        };
        self.ready_polls.retain(|&k| k != key);
        self.answer_held(key, held, &[], &[]);
        self.resume_pipelined(key);
    }

    /// Answers a held poll with what arrived (the subscriptions' cursors
    /// already moved past it), and lets go of its mailboxes.
    pub(super) fn answer_held(
        &mut self,
        key: usize,
        held: Held,
        messages: &[Arc<Message>],
        missed: &[Arc<str>],
    ) {
        let reply = &held.reply;
        if let Some(connect) = &held.bayeux {
            let subs = &self.conns[key].subs;
            self.bayeux_write_back(connect, subs.iter().map(|s| (&*s.mailbox, s.cursor)));
            self.unsubscribe(key);
            return self.answer_bayeux(key, reply, connect, messages, missed);
        }
        let subs = &self.conns[key].subs;
        let named = subs.is_multiplexed();
        let mut cursor = std::mem::take(&mut self.scratch.cursor);
        cursor.clear();
        subs.write_cursor(&mut cursor);
        self.unsubscribe(key);
        let answer = longpoll::Answer {
            messages,
            missed,
            cursor: &cursor,
            named,
            head_only: false,
        };
        self.answer_poll(key, reply, &answer);
        self.scratch.cursor = cursor;
    }

    // ----- streams: SSE, NDJSON, iframe --------------------------------------

    fn start_stream(
        &mut self,
        key: usize,
        kind: StreamKind,
        plan: Subscribe,
        attaches: Attaches,
        expires_at: Option<u64>,
    ) {
        if !plan.head_only {
            self.announce_joins(key, &plan, &attaches);
        }
        let reply = plan.reply;
        let cors_origins = &self.shared.config().mailbox.cors_origins;
        let head = &mut self.scratch.head;
        head.clear();
        stream::write_head(kind, &reply, self.date.get(), cors_origins, head);
        if plan.head_only {
            let result = self.conns[key].send(
                &mut self.counts.bytes_out,
                &[Part::Copy(&self.scratch.head)],
            );
            return self.finish_response(key, result, reply.keep_alive && reply.http11);
        }
        let opening = &mut self.scratch.tail;
        opening.clear();
        let retry_ms = self.shared.config().mailbox.sse_retry.as_millis();
        stream::write_preamble(kind, retry_ms, opening);
        let named = plan.follows.len() > 1;
        for (follow, attach) in plan.follows.iter().zip(&attaches) {
            if attach.missed {
                let mailbox = named.then_some(follow.mailbox.as_str());
                stream::write_missed(kind, reply.callback.as_deref(), mailbox, opening);
            }
        }
        if !opening.is_empty() {
            stream::chunk_into(head, opening, reply.http11);
        }
        let ends_at = self.stream_end(expires_at);
        let state = StreamState {
            kind,
            reply,
            sent: 0,
            ends_at: ends_at.unwrap_or(u64::MAX),
        };
        self.open(key, Phase::Stream(state), &plan.follows, attaches, ends_at);
    }

    /// Sends the opening in `scratch.head`, joins the subscriber lists and
    /// delivers the backlogs: the last steps of a stream or WebSocket.
    fn open(
        &mut self,
        key: usize,
        phase: Phase,
        follows: &[Follow],
        attaches: Attaches,
        ends_at: Option<u64>,
    ) {
        self.conns[key].set_phase(phase, &self.shared.metrics);
        let beat = self.first_beat(ends_at);
        self.set_deadline(key, beat);
        if self.conns[key]
            .send(
                &mut self.counts.bytes_out,
                &[Part::Copy(&self.scratch.head)],
            )
            .is_err()
        {
            // On our lists first, so reaping detaches (and announces) them.
            for (follow, attach) in follows.iter().zip(&attaches) {
                self.subscribe_local(key, &follow.mailbox, attach);
            }
            return self.kill(key);
        }
        for (follow, attach) in follows.iter().zip(&attaches) {
            self.subscribe_local(key, &follow.mailbox, attach);
        }
        for attach in &attaches {
            for message in &attach.backlog {
                if !self.send_to_stream(key, message) {
                    return;
                }
            }
        }
    }

    /// Ends a stream cleanly (last chunk, or a WebSocket close) so the client
    /// reconnects with its cursor, then closes once the output is written.
    pub(super) fn end_stream(&mut self, key: usize) {
        self.unsubscribe(key);
        let conn = &mut self.conns[key];
        self.scratch.head.clear();
        match conn.phase() {
            Phase::Stream(s) if s.reply.http11 => {
                self.scratch.head.extend_from_slice(stream::END_CHUNK)
            }
            Phase::WebSocket(_) => ws_session::write_going_away(&mut self.scratch.head),
            _ => {}
        }
        let result = conn.send(
            &mut self.counts.bytes_out,
            &[Part::Copy(&self.scratch.head)],
        );
        self.finish_response(key, result, false);
    }

    // ----- WebSocket -----------------------------------------------------------

    fn start_websocket(
        &mut self,
        key: usize,
        mut plan: Subscribe,
        attaches: Attaches,
        expires_at: Option<u64>,
    ) {
        let client_key = plan
            .websocket_key
            .as_deref()
            .expect("the endpoint checked the upgrade");
        let head = &mut self.scratch.head;
        head.clear();
        ws_session::write_handshake(client_key, self.date.get(), head);
        let named = plan.follows.len() > 1;
        for (follow, attach) in plan.follows.iter().zip(&attaches) {
            if attach.missed {
                ws_session::write_missed(named.then_some(follow.mailbox.as_str()), head);
            }
        }
        let ends_at = self.stream_end(expires_at);
        let config = self.shared.config();
        let state = if let Some(session) = plan.bayeux_ws.take() {
            WsState::with_bayeux(ends_at, *session)
        } else if config.mailbox.upstream {
            let upstream = ws_session::Upstream {
                mailboxes: plan.upstream.clone(),
                subject: plan.subject.clone(),
                multiplexed: named,
            };
            WsState::with_upstream(ends_at, upstream, config.mailbox.max_message_size)
        } else {
            WsState::new(ends_at)
        };
        drop(config);
        let phase = Phase::WebSocket(state);
        self.announce_joins(key, &plan, &attaches);
        self.open(key, phase, &plan.follows, attaches, ends_at);
    }

    pub(super) fn websocket_input(&mut self, key: usize, buf: &mut [u8]) -> usize {
        let conn = &mut self.conns[key];
        let Phase::WebSocket(ws) = conn.phase_mut() else {
            return buf.len(); // closed: the rest is moot
        };
        self.scratch.head.clear();
        let mut texts = std::mem::take(&mut self.scratch.texts);
        let (used, step) = ws_session::read_frames(ws, buf, &mut self.scratch.head, &mut texts);
        if !texts.is_empty() {
            if let Some(up) = ws.upstream() {
                let (mailboxes, subject, multiplexed) =
                    (up.mailboxes.clone(), up.subject.clone(), up.multiplexed);
                for text in &texts {
                    self.upstream_message(&mailboxes, subject.as_deref(), multiplexed, text);
                }
            } else if ws.bayeux().is_some() && step == Step::NeedMore {
                // A pong owed goes out after the replies; both are in order.
                for text in texts.drain(..) {
                    if !self.bayeux_ws_text(key, &text) {
                        return buf.len();
                    }
                }
                self.scratch.texts = texts;
                self.after_io(key);
                return used;
            }
            texts.clear();
        }
        self.scratch.texts = texts;
        let conn = &mut self.conns[key];
        match step {
            // An owed pong goes out now if nothing is queued ahead of it.
            Step::NeedMore => self.after_io(key),
            Step::Closed | Step::Violated(_) => {
                if let Step::Violated(reason) = step {
                    metrics::inc(&self.shared.metrics.websocket_violations);
                    debug!("{}: websocket violation: {reason}", conn.peer);
                }
                let _ = conn.send(
                    &mut self.counts.bytes_out,
                    &[Part::Copy(&self.scratch.head)],
                );
                self.close_websocket(key);
            }
        }
        used
    }

    /// Our close frame is queued: stop delivering, close once it is written.
    fn close_websocket(&mut self, key: usize) {
        self.unsubscribe(key);
        self.conns[key].set_phase(Phase::Draining, &self.shared.metrics);
        let drain = self.after(self.shared.config().server.shutdown_timeout);
        self.set_deadline(key, drain);
        self.after_io(key);
    }
}
