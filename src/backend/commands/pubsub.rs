//! Pub/sub commands: PUBLISH (the point of the backend socket), DEL, the
//! PUBSUB introspection, and answers for SUBSCRIBE and friends, which
//! cometbox serves over HTTP instead.

use super::{After, Glob, Hub, HubError, Publish, Session, count};
use crate::backend::events;
use crate::backend::resp;

/// Longest PUBSUB CHANNELS pattern. Matching costs pattern × name per
/// mailbox, and the pattern is the one input of that product a backend
/// chooses freely; real patterns are a prefix and a star. 1 KiB keeps a
/// listing over a million mailboxes to a moment of one worker's time (a
/// 1,000 KiB `*[xxx…` once stalled the store for 34 s).
pub const MAX_PATTERN_LEN: usize = 1024;

pub(super) fn publish<H: Hub>(
    mailbox: &[u8],
    payload: &[u8],
    hub: &mut H,
    out: &mut Vec<u8>,
) -> After {
    match hub.publish(mailbox, payload.to_vec()) {
        Ok(Publish::Now(receivers)) => count(out, receivers),
        Ok(Publish::Later(ticket)) => return After::Wait(ticket),
        Err(HubError::BadName(text) | HubError::TooLarge(text) | HubError::Full(text)) => {
            resp::error(out, &format!("ERR {text}"))
        }
    }
    After::Continue
}

/// `DEL mailbox…`: the number that existed.
pub(super) fn del<H: Hub>(names: &[&[u8]], hub: &mut H, out: &mut Vec<u8>) -> After {
    match hub.delete_all(names) {
        Publish::Now(deleted) => count(out, deleted),
        Publish::Later(ticket) => return After::Wait(ticket),
    }
    After::Continue
}

/// `PUBSUB CHANNELS [pattern]`. The hub hands over every name and the glob
/// runs here, with no store lock held, so a costly pattern delays only this
/// backend.
pub(super) fn channels<H: Hub>(pattern: Option<&[u8]>, hub: &mut H, out: &mut Vec<u8>) {
    let glob = match pattern {
        Some(p) if p.len() > MAX_PATTERN_LEN => {
            return resp::error(
                out,
                &format!("ERR pattern too long (at most {MAX_PATTERN_LEN} bytes)"),
            );
        }
        Some(p) => Some(Glob::new(p)),
        None => None,
    };
    let mut names = hub.channels();
    if let Some(glob) = glob {
        names.retain(|name| glob.matches(name));
    }
    resp::array_len(out, names.len());
    for name in &names {
        resp::bulk(out, name);
    }
}

/// `PUBSUB NUMSUB mailbox…`: an array of name, count pairs (not a map, in
/// RESP3 too).
pub(super) fn numsub<H: Hub>(names: &[&[u8]], hub: &mut H, out: &mut Vec<u8>) {
    resp::array_len(out, names.len() * 2);
    for name in names {
        resp::bulk(out, name);
        count(out, hub.numsub(name));
    }
}

/// `SUBSCRIBE` / `PSUBSCRIBE` to cometbox's own channels (presence and
/// upstream events, `backend::events`); mailboxes are read over HTTP, so any
/// other channel is refused, the whole command with it, before anything
/// changes. Redis' reply: one `[kind, channel, count]` per channel.
pub(super) fn subscribe(session: &mut Session, kind: &str, names: &[&[u8]], out: &mut Vec<u8>) {
    let pattern = kind == "psubscribe";
    if kind == "ssubscribe" || names.iter().any(|n| !events::is_ours(n, pattern)) {
        return resp::error(
            out,
            &format!(
                "ERR {} is not supported by cometbox for mailboxes: subscribe over HTTP at /mailbox/<name>; backends may subscribe to {} and {} (docs/protocol.md)",
                kind.to_ascii_uppercase(),
                events::EVENTS,
                events::UPSTREAM,
            ),
        );
    }
    for name in names {
        match pattern {
            true => session.pubsub.psubscribe(name),
            false => session.pubsub.subscribe(name),
        }
        resp::push_len(out, session.proto, 3);
        resp::bulk(out, kind.as_bytes());
        resp::bulk(out, name);
        count(out, session.pubsub.count() as u64);
    }
}

