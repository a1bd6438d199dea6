//! The one stream framer: Server-Sent Events, NDJSON and the forever iframe
//! are one response that never ends by itself, each message framed its own
//! way around the shared encoding, in HTTP/1.1 chunks (HTTP/1.0: raw, and
//! the close ends it). The preamble, the `missed` marker, the heartbeat and
//! the chunk wrapper are written here and nowhere else.

use std::sync::Arc;

use super::encode::{Encoding, encoded};
use super::{ReplyTo, StreamKind, write_missed_json};
use crate::http::{self, Status};
use crate::out::Part;
use crate::store::Message;

/// Some browsers render nothing of a streamed HTML body until about 1 KiB
/// has arrived; this much whitespace goes before the first script.
pub const IFRAME_PADDING: usize = 1024;

/// The last chunk of a chunked response.
pub const END_CHUNK: &[u8] = b"0\r\n\r\n";

pub struct StreamState {
    pub kind: StreamKind,
    pub reply: ReplyTo,
    /// Message bytes sent, for `mailbox.stream-max-bytes`.
    pub sent: u64,
    /// When the stream ends by itself (ms on the worker clock); `u64::MAX`,
    /// the worker's "no deadline", when never.
    pub ends_at: u64,
}

/// Writes the response head of a stream.
pub fn write_head(
    kind: StreamKind,
    reply: &ReplyTo,
    date: &[u8],
    cors_origins: &[String],
    out: &mut Vec<u8>,
) {
    let content_type: &[u8] = match kind {
        StreamKind::Sse => b"text/event-stream",
        StreamKind::Ndjson => b"application/x-ndjson",
        StreamKind::Iframe => b"text/html; charset=utf-8",
    };
    http::write_head(out, Status::Ok, reply.http11, date);
    http::write_header(out, "Content-Type", content_type);
    out.extend_from_slice(b"Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n");
    reply.cors.write_headers(out, cors_origins);
    if reply.http11 {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    } else {
        // HTTP/1.0 has no chunks: the end of the stream is the close.
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// What opens the stream before any message (unchunked; see [`chunk_into`]).
pub fn write_preamble(kind: StreamKind, sse_retry_ms: u128, out: &mut Vec<u8>) {
    match kind {
        StreamKind::Sse => {
            let _ = std::io::Write::write_fmt(out, format_args!("retry: {sse_retry_ms}\n\n"));
        }
        StreamKind::Ndjson => {}
        StreamKind::Iframe => {
            out.extend_from_slice(
                b"<!DOCTYPE html><html><head><meta charset=\"utf-8\"></head><body>",
            );
            out.resize(out.len() + IFRAME_PADDING, b' ');
            out.push(b'\n');
        }
    }
}

/// The `missed` marker (unchunked); `mailbox` names it on a multiplexed
/// stream.
pub fn write_missed(
    kind: StreamKind,
    callback: Option<&str>,
    mailbox: Option<&str>,
    out: &mut Vec<u8>,
) {
    match kind {
        StreamKind::Sse => {
            out.extend_from_slice(b"event: missed\ndata: ");
            write_missed_json(mailbox, out);
            out.extend_from_slice(b"\n\n");
        }
        StreamKind::Ndjson => {
            write_missed_json(mailbox, out);
            out.push(b'\n');
        }
        StreamKind::Iframe => {
            out.extend_from_slice(b"<script>parent.");
            out.extend_from_slice(callback.unwrap_or("").as_bytes());
            out.push(b'(');
            write_missed_json(mailbox, out);
            out.extend_from_slice(b");</script>\n");
        }
    }
}

/// What keeps an idle stream (and the proxies on its way) alive.
pub fn heartbeat(kind: StreamKind) -> &'static [u8] {
    match kind {
        StreamKind::Sse => b":\n\n",
        // Whitespace between JSON lines and in HTML is ignored.
        StreamKind::Ndjson | StreamKind::Iframe => b"\n",
    }
}

/// Appends `data` as one chunk (HTTP/1.1) or as is (HTTP/1.0).
pub fn chunk_into(out: &mut Vec<u8>, data: &[u8], chunked: bool) {
    if chunked {
        http::write_chunk_header(out, data.len());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(data);
    }
}

/// One message as three parts: the chunk header and per-stream prefix
/// (written into `before`), the shared encoding, and the static suffix with
/// the chunk's end. Nothing per subscriber copies the message.
///
/// On a multiplexed stream (`composite` is the subscriber's cursor over all
/// its mailboxes, after this message) the message is the named JSON, and an
/// SSE event's `id:` is the composite, so `Last-Event-ID` resumes them all.
pub fn message_parts<'a>(
    stream: &StreamState,
    message: &'a Message,
    composite: Option<&[u8]>,
    before: &'a mut Vec<u8>,
) -> [Part<'a>; 3] {
    let callback = stream.reply.callback.as_deref().unwrap_or("");
    let chunked = stream.reply.http11;
    // The suffix with the chunk's end is the same for every message of a
    // kind: static bytes, queued by reference if the reader is slow.
    let (encoding, prefix, suffix): (Encoding, [&[u8]; 3], &'static [u8]) =
        match (stream.kind, chunked) {
            (StreamKind::Sse, true) => (Encoding::Sse, [b"", b"", b""], b"\r\n"),
            (StreamKind::Sse, false) => (Encoding::Sse, [b"", b"", b""], b""),
            (StreamKind::Ndjson, true) => (Encoding::Json, [b"", b"", b""], b"\n\r\n"),
            (StreamKind::Ndjson, false) => (Encoding::Json, [b"", b"", b""], b"\n"),
            (StreamKind::Iframe, c) => (
                Encoding::Json,
                [b"<script>parent.", callback.as_bytes(), b"("],
                if c {
                    b");</script>\n\r\n"
                } else {
                    b");</script>\n"
                },
            ),
        };
    let (encoding, id_line): (Encoding, [&[u8]; 3]) = match composite {
        None => (encoding, [b"", b"", b""]),
        Some(cursor) if stream.kind == StreamKind::Sse => {
            (encoding.named(), [b"id: ", cursor, b"\n"])
        }
        Some(_) => (encoding.named(), [b"", b"", b""]),
    };
    let prefix_len: usize = prefix.iter().chain(&id_line).map(|p| p.len()).sum();
    let body: &'a Arc<[u8]> = encoded(message, encoding);
    before.clear();
    if chunked {
        // The chunk's CRLF is in `suffix`, not counted in its size.
        http::write_chunk_header(before, prefix_len + body.len() + suffix.len() - 2);
    }
    for p in prefix.iter().chain(&id_line) {
        before.extend_from_slice(p);
    }
    [Part::Copy(before), Part::Shared(body), Part::Static(suffix)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Cors;

    fn stream(kind: StreamKind, http11: bool) -> StreamState {
        StreamState {
            kind,
            reply: ReplyTo {
                http11,
                keep_alive: true,
                cors: Cors::None,
                callback: Some("cb".into()),
            },
            sent: 0,
            ends_at: u64::MAX,
        }
    }

    fn message() -> Arc<Message> {
        crate::store::testing::message(b"hi")
    }

    fn concat(parts: &[Part<'_>]) -> String {
        let mut sock = crate::out::tests::FakeSock {
            taken: Vec::new(),
            budget: usize::MAX,
        };
        crate::out::OutQueue::default()
            .send(&mut sock, parts)
            .unwrap();
        String::from_utf8(sock.taken).unwrap()
    }

    #[test]
    fn each_kind_frames_a_message_in_one_chunk() {
        let m = message();
        let json = std::str::from_utf8(encoded(&m, Encoding::Json))
            .unwrap()
            .to_string();
        for (kind, body) in [
            (StreamKind::Sse, format!("id: {}\ndata: hi\n\n", m.id)),
            (StreamKind::Ndjson, format!("{json}\n")),
            (
                StreamKind::Iframe,
                format!("<script>parent.cb({json});</script>\n"),
            ),
        ] {
            let mut before = Vec::new();
            let chunked = concat(&message_parts(&stream(kind, true), &m, None, &mut before));
            assert_eq!(
                chunked,
                format!("{:x}\r\n{body}\r\n", body.len()),
                "{kind:?}"
            );
            let raw = concat(&message_parts(&stream(kind, false), &m, None, &mut before));
            assert_eq!(raw, body, "{kind:?} over HTTP/1.0");
        }
    }

    #[test]
    fn a_multiplexed_sse_event_carries_the_composite_cursor_as_its_id() {
        let m = message();
        let mut before = Vec::new();
        let parts = message_parts(
            &stream(StreamKind::Sse, false),
            &m,
            Some(b"c1,c2"),
            &mut before,
        );
        let text = concat(&parts);
        assert!(
            text.starts_with("id: c1,c2\ndata: {\"mailbox\":\"box\","),
            "{text}"
        );
        assert!(text.ends_with("}\n\n"));
    }

    #[test]
    fn missed_markers_and_heartbeats_are_each_kinds_own() {
        let mut out = Vec::new();
        write_missed(StreamKind::Sse, None, None, &mut out);
        assert_eq!(out, b"event: missed\ndata: {\"missed\":true}\n\n");
        out.clear();
        write_missed(StreamKind::Iframe, Some("f.g"), None, &mut out);
        assert_eq!(out, b"<script>parent.f.g({\"missed\":true});</script>\n");
        out.clear();
        write_missed(StreamKind::Ndjson, None, Some("room:42"), &mut out);
        assert_eq!(out, b"{\"mailbox\":\"room:42\",\"missed\":true}\n");
        assert_eq!(heartbeat(StreamKind::Sse), b":\n\n");
        let mut chunk = Vec::new();
        chunk_into(&mut chunk, heartbeat(StreamKind::Ndjson), true);
        assert_eq!(chunk, b"1\r\n\n\r\n");
        let mut pre = Vec::new();
        write_preamble(StreamKind::Sse, 3000, &mut pre);
        assert_eq!(pre, b"retry: 3000\n\n");
    }
}
