//! Bayeux's calls to the store, which a shared store (Redis, cluster mode)
//! answers later: a batch's client publishes and its subscriptions'
//! starting positions, and a Bayeux WebSocket's attaches. The local store
//! answers at once and nothing waits. A waiting HTTP request sits in
//! `Phase::BayeuxWaiting` (the poll timeout answers 503); a WebSocket goes
//! on serving and sends the waiting replies when they are complete. No
//! worker blocks: answers arrive on the inbox (`ToWorker::Attached`,
//! `ToWorker::Published`) and are routed here by ticket.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::Worker;
use crate::conn::Phase;
use crate::endpoint::Context;
use crate::endpoint::bayeux::protocol::{Batch, Lookup};
use crate::endpoint::bayeux::{self, Plan, Then};
use crate::session::{MailboxName, Pattern};
use crate::store::{Answer, Attach, Register, StoreError, Ticket};

/// What the worker waits on for Bayeux, by ticket and by batch serial.
#[derive(Default)]
pub(super) struct Waits {
    tickets: HashMap<Ticket, Pending>,
    batches: HashMap<u64, Waiting>,
}

/// What one ticket's answer is for.
enum Pending {
    /// A publish of a waiting batch: its reply's index.
    Publish { batch: u64, reply: usize },
    /// A subscription's position, for a waiting batch.
    Position { batch: u64, lookup: Lookup },
    /// A Bayeux WebSocket's attach of one of its session's mailboxes.
    Attach {
        key: usize,
        serial: u64,
        mailbox: Arc<str>,
    },
}

/// A batch whose replies wait for `outstanding` answers.
struct Waiting {
    key: usize,
    outstanding: usize,
    to: WaitFor,
}

enum WaitFor {
    /// An HTTP request: finish the plan (respond, or attach its connect).
    Http(Box<Plan>, Context),
    /// A WebSocket's (its session's serial): send the replies as a frame.
    Ws { serial: u64, replies: Vec<Value> },
}

impl Waiting {
    fn replies(&mut self) -> &mut Vec<Value> {
        match &mut self.to {
            WaitFor::Http(plan, _) => &mut plan.batch.replies,
            WaitFor::Ws { replies, .. } => replies,
        }
    }
}

/// Turns a reply into a refusal, keeping its channel, id and subscription.
fn refuse(reply: &mut Value, why: String) {
    reply["successful"] = json!(false);
    reply["error"] = json!(why);
}

fn publish_error(e: &StoreError) -> String {
    match e {
        StoreError::TooLarge { .. } => format!("413::{e}"),
        _ => format!("503::{e}"),
    }
}

impl Worker {
    /// An HTTP request's Bayeux batch: wakes, publishes and lookups, then
    /// the answer now or once the store answered.
    pub(super) fn bayeux_plan(&mut self, key: usize, ctx: &Context, mut plan: Plan) {
        self.shared.wake(std::mem::take(&mut plan.batch.wakes));
        let serial = self.shared.sessions.next_serial();
        let outstanding = self.bayeux_store_calls(serial, &mut plan.batch);
        if outstanding == 0 {
            return self.bayeux_finish(key, ctx, plan);
        }
        let ctx = Context {
            http11: ctx.http11,
            keep_alive: ctx.keep_alive,
            cors: ctx.cors.clone(),
        };
        self.bayeux_waits.batches.insert(
            serial,
            Waiting {
                key,
                outstanding,
                to: WaitFor::Http(Box::new(plan), ctx),
            },
        );
        let conn = &mut self.conns[key];
        conn.set_phase(Phase::BayeuxWaiting(serial), &self.shared.metrics);
        // A store that does not answer within a poll's time is down.
        let limit = self.after(self.shared.config().mailbox.poll_timeout);
        self.set_deadline(key, limit);
    }

    fn bayeux_finish(&mut self, key: usize, ctx: &Context, plan: Plan) {
        match plan.finish(&self.shared) {
            Then::Respond(response) => self.respond(key, ctx, response),
            Then::Connect(subscribe) => self.subscribe(key, *subscribe),
        }
    }

    /// A WebSocket batch's publishes and lookups: true if its replies wait
    /// (kept here, sent when answered), false to send them now.
    pub(super) fn bayeux_ws_store_calls(
        &mut self,
        key: usize,
        serial: u64,
        batch: &mut Batch,
    ) -> bool {
        let batch_serial = self.shared.sessions.next_serial();
        let outstanding = self.bayeux_store_calls(batch_serial, batch);
        if outstanding == 0 {
            return false;
        }
        let replies = std::mem::take(&mut batch.replies);
        self.bayeux_waits.batches.insert(
            batch_serial,
            Waiting {
                key,
                outstanding,
                to: WaitFor::Ws { serial, replies },
            },
        );
        if let Phase::WebSocket(ws) = self.conns[key].phase_mut()
            && let Some(session) = ws.bayeux_mut()
        {
            session.waiting += 1;
        }
        true
    }