/// `UNSUBSCRIBE` / `PUNSUBSCRIBE` [names]: one `[kind, name, count left]`
/// per name (all subscribed ones when none is given), or `[kind, null, n]`
/// when there is nothing to leave, as Redis.
pub(super) fn unsubscribe(session: &mut Session, kind: &str, names: &[&[u8]], out: &mut Vec<u8>) {
    let pattern = kind == "punsubscribe";
    let proto = session.proto;
    let gone: Vec<Vec<u8>> = match (names.is_empty(), kind) {
        (_, "sunsubscribe") => names.iter().map(|n| n.to_vec()).collect(),
        (true, _) => session.pubsub.names(pattern),
        (false, _) => names.iter().map(|n| n.to_vec()).collect(),
    };
    if gone.is_empty() {
        resp::push_len(out, proto, 3);
        resp::bulk(out, kind.as_bytes());
        resp::null(out, proto);
        count(out, session.pubsub.count() as u64);
    }
    for name in &gone {
        if kind != "sunsubscribe" {
            session.pubsub.remove(name, pattern);
        }
        resp::push_len(out, proto, 3);
        resp::bulk(out, kind.as_bytes());
        resp::bulk(out, name);
        count(out, session.pubsub.count() as u64);
    }
}

/// The commands a RESP2 connection in pub/sub mode may run (Redis' list).
pub(super) fn allowed_while_subscribed(name: &str) -> bool {
    matches!(
        name,
        "subscribe"
            | "psubscribe"
            | "ssubscribe"
            | "unsubscribe"
            | "punsubscribe"
            | "sunsubscribe"
            | "ping"
            | "quit"
            | "reset"
    )
}

pub(super) const PUBSUB_HELP: &[&str] = &[
    "CHANNELS [<pattern>]",
    "    Return the mailboxes that have subscribers, optionally matching <pattern>.",
    "NUMPAT",
    "    Return 0: there are no pattern subscriptions.",
    "NUMSUB [<mailbox> ...]",
    "    Return the number of subscribers of each mailbox.",
];

#[cfg(test)]
mod tests {
    use super::super::Session;

    #[test]
    fn subscribe_mode_replies_as_redis_and_limits_commands_in_resp2() {
        let h = &mut hub();
        let mut s = Session::new(1, false);
        assert_eq!(
            exec(
                &mut s,
                h,
                &["SUBSCRIBE", "__cometbox:events", "__cometbox:upstream"]
            ),
            "*3\r\n$9\r\nsubscribe\r\n$17\r\n__cometbox:events\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$19\r\n__cometbox:upstream\r\n:2\r\n"
        );
        assert_eq!(
            exec(&mut s, h, &["psubscribe", "__cometbox:events:room:*"]),
            "*3\r\n$10\r\npsubscribe\r\n$24\r\n__cometbox:events:room:*\r\n:3\r\n"
        );
        assert_eq!(
            exec(&mut s, h, &["PUBLISH", "a", "b"]),
            "-ERR Can't execute 'publish': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n"
        );
        assert_eq!(exec(&mut s, h, &["PING"]), "*2\r\n$4\r\npong\r\n$0\r\n\r\n");
        assert_eq!(
            exec(&mut s, h, &["UNSUBSCRIBE"]),
            "*3\r\n$11\r\nunsubscribe\r\n$17\r\n__cometbox:events\r\n:2\r\n*3\r\n$11\r\nunsubscribe\r\n$19\r\n__cometbox:upstream\r\n:1\r\n"
        );
        assert_eq!(
            exec(&mut s, h, &["PUNSUBSCRIBE"]),
            "*3\r\n$12\r\npunsubscribe\r\n$24\r\n__cometbox:events:room:*\r\n:0\r\n"
        );
        assert_eq!(
            exec(&mut s, h, &["PUBLISH", "alice", "m"]),
            ":2\r\n",
            "out of pub/sub mode"
        );
    }
    use super::super::testing::*;
    use super::MAX_PATTERN_LEN;

    #[test]
    fn publish_and_hub_errors() {
        let h = &mut hub();
        let mut s = Session::new(1, false);
        assert_eq!(exec(&mut s, h, &["publish", "alice", "m"]), ":2\r\n");
        assert_eq!(exec(&mut s, h, &["PUBLISH", "nobody", "m"]), ":0\r\n");
        assert_eq!(
            exec(&mut s, h, &["PUBLISH", "a b", "m"]),
            "-ERR invalid mailbox name\r\n"
        );
        let big = "x".repeat(101);
        assert_eq!(
            exec(&mut s, h, &["PUBLISH", "alice", &big]),
            "-ERR message exceeds mailbox.max-message-size (100 bytes)\r\n"
        );
        assert_eq!(
            exec(&mut s, h, &["PUBLISH", "alice"]),
            "-ERR wrong number of arguments for 'publish' command\r\n"
        );
        assert_eq!(h.published.len(), 2);
    }

