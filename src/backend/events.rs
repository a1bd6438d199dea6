//! Pub/sub mode on a backend connection: `SUBSCRIBE __cometbox:events` and
//! `__cometbox:upstream` (and `PSUBSCRIBE` patterns over the per-mailbox
//! channels `__cometbox:events:<mailbox>`, `__cometbox:upstream:<mailbox>`),
//! and the frames Redis sends a subscriber: RESP2 `message` / `pmessage`
//! arrays, RESP3 push frames of the same shape. So redis-py's `pubsub()`,
//! node-redis' `subscribe` and `redis-cli SUBSCRIBE` work unchanged.
//!
//! An event is matched per connection: `message` for each exact channel
//! subscribed (the family's or the mailbox's own), `pmessage` for each
//! pattern that matches the mailbox's channel, as Redis would deliver both.

use super::commands::Glob;
use super::resp;
use crate::shared::{Event, EventFamily};

/// The channel names a backend may subscribe to; anything else is refused
/// with a pointer to HTTP, as before pub/sub mode existed.
pub const EVENTS: &str = "__cometbox:events";
pub const UPSTREAM: &str = "__cometbox:upstream";

/// Longest pattern or channel name accepted (the per-mailbox channel is
/// the family, a colon and a name of at most 200 bytes).
const MAX_CHANNEL_LEN: usize = 256;

/// Subscriptions of one backend connection.
#[derive(Default, Debug, Clone)]
pub struct PubSub {
    channels: Vec<Vec<u8>>,
    patterns: Vec<(Vec<u8>, Glob)>,
}

fn family_of(channel: &[u8]) -> Option<EventFamily> {
    for (family, name) in [
        (EventFamily::Presence, EVENTS),
        (EventFamily::Upstream, UPSTREAM),
    ] {
        let name = name.as_bytes();
        if channel == name || (channel.starts_with(name) && channel.get(name.len()) == Some(&b':'))
        {
            return Some(family);
        }
    }
    None
}

/// Whether `name` may be subscribed (or, as a pattern, can match anything
/// we send): one of ours, and not absurdly long.
pub fn is_ours(name: &[u8], pattern: bool) -> bool {
    if name.len() > MAX_CHANNEL_LEN {
        return false;
    }
    if pattern {
        // A pattern must fix the prefix `__cometbox:`; `*` alone would
        // subscribe to everything, which has no meaning here.
        return name.starts_with(b"__cometbox:");
    }
    family_of(name).is_some()
}

impl PubSub {
    /// Channels plus patterns: the count Redis puts in every (un)subscribe
    /// reply.
    pub fn count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }

    pub fn is_active(&self) -> bool {
        self.count() > 0
    }

    pub fn subscribe(&mut self, channel: &[u8]) {
        if !self.channels.iter().any(|c| c == channel) {
            self.channels.push(channel.to_vec());
        }
    }

    pub fn psubscribe(&mut self, pattern: &[u8]) {
        if !self.patterns.iter().any(|(p, _)| p == pattern) {
            self.patterns.push((pattern.to_vec(), Glob::new(pattern)));
        }
    }

    /// Drops one subscription; true if it was there.
    pub fn remove(&mut self, name: &[u8], pattern: bool) -> bool {
        let before = self.count();
        match pattern {
            true => self.patterns.retain(|(p, _)| p != name),
            false => self.channels.retain(|c| c != name),
        }
        self.count() < before
    }

    /// The channels (or patterns) subscribed, in order.
    pub fn names(&self, pattern: bool) -> Vec<Vec<u8>> {
        match pattern {
            true => self.patterns.iter().map(|(p, _)| p.clone()).collect(),
            false => self.channels.clone(),
        }
    }

    pub fn clear(&mut self) {
        self.channels.clear();
        self.patterns.clear();
    }

    /// Appends the frames this connection receives for `event`; returns how
    /// many.
    pub fn write_event(&self, proto: u8, event: &Event, out: &mut Vec<u8>) -> usize {
        let family = match event.family {
            EventFamily::Presence => EVENTS,
            EventFamily::Upstream => UPSTREAM,
        };
        let mut own = Vec::with_capacity(family.len() + 1 + event.mailbox.len());
        own.extend_from_slice(family.as_bytes());
        own.push(b':');
        own.extend_from_slice(event.mailbox.as_bytes());
        let mut sent = 0;
        for channel in &self.channels {
            if channel == family.as_bytes() || *channel == own {
                resp::push_len(out, proto, 3);
                resp::bulk(out, b"message");
                resp::bulk(out, channel);
                resp::bulk(out, &event.payload);
                sent += 1;
            }
        }
        for (pattern, glob) in &self.patterns {
            if glob.matches(&own) {
                resp::push_len(out, proto, 4);
                resp::bulk(out, b"pmessage");
                resp::bulk(out, pattern);
                resp::bulk(out, &own);
                resp::bulk(out, &event.payload);
                sent += 1;
            }
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn event() -> Event {
        Event {
            family: EventFamily::Presence,
            mailbox: Arc::from("room:42"),
            payload: b"{}".to_vec(),
        }
    }

    #[test]
    fn exact_family_own_channel_and_patterns_each_get_a_frame() {
        let mut p = PubSub::default();
        p.subscribe(b"__cometbox:events");
        p.subscribe(b"__cometbox:events:room:42");
        p.subscribe(b"__cometbox:events:room:7");
        p.psubscribe(b"__cometbox:events:room:*");
        p.psubscribe(b"__cometbox:upstream:*");
        assert_eq!(p.count(), 5);
        let mut out = Vec::new();
        assert_eq!(p.write_event(2, &event(), &mut out), 3);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("*3\r\n$7\r\nmessage\r\n$17\r\n__cometbox:events\r\n$2\r\n{}\r\n")
        );
        assert!(text.ends_with(
            "*4\r\n$8\r\npmessage\r\n$24\r\n__cometbox:events:room:*\r\n$25\r\n__cometbox:events:room:42\r\n$2\r\n{}\r\n"
        ));
        let mut out = Vec::new();
        p.write_event(3, &event(), &mut out);
        assert!(out.starts_with(b">3\r\n"), "RESP3: push frames");
    }

    #[test]
    fn only_our_channels_and_unsubscribe_all() {
        assert!(is_ours(b"__cometbox:events", false));
        assert!(is_ours(b"__cometbox:upstream:chat", false));
        assert!(!is_ours(b"__cometbox:eventsx", false));
        assert!(!is_ours(b"alice", false));
        assert!(!is_ours(b"*", true));
        let mut p = PubSub::default();
        p.subscribe(b"__cometbox:events");
        p.subscribe(b"__cometbox:upstream");
        assert_eq!(p.names(false).len(), 2);
        assert!(p.remove(b"__cometbox:events", false));
        assert!(!p.remove(b"__cometbox:events", false));
        assert!(p.remove(b"__cometbox:upstream", false));
        assert!(!p.is_active());
    }
}