    /// Asks the store for the batch's publishes and positions; what it
    /// answers now goes into the replies (and the sessions) at once.
    /// Returns how many answers come later, under `serial`.
    fn bayeux_store_calls(&mut self, serial: u64, batch: &mut Batch) -> usize {
        let now = self.now();
        let mut outstanding = 0;
        for publish in std::mem::take(&mut batch.publishes) {
            let answer = self.shared.store.publish(
                publish.mailbox.as_bytes(),
                publish.payload,
                now,
                self.id,
            );
            match answer {
                Answer::Ready(Ok(published)) => {
                    // Announced like a backend's publish; wildcards learn
                    // of the mailbox.
                    let wakes = self.shared.sessions.on_publish(&published.message);
                    self.shared.wake(wakes);
                    let mut mask = published.workers;
                    while mask != 0 {
                        let worker = mask.trailing_zeros() as usize;
                        mask &= mask - 1;
                        self.outbox[worker].push(published.message.clone());
                    }
                }
                Answer::Ready(Err(e)) => {
                    refuse(&mut batch.replies[publish.reply], publish_error(&e));
                }
                Answer::Pending(ticket) => {
                    // Stored through Redis: every node's subscribers, this
                    // one's too, get it from the subscription.
                    let pending = Pending::Publish {
                        batch: serial,
                        reply: publish.reply,
                    };
                    self.bayeux_waits.tickets.insert(ticket, pending);
                    outstanding += 1;
                }
            }
        }
        for lookup in std::mem::take(&mut batch.lookups) {
            // No cursor: the answer's position is where the mailbox stands.
            let answer =
                self.shared
                    .store
                    .attach(&lookup.mailbox, None, self.id, Register::Never, now);
            match answer {
                Answer::Ready(result) => {
                    if let Err(why) = self.bayeux_looked_up(&lookup, result) {
                        refuse(&mut batch.replies[lookup.reply], why);
                    }
                }
                Answer::Pending(ticket) => {
                    let pending = Pending::Position {
                        batch: serial,
                        lookup,
                    };
                    self.bayeux_waits.tickets.insert(ticket, pending);
                    outstanding += 1;
                }
            }
        }
        outstanding
    }

    /// A subscription's position is known: the session follows the mailbox
    /// from there (unless it unsubscribed meanwhile, or a wildcard found
    /// the mailbox first), and its held connect attaches anew.
    fn bayeux_looked_up(
        &self,
        lookup: &Lookup,
        result: Result<Attach, StoreError>,
    ) -> Result<(), String> {
        let mailbox = &lookup.mailbox;
        let exact = Pattern::Exact(mailbox.to_string());
        let sessions = &self.shared.sessions;
        match result {
            Ok(attach) => {
                let held = sessions.with(&lookup.client_id, |s| {
                    if !s.subs.contains(&exact) || s.cursor(mailbox).is_some() {
                        return None;
                    }
                    s.follows
                        .push((MailboxName::new(&**mailbox), attach.position));
                    s.held
                });
                self.shared.wake(held.flatten());
                Ok(())
            }
            Err(e) => {
                // The subscription did not take: the client is told so
                // and may subscribe again.
                sessions.with(&lookup.client_id, |s| {
                    if s.cursor(mailbox).is_none() {
                        s.subs.retain(|p| *p != exact);
                    }
                });
                Err(format!("503::{e}"))
            }
        }
    }

    /// Routes a late attach answer that is Bayeux's; gives it back if not.
    pub(super) fn bayeux_attached(
        &mut self,
        ticket: Ticket,
        result: Result<Attach, StoreError>,
    ) -> Option<Result<Attach, StoreError>> {
        let Some(pending) = self.bayeux_waits.tickets.remove(&ticket) else {
            return Some(result);
        };
        match pending {
            Pending::Position { batch, lookup } => {
                let outcome = self.bayeux_looked_up(&lookup, result);
                self.bayeux_answered(batch, lookup.reply, outcome);
            }
            Pending::Attach {
                key,
                serial,
                mailbox,
            } => self.bayeux_ws_attached(key, serial, mailbox, result),
            Pending::Publish { batch, reply } => {
                // Not an attach's ticket; count it answered all the same.
                self.bayeux_answered(batch, reply, Ok(()));
            }
        }
        None
    }

