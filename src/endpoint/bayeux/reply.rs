//! Bayeux response bodies: a JSON array of replies and deliveries, or the
//! same array as a JSONP call (`/**/cb([...]);`). Deliveries are each
//! message's shared Bayeux encoding, queued by reference.

use std::sync::Arc;

use crate::http::{self, Status};
use crate::out::Part;
use crate::session::channel;
use crate::store::Message;
use crate::transport::ReplyTo;
use crate::transport::encode::{Encoding, encoded};

pub const JSON: &[u8] = b"application/json;charset=UTF-8";
pub const SCRIPT: &[u8] = b"application/javascript; charset=utf-8";

/// The body of an answer that holds no deliveries: `replies` are JSON
/// objects joined by `,`.
pub fn wrap(callback: Option<&str>, replies: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(replies.len() + 16);
    if let Some(cb) = callback {
        out.extend_from_slice(b"/**/");
        out.extend_from_slice(cb.as_bytes());
        out.push(b'(');
    }
    out.push(b'[');
    out.extend_from_slice(replies);
    out.push(b']');
    if callback.is_some() {
        out.extend_from_slice(b");");
    }
    out
}

/// The marker a subscription gets when its cursor fell out of history: a
/// message on its channel with `ext.cometbox.missed` (docs/bayeux.md).
pub fn write_missed(mailbox: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"channel\":\"");
    out.extend_from_slice(channel::of_mailbox(mailbox).as_bytes());
    out.extend_from_slice(b"\",\"data\":null,\"ext\":{\"cometbox\":{\"missed\":true}}}");
}

/// The missed marker as a WebSocket text frame.
pub fn write_missed_frame(mailbox: &str, out: &mut Vec<u8>) {
    let mut json = vec![b'['];
    write_missed(mailbox, &mut json);
    json.push(b']');
    write_frame(&json, out);
}

/// `payload` as one WebSocket text frame.
pub fn write_frame(payload: &[u8], out: &mut Vec<u8>) {
    use crate::transport::websocket;
    websocket::encode_frame_header(websocket::Opcode::Text, true, payload.len(), out);
    out.extend_from_slice(payload);
}

/// What one answer to a connect carries.
pub struct Answer<'m> {
    /// The connect's reply and the batch's others, joined by `,`.
    pub replies: &'m [u8],
    pub messages: &'m [Arc<Message>],
    pub missed: &'m [Arc<str>],
}

/// Buffers the worker reuses for every answer.
#[derive(Default)]
pub struct Scratch {
    head: Vec<u8>,
    tail: Vec<u8>,
}

/// An answer's parts: those of a connect answered with one message, or a
/// few, without an allocation.
pub type Parts<'a> = smallvec::SmallVec<[Part<'a>; 10]>;

/// The whole response to a connect, head and body, as parts.
pub fn build<'a>(
    reply: &'a ReplyTo,
    answer: &Answer<'a>,
    date: &[u8],
    cors_origins: &[String],
    scratch: &'a mut Scratch,
) -> Parts<'a> {
    let callback = reply.callback.as_deref();
    let tail = &mut scratch.tail;
    tail.clear();
    for mailbox in answer.missed {
        tail.push(b',');
        write_missed(mailbox, tail);
    }
    tail.push(b']');
    if callback.is_some() {
        tail.extend_from_slice(b");");
    }
    let mut parts = Parts::new();
    parts.push(Part::Static(b"")); // the head's place
    if let Some(cb) = callback {
        parts.push(Part::Static(b"/**/"));
        parts.push(Part::Copy(cb.as_bytes()));
        parts.push(Part::Static(b"("));
    }
    parts.push(Part::Static(b"["));
    parts.push(Part::Copy(answer.replies));
    for message in answer.messages {
        parts.push(Part::Static(b","));
        parts.push(Part::Shared(encoded(message, Encoding::Bayeux)));
    }
    parts.push(Part::Copy(&scratch.tail));
    let body_len: usize = parts.iter().map(Part::len).sum();
    let head = &mut scratch.head;
    head.clear();
    http::write_head(head, Status::Ok, reply.http11, date);
    let kind = if callback.is_some() { SCRIPT } else { JSON };
    http::write_header(head, "Content-Type", kind);
    head.extend_from_slice(b"Cache-Control: no-cache\r\n");
    reply.cors.write_headers(head, cors_origins);
    http::write_connection(head, reply.http11, reply.keep_alive);
    http::write_content_length(head, body_len);
    head.extend_from_slice(b"\r\n");
    parts[0] = Part::Copy(&scratch.head);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Cors;

    fn render(parts: &[Part<'_>]) -> String {
        let mut sock = crate::out::tests::FakeSock {
            taken: Vec::new(),
            budget: usize::MAX,
        };
        let mut q = crate::out::OutQueue::default();
        q.send_all(&mut sock, parts).unwrap();
        String::from_utf8(sock.taken).unwrap()
    }

    #[test]
    fn an_answer_is_one_array_of_replies_deliveries_and_missed_markers() {
        let m = crate::store::testing::message(b"{\"a\":1}");
        let reply = ReplyTo {
            http11: true,
            keep_alive: true,
            cors: Cors::None,
            callback: None,
        };
        let mut scratch = Scratch::default();
        let missed: [Arc<str>; 1] = ["gone/away".into()];
        let answer = Answer {
            replies: br#"{"channel":"/meta/connect","successful":true}"#,
            messages: std::slice::from_ref(&m),
            missed: &missed,
        };
        let text = render(&build(&reply, &answer, b"now", &[], &mut scratch));
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v[0]["channel"], "/meta/connect");
        assert_eq!(v[1]["channel"], "/box");
        assert_eq!(v[1]["data"]["a"], 1);
        assert_eq!(v[2]["channel"], "/gone/away");
        assert_eq!(v[2]["ext"]["cometbox"]["missed"], true);
        assert_eq!(wrap(Some("cb"), b"{}"), b"/**/cb([{}]);");
        assert_eq!(wrap(None, b""), b"[]");
    }
}
