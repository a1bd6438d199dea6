//! Long-poll and JSONP answers: one response carrying the messages after the
//! cursor (or none, at the poll timeout), the new cursor and `missed`.
//!
//! The body is a list of parts: the messages' shared JSON encodings between
//! a few literal bytes. If the client reads slowly, the messages wait by
//! reference; nothing per response copies them. One message without
//! `missed` is the message's own cached body.

use std::sync::Arc;

use super::ReplyTo;
use super::encode::{Encoding, encoded};
use crate::http::{self, Status};
use crate::out::Part;
use crate::store::Message;

/// Buffers a worker reuses for every answer it builds.
#[derive(Default)]
pub struct Scratch {
    head: Vec<u8>,
    tail: Vec<u8>,
}

/// What one answer says.
pub struct Answer<'m> {
    pub messages: &'m [Arc<Message>],
    /// The mailboxes whose cursor fell out of history: `"missed":true` for
    /// one mailbox, `"missed":["room:42"]` on a multiplexed poll.
    pub missed: &'m [Arc<str>],
    /// Where the client stands after this answer (a composite cursor when
    /// `named`).
    pub cursor: &'m [u8],
    /// The poll follows several mailboxes: messages name theirs.
    pub named: bool,
    /// HEAD: the head alone.
    pub head_only: bool,
}