    #[test]
    fn del_counts_existing_mailboxes() {
        let h = &mut hub();
        let mut s = Session::new(42, false);
        assert_eq!(
            exec(&mut s, h, &["DEL", "alice", "nobody", "alice", "bob"]),
            ":2\r\n"
        );
    }

    #[test]
    fn pubsub_introspection() {
        let h = &mut hub();
        let mut s = Session::new(1, false);
        for proto in ["2", "3"] {
            exec(&mut s, h, &["HELLO", proto]);
            assert_eq!(
                exec(&mut s, h, &["PUBSUB", "NUMSUB", "alice", "nobody"]),
                "*4\r\n$5\r\nalice\r\n:2\r\n$6\r\nnobody\r\n:0\r\n",
                "an array, not a map, in RESP{proto}"
            );
            assert_eq!(exec(&mut s, h, &["PUBSUB", "NUMSUB"]), "*0\r\n");
            assert_eq!(exec(&mut s, h, &["PUBSUB", "NUMPAT"]), ":0\r\n");
            assert_eq!(
                exec(&mut s, h, &["PUBSUB", "CHANNELS"]),
                "*2\r\n$5\r\nalice\r\n$3\r\nbob\r\n"
            );
            assert_eq!(
                exec(&mut s, h, &["pubsub", "channels", "a*"]),
                "*1\r\n$5\r\nalice\r\n"
            );
            assert_eq!(exec(&mut s, h, &["PUBSUB", "CHANNELS", "zz*"]), "*0\r\n");
        }
        assert_eq!(
            exec(&mut s, h, &["PUBSUB", "SHARDCHANNELS"]),
            "-ERR unknown subcommand 'SHARDCHANNELS'. Try PUBSUB HELP.\r\n"
        );
        assert_eq!(
            exec(&mut s, h, &["PUBSUB", "NUMPAT", "x"]),
            "-ERR wrong number of arguments for 'pubsub|numpat' command\r\n"
        );
    }

    #[test]
    fn subscribe_points_to_http() {
        let h = &mut hub();
        let mut s = Session::new(1, false);
        let refusal = |kind: &str| {
            format!(
                "-ERR {kind} is not supported by cometbox for mailboxes: subscribe over HTTP at /mailbox/<name>; backends may subscribe to __cometbox:events and __cometbox:upstream (docs/protocol.md)\r\n"
            )
        };
        assert_eq!(
            exec(&mut s, h, &["subscribe", "alice"]),
            refusal("SUBSCRIBE")
        );
        assert_eq!(
            exec(&mut s, h, &["PSUBSCRIBE", "a*"]),
            refusal("PSUBSCRIBE")
        );
        assert_eq!(
            exec(&mut s, h, &["SUBSCRIBE"]),
            "-ERR wrong number of arguments for 'subscribe' command\r\n"
        );
        assert_eq!(
            exec(&mut s, h, &["UNSUBSCRIBE"]),
            "*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n"
        );
        exec(&mut s, h, &["HELLO", "3"]);
        assert_eq!(
            exec(&mut s, h, &["PUNSUBSCRIBE", "a", "b"]),
            ">3\r\n$12\r\npunsubscribe\r\n$1\r\na\r\n:0\r\n>3\r\n$12\r\npunsubscribe\r\n$1\r\nb\r\n:0\r\n"
        );
    }

    #[test]
    fn channels_pattern_is_capped() {
        let h = &mut hub();
        let mut s = Session::new(1, false);
        let mut pattern = "a".to_string();
        pattern.push_str(&"*".repeat(MAX_PATTERN_LEN - 1));
        assert_eq!(
            exec(&mut s, h, &["PUBSUB", "CHANNELS", &pattern]),
            "*1\r\n$5\r\nalice\r\n",
            "a pattern of exactly the cap still runs"
        );
        pattern.push('*');
        assert_eq!(
            exec(&mut s, h, &["PUBSUB", "CHANNELS", &pattern]),
            "-ERR pattern too long (at most 1024 bytes)\r\n"
        );
        // The connection is still in step.
        assert_eq!(
            exec(&mut s, h, &["PUBSUB", "CHANNELS", "b?b"]),
            "*1\r\n$3\r\nbob\r\n"
        );
    }
}
