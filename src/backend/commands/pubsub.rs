//! Pub/sub commands: PUBLISH (the point of the backend socket), DEL, the
//! PUBSUB introspection, and answers for SUBSCRIBE and friends, which
//! cometbox serves over HTTP instead.

use super::{After, Glob, Hub, HubError, Publish, count};
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
pub(super) fn del<H: Hub>(names: &[&[u8]], hub: &mut H, out: &mut Vec<u8>) {
    let deleted = names.iter().filter(|name| hub.delete(name)).count();
    count(out, deleted as u64);
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

pub(super) fn subscribe(name: &str, out: &mut Vec<u8>) {
    resp::error(
        out,
        &format!(
            "ERR {} is not supported by cometbox: subscribe over HTTP at /mailbox/<name>",
            name.to_ascii_uppercase()
        ),
    );
}

/// Nothing is ever subscribed: Redis then answers one `[kind, channel, 0]`
/// per channel, or `[kind, null, 0]`.
pub(super) fn unsubscribe(proto: u8, kind: &str, channels: &[&[u8]], out: &mut Vec<u8>) {
    if channels.is_empty() {
        resp::push_len(out, proto, 3);
        resp::bulk(out, kind.as_bytes());
        resp::null(out, proto);
        resp::integer(out, 0);
    }
    for channel in channels {
        resp::push_len(out, proto, 3);
        resp::bulk(out, kind.as_bytes());
        resp::bulk(out, channel);
        resp::integer(out, 0);
    }
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
        assert_eq!(
            exec(&mut s, h, &["subscribe", "alice"]),
            "-ERR SUBSCRIBE is not supported by cometbox: subscribe over HTTP at /mailbox/<name>\r\n"
        );
        assert_eq!(
            exec(&mut s, h, &["PSUBSCRIBE", "a*"]),
            "-ERR PSUBSCRIBE is not supported by cometbox: subscribe over HTTP at /mailbox/<name>\r\n"
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