/// Builds the whole response (head and body) as parts for the output queue.
pub fn build<'a>(
    reply: &'a ReplyTo,
    answer: &Answer<'a>,
    date: &[u8],
    cors_origins: &[String],
    scratch: &'a mut Scratch,
) -> Vec<Part<'a>> {
    let messages = answer.messages;
    let single = matches!(messages, [_] if answer.missed.is_empty() && !answer.named);
    let tail = &mut scratch.tail;
    tail.clear();
    tail.extend_from_slice(b"],\"cursor\":\"");
    tail.extend_from_slice(answer.cursor);
    tail.push(b'"');
    match (answer.missed, answer.named) {
        ([], _) => {}
        (_, false) => tail.extend_from_slice(b",\"missed\":true"),
        (names, true) => {
            tail.extend_from_slice(b",\"missed\":[");
            for (i, name) in names.iter().enumerate() {
                if i > 0 {
                    tail.push(b',');
                }
                super::encode::write_json_string(tail, name);
            }
            tail.push(b']');
        }
    }
    tail.push(b'}');
    let json = if answer.named {
        Encoding::NamedJson
    } else {
        Encoding::Json
    };
    let mut body: Vec<Part<'a>> =
        Vec::with_capacity(if single { 4 } else { messages.len() * 2 + 5 });
    let callback = reply.callback.as_deref();
    body.push(Part::Static(b"")); // the head's place
    if let Some(cb) = callback {
        body.push(Part::Copy(cb.as_bytes()));
        body.push(Part::Static(b"("));
    }
    if single {
        body.push(Part::Shared(encoded(&messages[0], Encoding::PollBody)));
    } else {
        body.push(Part::Static(b"{\"messages\":["));
        for (i, m) in messages.iter().enumerate() {
            if i > 0 {
                body.push(Part::Static(b","));
            }
            body.push(Part::Shared(encoded(m, json)));
        }
        body.push(Part::Copy(&scratch.tail));
    }
    if callback.is_some() {
        body.push(Part::Static(b");"));
    }
    let body_len: usize = body.iter().map(Part::len).sum();
    let content_type: &[u8] = if callback.is_some() {
        b"application/javascript; charset=utf-8"
    } else {
        b"application/json"
    };
    let head = &mut scratch.head;
    head.clear();
    http::write_head(head, Status::Ok, reply.http11, date);
    http::write_header(head, "Content-Type", content_type);
    head.extend_from_slice(b"Cache-Control: no-cache\r\n");
    reply.cors.write_headers(head, cors_origins);
    http::write_connection(head, reply.http11, reply.keep_alive);
    http::write_content_length(head, body_len);
    head.extend_from_slice(b"\r\n");
    let head: &'a [u8] = head;
    if answer.head_only {
        return vec![Part::Copy(head)];
    }
    body[0] = Part::Copy(head);
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Cors;
    use crate::store::{LocalStore, Register};
    use std::time::Instant;

    fn store() -> LocalStore {
        LocalStore::new(crate::store::testing::limits(), 1)
    }

    fn reply(callback: Option<&str>) -> ReplyTo {
        ReplyTo {
            http11: true,
            keep_alive: true,
            cors: Cors::None,
            callback: callback.map(Into::into),
        }
    }

    fn render(parts: &[Part<'_>]) -> (String, serde_json::Value) {
        let mut sock = crate::out::tests::FakeSock {
            taken: Vec::new(),
            budget: usize::MAX,
        };
        let mut q = crate::out::OutQueue::default();
        q.send_all(&mut sock, parts).unwrap();
        let text = String::from_utf8(sock.taken).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len(), "Content-Length matches the body");
        let json = body
            .strip_prefix("cb(")
            .and_then(|b| b.strip_suffix(");"))
            .unwrap_or(body);
        (head.to_string(), serde_json::from_str(json).unwrap())
    }

    #[test]
    fn answers_carry_messages_cursor_and_missed() {
        let s = store();
        let now = Instant::now();
        for i in 0..3 {
            s.publish(b"box", format!("m{i}").into_bytes(), now)
                .unwrap();
        }
        let a = s.attach("box", None, 0, Register::Never, now).unwrap();
        let cursor = a.position.to_text();
        let boxes: [Arc<str>; 1] = ["box".into()];
        for (missed, callback) in [(false, None), (true, None), (false, Some("cb"))] {
            let r = reply(callback);
            let mut scratch = Scratch::default();
            let answer = Answer {
                messages: &a.backlog,
                missed: if missed { &boxes } else { &[] },
                cursor: cursor.as_bytes(),
                named: false,
                head_only: false,
            };
            let parts = build(&r, &answer, b"now", &[], &mut scratch);
            let (head, v) = render(&parts);
            assert!(head.starts_with("HTTP/1.1 200 OK"));
            assert_eq!(v["messages"].as_array().unwrap().len(), 3);
            assert_eq!(v["messages"][2]["data"], "m2");
            assert_eq!(v["cursor"], a.position.to_text());
            assert_eq!(v.get("missed").is_some(), missed);
            assert_eq!(head.contains("application/javascript"), callback.is_some());
        }
    }

    #[test]
    fn one_message_is_its_cached_body_and_an_empty_answer_keeps_the_cursor() {
        let s = store();
        let now = Instant::now();
        let m = s.publish(b"box", b"only".to_vec(), now).unwrap().message;
        let r = reply(None);
        let mut scratch = Scratch::default();
        let one = [m.clone()];
        let answer = Answer {
            messages: &one,
            missed: &[],
            cursor: m.id.as_bytes(),
            named: false,
            head_only: false,
        };
        let parts = build(&r, &answer, b"now", &[], &mut scratch);
        assert!(
            matches!(parts[1], Part::Shared(b) if Arc::ptr_eq(b, encoded(&m, Encoding::PollBody)))
        );
        let (_, v) = render(&parts);
        assert_eq!(v["messages"][0]["data"], "only");
        let answer = Answer {
            messages: &[],
            missed: &[],
            cursor: m.id.as_bytes(),
            named: false,
            head_only: false,
        };
        let (_, v) = render(&build(&r, &answer, b"now", &[], &mut scratch));
        assert_eq!(v["messages"], serde_json::json!([]));
        assert_eq!(v["cursor"], m.cursor.to_text());
    }

    #[test]
    fn a_multiplexed_answer_names_mailboxes_and_lists_what_was_missed() {
        let m = crate::store::testing::message(b"x");
        let r = reply(None);
        let mut scratch = Scratch::default();
        let one = [m.clone()];
        let missed: [Arc<str>; 1] = ["room:42".into()];
        let answer = Answer {
            messages: &one,
            missed: &missed,
            cursor: b"c1,c2",
            named: true,
            head_only: false,
        };
        let (_, v) = render(&build(&r, &answer, b"now", &[], &mut scratch));
        assert_eq!(v["messages"][0]["mailbox"], "box");
        assert_eq!(v["cursor"], "c1,c2");
        assert_eq!(v["missed"], serde_json::json!(["room:42"]));
    }
}
