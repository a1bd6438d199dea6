//! A fake [`Hub`] and helpers for the commands' unit tests: run words or a
//! client's pipelined bytes through `execute` and get the replies as text.

use super::*;
use crate::backend::resp::{Decoded, Decoder, Limits};
use std::collections::BTreeMap;

#[derive(Default)]
pub struct FakeHub {
    /// Mailbox → subscribers.
    pub mailboxes: BTreeMap<Vec<u8>, u64>,
    pub published: Vec<(Vec<u8>, Vec<u8>)>,
    pub password: Option<String>,
    pub info_calls: Vec<Option<String>>,
}

impl Hub for FakeHub {
    fn publish(&mut self, mailbox: &[u8], payload: Vec<u8>) -> Result<Publish, HubError> {
        if mailbox.is_empty() || mailbox.contains(&b' ') {
            return Err(HubError::BadName("invalid mailbox name".into()));
        }
        if payload.len() > 100 {
            return Err(HubError::TooLarge(
                "message exceeds mailbox.max-message-size (100 bytes)".into(),
            ));
        }
        self.published.push((mailbox.to_vec(), payload));
        Ok(Publish::Now(
            self.mailboxes.get(mailbox).copied().unwrap_or(0),
        ))
    }

    fn numsub(&mut self, mailbox: &[u8]) -> u64 {
        self.mailboxes.get(mailbox).copied().unwrap_or(0)
    }

    fn channels(&mut self) -> Vec<Vec<u8>> {
        self.mailboxes
            .iter()
            .filter(|(_, subs)| **subs > 0)
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn delete(&mut self, mailbox: &[u8]) -> bool {
        self.mailboxes.remove(mailbox).is_some()
    }

    fn info(&mut self, section: Option<&str>, out: &mut String) {
        self.info_calls.push(section.map(str::to_string));
        // Like the gateway's hub, which writes `clients` and `stats` as one
        // block whichever of the two is asked for.
        if matches!(section, Some("clients" | "stats")) {
            out.push_str(
                "# Clients\r\nconnected_clients:2\r\n\r\n# Stats\r\ntotal_deliveries:7\r\n",
            );
            return;
        }
        if section.is_none_or(|s| s == "clients" || s == "everything") {
            out.push_str("# Clients\r\nconnected_clients:2\r\n\r\n");
        }
        if section.is_none_or(|s| s == "mailboxes" || s == "everything") {
            out.push_str("# Mailboxes\nmailboxes:3\n");
        }
    }

    fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    fn uptime_secs(&self) -> Option<u64> {
        Some(90_000)
    }
}

pub fn hub() -> FakeHub {
    let mut hub = FakeHub::default();
    hub.mailboxes.insert(b"alice".to_vec(), 2);
    hub.mailboxes.insert(b"bob".to_vec(), 1);
    hub.mailboxes.insert(b"idle".to_vec(), 0);
    hub
}

pub fn locked_hub() -> FakeHub {
    FakeHub {
        password: Some("s3cret".into()),
        ..hub()
    }
}

/// Runs one command given as words; returns the reply as text and what
/// the connection does next.
pub fn exec_after(session: &mut Session, hub: &mut FakeHub, words: &[&str]) -> (String, After) {
    let args: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
    let mut out = Vec::new();
    let after = execute(session, &args, hub, &mut out);
    (
        String::from_utf8(out).expect("replies are UTF-8 in these tests"),
        after,
    )
}

pub fn exec(session: &mut Session, hub: &mut FakeHub, words: &[&str]) -> String {
    exec_after(session, hub, words).0
}

/// Runs a client's pipelined bytes through the decoder and the commands,
/// one reply per command.
pub fn pipeline(session: &mut Session, hub: &mut FakeHub, mut input: &[u8]) -> Vec<String> {
    let mut decoder = Decoder::new(Limits::new(1024));
    let mut replies = Vec::new();
    loop {
        match decoder.decode(input).expect("clients send valid RESP") {
            Decoded::Command { args, consumed } => {
                let mut out = Vec::new();
                let args: Vec<&[u8]> = args.iter().collect();
                execute(session, &args, hub, &mut out);
                replies.push(String::from_utf8(out).unwrap());
                input = &input[consumed..];
            }
            Decoded::NeedMore { consumed } => {
                assert_eq!(consumed, input.len(), "a whole pipeline was sent");
                return replies;
            }
            Decoded::TooLarge { .. } => panic!("nothing large here"),
        }
    }
}

/// Encodes commands as a client library does.
pub fn wire(commands: &[&[&str]]) -> Vec<u8> {
    let mut out = Vec::new();
    for words in commands {
        resp::array_len(&mut out, words.len());
        for w in *words {
            resp::bulk(&mut out, w.as_bytes());
        }
    }
    out
}

pub fn assert_no_errors(replies: &[String]) {
    for reply in replies {
        assert!(
            !reply.starts_with('-'),
            "error reply: {reply:?} in {replies:?}"
        );
    }
}

pub const HELLO3: &str = "%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.4.0\r\n$5\r\nproto\r\n:3\r\n\
    $2\r\nid\r\n:5\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n";

/// A new connection (needing AUTH if the hub has a password) that sends
/// `commands` pipelined, as a client library's connect sequence does.
pub fn connect(hub: &mut FakeHub, id: u64, commands: &[&[&str]]) -> (Session, Vec<String>) {
    let mut session = Session::new(id, hub.password.is_some());
    let replies = pipeline(&mut session, hub, &wire(commands));
    (session, replies)
}
