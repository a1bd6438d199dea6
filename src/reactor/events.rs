//! Events for backends in pub/sub mode (`backend::events`): presence
//! (join when a mailbox gains its first subscriber, leave when it loses its
//! last, or per subscriber with `mailbox.presence-per-subscriber`) and
//! upstream (what browsers send). Nothing is built unless some worker has a
//! listening backend (`Shared::event_listeners`, a bit per worker); an event
//! goes to each such worker once, and there to every listening backend.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Worker;
use crate::endpoint::Subscribe;
use crate::metrics;
use crate::shared::{Event, EventFamily, ToWorker};
use crate::store::Attach;
use crate::transport::{StreamKind, Transport};

/// Who a subscribing connection is, kept while it follows mailboxes and
/// some backend listens, so its leave can say so.
pub struct Presence {
    pub transport: &'static str,
    pub subject: Option<Arc<str>>,
}

pub fn transport_label(t: &Transport) -> &'static str {
    match t {
        Transport::LongPoll => "longpoll",
        Transport::Jsonp => "jsonp",
        Transport::Stream(StreamKind::Sse) => "sse",
        Transport::Stream(StreamKind::Ndjson) => "ndjson",
        Transport::Stream(StreamKind::Iframe) => "iframe",
        Transport::WebSocket => "websocket",
    }
}

impl Worker {
    pub(super) fn events_wanted(&self) -> bool {
        self.shared.event_listeners.load(Ordering::Acquire) != 0
    }

    /// Hands `event` to every worker with a listening backend.
    pub(super) fn emit(&mut self, event: Event) {
        let mut mask = self.shared.event_listeners.load(Ordering::Acquire);
        if mask == 0 {
            return;
        }
        let event = Arc::new(event);
        while mask != 0 {
            let worker = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            if worker == self.id {
                self.deliver_event(&event);
            } else if let Some(peer) = self.shared.peers.get(worker) {
                peer.post(ToWorker::Event(event.clone()));
            }
        }
    }

    /// Writes `event` to this worker's listening backends.
    pub(super) fn deliver_event(&mut self, event: &Event) {
        let mut touched = Vec::new();
        for (key, backend) in self.backends.iter_mut() {
            if !backend.dead && backend.is_listening() {
                let n = backend.push_event(event);
                if n > 0 {
                    self.shared
                        .metrics
                        .events_sent
                        .fetch_add(n as u64, Ordering::Relaxed);
                    touched.push(key);
                }
            }
        }
        for key in touched {
            self.flush_backend(key);
        }
    }

    /// After a backend's commands ran, or before it goes: keeps this
    /// worker's bit in `event_listeners` true.
    pub(super) fn note_listening(&mut self, was: bool, is: bool) {
        if was == is {
            return;
        }
        if is {
            self.listening_backends += 1;
        } else {
            self.listening_backends -= 1;
        }
        let bit = 1u64 << self.id;
        if self.listening_backends == 0 {
            self.shared
                .event_listeners
                .fetch_and(!bit, Ordering::AcqRel);
        } else {
            self.shared.event_listeners.fetch_or(bit, Ordering::AcqRel);
        }
    }

    /// A connection now follows its plan's mailboxes: join events for the
    /// mailboxes it is first in (or all, per config), and remember who it
    /// is for the leave.
    pub(super) fn announce_joins(&mut self, key: usize, plan: &Subscribe, attaches: &[Attach]) {
        if !self.events_wanted() {
            return;
        }
        let every = self.shared.config().mailbox.presence_per_subscriber;
        let presence = Presence {
            transport: transport_label(&plan.transport),
            subject: plan.subject.clone(),
        };
        for (follow, attach) in plan.follows.iter().zip(attaches) {
            if attach.registered && (attach.first || every) {
                let mailbox: Arc<str> = follow.mailbox.as_str().into();
                self.presence_event("join", mailbox, &presence);
            }
        }
        self.presence.insert(key, presence);
    }

    /// One mailbox let go by connection `key`; `last` from the store.
    pub(super) fn announce_leave(&mut self, key: usize, mailbox: &Arc<str>, last: bool) {
        if !self.events_wanted() {
            return;
        }
        if !last && !self.shared.config().mailbox.presence_per_subscriber {
            return;
        }
        let unknown = Presence {
            transport: "unknown",
            subject: None,
        };
        let presence = self.presence.remove(&key);
        self.presence_event(
            "leave",
            mailbox.clone(),
            presence.as_ref().unwrap_or(&unknown),
        );
        if let Some(presence) = presence {
            self.presence.insert(key, presence);
        }
    }

    fn presence_event(&mut self, kind: &str, mailbox: Arc<str>, who: &Presence) {
        let payload = serde_json::json!({
            "event": kind,
            "mailbox": &*mailbox,
            "transport": who.transport,
            "subject": who.subject.as_deref(),
        });
        self.emit(Event {
            family: EventFamily::Presence,
            mailbox,
            payload: payload.to_string().into_bytes(),
        });
    }

    /// A WebSocket text message from a client whose messages go upstream.
    /// On one mailbox the text is the data; on several it is
    /// `{"mailbox":…,"data":…}` naming one of them. Messages for a mailbox
    /// the client may not send to are dropped and counted.
    pub(super) fn upstream_message(
        &mut self,
        allowed: &[Arc<str>],
        subject: Option<&str>,
        multiplexed: bool,
        text: &[u8],
    ) {
        let Ok(text) = std::str::from_utf8(text) else {
            return; // the decoder checked: text messages are UTF-8
        };
        let (mailbox, data) = if multiplexed {
            let Ok(serde_json::Value::Object(mut object)) = serde_json::from_str(text) else {
                return metrics::inc(&self.shared.metrics.upstream_refused);
            };
            let Some(serde_json::Value::String(name)) = object.remove("mailbox") else {
                return metrics::inc(&self.shared.metrics.upstream_refused);
            };
            let data = match object.remove("data") {
                Some(serde_json::Value::String(s)) => s,
                Some(other) => other.to_string(),
                None => String::new(),
            };
            (name, data)
        } else {
            match allowed.first() {
                Some(only) => (only.to_string(), text.to_string()),
                None => return metrics::inc(&self.shared.metrics.upstream_refused),
            }
        };
        let Some(mailbox) = allowed.iter().find(|m| ***m == *mailbox).cloned() else {
            return metrics::inc(&self.shared.metrics.upstream_refused);
        };
        self.upstream(mailbox, subject, &data);
    }

    /// One message for `__cometbox:upstream` (a text frame, a POST body).
    pub(super) fn upstream(&mut self, mailbox: Arc<str>, subject: Option<&str>, data: &str) {
        metrics::inc(&self.shared.metrics.upstream_messages);
        let payload = serde_json::json!({
            "mailbox": &*mailbox,
            "subject": subject,
            "data": data,
        });
        self.emit(Event {
            family: EventFamily::Upstream,
            mailbox,
            payload: payload.to_string().into_bytes(),
        });
    }
}