    /// Takes the late publish answers that are Bayeux's out of `done`.
    pub(super) fn bayeux_published(&mut self, done: &mut Vec<(Ticket, Result<u64, StoreError>)>) {
        if self.bayeux_waits.tickets.is_empty() {
            return;
        }
        let mut answered = Vec::new();
        done.retain(|(ticket, answer)| {
            match self.bayeux_waits.tickets.remove(ticket) {
                Some(Pending::Publish { batch, reply }) => {
                    answered.push((batch, reply, answer.as_ref().err().map(publish_error)));
                    false
                }
                Some(other) => {
                    // Not a publish's ticket: leave it where it was.
                    self.bayeux_waits.tickets.insert(*ticket, other);
                    true
                }
                None => true,
            }
        });
        for (batch, reply, error) in answered {
            self.bayeux_answered(batch, reply, error.map_or(Ok(()), Err));
        }
    }

    /// One answer of a waiting batch; the last one sends its replies.
    fn bayeux_answered(&mut self, serial: u64, reply: usize, outcome: Result<(), String>) {
        let Some(waiting) = self.bayeux_waits.batches.get_mut(&serial) else {
            return;
        };
        if let Err(why) = outcome
            && let Some(r) = waiting.replies().get_mut(reply)
        {
            refuse(r, why);
        }
        waiting.outstanding -= 1;
        if waiting.outstanding > 0 {
            return;
        }
        let Some(waiting) = self.bayeux_waits.batches.remove(&serial) else {
            return;
        };
        let key = waiting.key;
        let Some(conn) = self.conns.get_mut(key).filter(|c| !c.dead) else {
            return; // its connection went away meanwhile
        };
        match waiting.to {
            WaitFor::Http(plan, ctx) => {
                if !matches!(conn.phase(), Phase::BayeuxWaiting(s) if *s == serial) {
                    return; // answered 503 at the poll timeout
                }
                conn.set_phase(Phase::Head, &self.shared.metrics);
                self.bayeux_finish(key, &ctx, *plan);
                if self.conns.get(key).is_some_and(|c| !c.dead) {
                    self.after_io(key);
                }
            }
            WaitFor::Ws {
                serial: ws_serial,
                replies,
            } => {
                let Phase::WebSocket(ws) = conn.phase_mut() else {
                    return;
                };
                let Some(session) = ws.bayeux_mut().filter(|b| b.serial == ws_serial) else {
                    return; // the slot holds another connection now
                };
                session.waiting = session.waiting.saturating_sub(1);
                if !self.send_ws_array(key, &bayeux::join(&replies)) {
                    return;
                }
                self.bayeux_ws_sync(key);
            }
        }
    }

    /// A Bayeux WebSocket's attach that the store answers later.
    pub(super) fn bayeux_ws_pending(
        &mut self,
        ticket: Ticket,
        key: usize,
        serial: u64,
        mailbox: Arc<str>,
    ) {
        let pending = Pending::Attach {
            key,
            serial,
            mailbox,
        };
        self.bayeux_waits.tickets.insert(ticket, pending);
    }

    /// The store answered a Bayeux WebSocket's attach: follow the mailbox
    /// if the socket and its session still want it, else give the
    /// registration back.
    fn bayeux_ws_attached(
        &mut self,
        key: usize,
        serial: u64,
        mailbox: Arc<str>,
        result: Result<Attach, StoreError>,
    ) {
        let registered = result.as_ref().is_ok_and(|a| a.registered);
        let client = match self.conns.get_mut(key).filter(|c| !c.dead) {
            Some(conn) => match conn.phase_mut() {
                Phase::WebSocket(ws) => match ws.bayeux_mut() {
                    Some(session) if session.serial == serial => {
                        session.attaching.retain(|m| *m != mailbox);
                        session.client_id.clone()
                    }
                    _ => None,
                },
                _ => None,
            },
            None => None,
        };
        let wanted = client.is_some_and(|client| {
            self.shared
                .sessions
                .with(&client, |s| s.cursor(&mailbox).is_some())
                .unwrap_or(false)
        }) && !self.conns[key].subs.follows(&mailbox);
        match result {
            Ok(attach) if wanted => {
                self.bayeux_ws_follow(key, &mailbox, attach);
            }
            _ => {
                // Gone, unsubscribed, or failed (the next sync asks again).
                if registered {
                    self.detach_one(&mailbox);
                }
            }
        }
    }
}
