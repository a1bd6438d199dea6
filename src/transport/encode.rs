//! Wire encodings of one message, built once per message and transport and
//! shared by every subscriber (cached in the message: [`encoded`]).
//! Per-subscriber bytes (chunk sizes, a JSONP callback name) are written
//! around these by the transport's framer, never into them.

use base64::Engine;
use serde_json::ser::{CharEscape, Formatter, Serializer};
use std::io::{self, Write};
use std::sync::Arc;

use crate::store::{ENCODING_SLOTS, Message};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// `{"id":"…","data":"…"[,"encoding":"base64"]}`: WebSocket, NDJSON,
    /// iframe and JSONP all carry this object.
    Json = 0,
    /// `[event: base64\n]id: …\ndata: …\n\n`
    Sse = 1,
    /// A WebSocket text frame holding the JSON object.
    WsFrame = 2,
    /// The long-poll body delivering just this message:
    /// `{"messages":[<json>],"cursor":"<id>"}`
    PollBody = 3,
    /// On a connection that follows several mailboxes, the JSON object
    /// names its mailbox: `{"mailbox":"…","id":"…","data":"…"}`.
    NamedJson = 4,
    /// A WebSocket text frame holding the named JSON object.
    NamedWsFrame = 5,
    /// The SSE event of a multiplexed stream without its `id:` line, which
    /// is the subscriber's own composite cursor: `data: <named json>\n\n`.
    NamedSseData = 6,
    /// The Bayeux delivery: `{"channel":"/a/b","data":<value>,"id":"…"}`,
    /// the payload as its JSON value when it is JSON, else as a string
    /// (base64 with `ext.cometbox.encoding` when not UTF-8).
    Bayeux = 7,
    /// A WebSocket text frame holding `[<bayeux json>]`.
    BayeuxWsFrame = 8,
}

impl Encoding {
    pub const COUNT: usize = 9;

    /// The encoding a subscriber of several mailboxes gets instead.
    pub fn named(self) -> Encoding {
        match self {
            Encoding::Json | Encoding::PollBody => Encoding::NamedJson,
            Encoding::WsFrame => Encoding::NamedWsFrame,
            Encoding::Sse => Encoding::NamedSseData,
            named => named,
        }
    }
}

const _: () = assert!(
    Encoding::COUNT == ENCODING_SLOTS,
    "one cache slot per encoding"
);

/// The message's bytes for one transport, built once and shared.
pub fn encoded(message: &Message, kind: Encoding) -> &Arc<[u8]> {
    message.encoded_with(kind as usize, |m| encode(kind, m))
}

fn encode(kind: Encoding, message: &Message) -> Vec<u8> {
    match kind {
        Encoding::Json => {
            let mut out = Vec::with_capacity(message.payload.len() + 48);
            write_message_json(&mut out, message);
            out
        }
        Encoding::Sse => sse_event(message),
        Encoding::WsFrame => {
            crate::transport::websocket::encode_text_frame(encoded(message, Encoding::Json))
        }
        Encoding::NamedJson => {
            let mut out = Vec::with_capacity(message.payload.len() + message.mailbox.len() + 60);
            out.extend_from_slice(b"{\"mailbox\":");
            write_json_string(&mut out, &message.mailbox);
            out.push(b',');
            let start = out.len();
            write_message_json(&mut out, message);
            out.remove(start); // the object's own `{`
            out
        }
        Encoding::NamedWsFrame => {
            crate::transport::websocket::encode_text_frame(encoded(message, Encoding::NamedJson))
        }
        Encoding::NamedSseData => {
            let json = encoded(message, Encoding::NamedJson);
            let mut out = Vec::with_capacity(json.len() + 8);
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(json);
            out.extend_from_slice(b"\n\n");
            out
        }
        Encoding::Bayeux => {
            let mut out = Vec::with_capacity(message.payload.len() + message.mailbox.len() + 64);
            write_bayeux_json(&mut out, message);
            out
        }
        Encoding::BayeuxWsFrame => {
            let json = encoded(message, Encoding::Bayeux);
            let mut array = Vec::with_capacity(json.len() + 2);
            array.push(b'[');
            array.extend_from_slice(json);
            array.push(b']');
            crate::transport::websocket::encode_text_frame(&array)
        }
        Encoding::PollBody => {
            let json = encoded(message, Encoding::Json);
            let mut out = Vec::with_capacity(json.len() + message.id.len() + 32);
            out.extend_from_slice(b"{\"messages\":[");
            out.extend_from_slice(json);
            out.extend_from_slice(b"],\"cursor\":\"");
            out.extend_from_slice(message.id.as_bytes());
            out.extend_from_slice(b"\"}");
            out
        }
    }
}

/// serde_json's compact output, plus escapes for `<`, `>`, `&`, U+2028 and
/// U+2029: the same JSON then is safe inside a `<script>` (iframe), as a JSONP
/// body (old JavaScript engines end a string at U+2028) and everywhere else.
struct ScriptSafe;

impl Formatter for ScriptSafe {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let escape: &[u8] = match c {
                '<' => b"\\u003c",
                '>' => b"\\u003e",
                '&' => b"\\u0026",
                '\u{2028}' => b"\\u2028",
                '\u{2029}' => b"\\u2029",
                _ => continue,
            };
            w.write_all(&fragment.as_bytes()[start..i])?;
            w.write_all(escape)?;
            start = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }

    fn write_char_escape<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        escape: CharEscape,
    ) -> io::Result<()> {
        serde_json::ser::CompactFormatter.write_char_escape(w, escape)
    }
}

/// Writes `text` as a JSON string literal, script-safe.
pub fn write_json_string(out: &mut Vec<u8>, text: &str) {
    let mut ser = Serializer::with_formatter(&mut *out, ScriptSafe);
    // Serialising a &str into a Vec cannot fail.
    serde::Serialize::serialize(text, &mut ser).expect("writing JSON to a Vec");
}

pub fn write_message_json(out: &mut Vec<u8>, message: &Message) {
    out.extend_from_slice(b"{\"id\":\"");
    out.extend_from_slice(message.id.as_bytes());
    out.extend_from_slice(b"\",\"data\":");
    match std::str::from_utf8(&message.payload) {
        Ok(text) => {
            write_json_string(out, text);
            out.push(b'}');
        }
        Err(_) => {
            out.push(b'"');
            let encoded = base64::engine::general_purpose::STANDARD.encode(&message.payload);
            out.extend_from_slice(encoded.as_bytes());
            out.extend_from_slice(b"\",\"encoding\":\"base64\"}");
        }
    }
}

/// A Bayeux delivery of `message` on its mailbox's channel. A payload that
/// is JSON goes in as its value, byte for byte (serde_json checked it);
/// mailbox names need no escaping.
pub fn write_bayeux_json(out: &mut Vec<u8>, message: &Message) {
    out.extend_from_slice(b"{\"channel\":\"/");
    out.extend_from_slice(message.mailbox.as_bytes());
    out.extend_from_slice(b"\",\"id\":\"");
    out.extend_from_slice(message.id.as_bytes());
    out.extend_from_slice(b"\",\"data\":");
    let payload = &message.payload;
    if serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok() {
        out.extend_from_slice(payload.trim_ascii());
        out.push(b'}');
        return;
    }
    match std::str::from_utf8(payload) {
        Ok(text) => {
            write_json_string(out, text);
            out.push(b'}');
        }
        Err(_) => {
            out.push(b'"');
            let encoded = base64::engine::general_purpose::STANDARD.encode(payload);
            out.extend_from_slice(encoded.as_bytes());
            out.extend_from_slice(b"\",\"ext\":{\"cometbox\":{\"encoding\":\"base64\"}}}");
        }
    }
}

/// One SSE event. Payload lines are split on CRLF, CR and LF (any of them
/// would end the `data:` field) and each becomes its own `data:` line, which
/// EventSource joins with `\n`. Every `data:` is followed by one space, which
/// EventSource strips, so a payload's own leading space survives.
fn sse_event(message: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.payload.len() + message.id.len() + 32);
    let encoded;
    let text = match std::str::from_utf8(&message.payload) {
        Ok(text) => text,
        Err(_) => {
            out.extend_from_slice(b"event: base64\n");
            encoded = base64::engine::general_purpose::STANDARD.encode(&message.payload);
            &encoded
        }
    };
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(message.id.as_bytes());
    out.push(b'\n');
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\r' || bytes[i] == b'\n' {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(&bytes[start..i]);
            out.push(b'\n');
            if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
                i += 1;
            }
            start = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(&bytes[start..]);
    out.extend_from_slice(b"\n\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::message;

    #[test]
    fn json_is_script_safe_and_exact() {
        let m = message("</script><b>&\u{2028}\u{2029}\"\\\n\u{0}é".as_bytes());
        let json = std::str::from_utf8(encoded(&m, Encoding::Json))
            .unwrap()
            .to_string();
        assert!(!json.contains('<') && !json.contains('>') && !json.contains('&'));
        assert!(!json.contains('\u{2028}') && !json.contains('\u{2029}'));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["data"], "</script><b>&\u{2028}\u{2029}\"\\\n\u{0}é");
        assert_eq!(v["id"], &*m.id);
        assert!(v.get("encoding").is_none());
    }

    #[test]
    fn non_utf8_goes_base64() {
        let m = message(&[0xff, 0x00, 0xfe]);
        let v: serde_json::Value = serde_json::from_slice(encoded(&m, Encoding::Json)).unwrap();
        assert_eq!(v["data"], "/wD+");
        assert_eq!(v["encoding"], "base64");
        let sse = std::str::from_utf8(encoded(&m, Encoding::Sse)).unwrap();
        assert_eq!(sse, format!("event: base64\nid: {}\ndata: /wD+\n\n", m.id));
    }

    #[test]
    fn sse_splits_every_line_ending() {
        let m = message(b" a\r\nb\rc\nd\n");
        let sse = std::str::from_utf8(encoded(&m, Encoding::Sse)).unwrap();
        assert_eq!(
            sse,
            format!(
                "id: {}\ndata:  a\ndata: b\ndata: c\ndata: d\ndata: \n\n",
                m.id
            )
        );
        let empty = message(b"");
        let sse = std::str::from_utf8(encoded(&empty, Encoding::Sse)).unwrap();
        assert_eq!(sse, format!("id: {}\ndata: \n\n", empty.id));
    }

    #[test]
    fn poll_body_is_the_long_poll_shape() {
        let m = message(b"{\"text\":\"hi\"}");
        let v: serde_json::Value = serde_json::from_slice(encoded(&m, Encoding::PollBody)).unwrap();
        assert_eq!(v["messages"][0]["data"], "{\"text\":\"hi\"}");
        assert_eq!(v["cursor"], &*m.id);
    }

    #[test]
    fn bayeux_data_is_the_json_value_or_a_string() {
        let json = message(b" {\"n\":[1,2.5,\"x\"]} ");
        let v: serde_json::Value =
            serde_json::from_slice(encoded(&json, Encoding::Bayeux)).unwrap();
        assert_eq!(v["channel"], "/box");
        assert_eq!(v["id"], &*json.id);
        assert_eq!(v["data"], serde_json::json!({"n": [1, 2.5, "x"]}));
        let text = message(b"hello </script>");
        let v: serde_json::Value =
            serde_json::from_slice(encoded(&text, Encoding::Bayeux)).unwrap();
        assert_eq!(v["data"], "hello </script>");
        let binary = message(&[0xff, 0]);
        let v: serde_json::Value =
            serde_json::from_slice(encoded(&binary, Encoding::Bayeux)).unwrap();
        assert_eq!(v["data"], "/wA=");
        assert_eq!(v["ext"]["cometbox"]["encoding"], "base64");
        let frame = encoded(&text, Encoding::BayeuxWsFrame);
        assert_eq!(frame[0], 0x81);
        assert!(frame.ends_with(b"}]"));
    }

    #[test]
    fn named_encodings_carry_the_mailbox() {
        let m = message(b"hi\nthere");
        let v: serde_json::Value =
            serde_json::from_slice(encoded(&m, Encoding::NamedJson)).unwrap();
        assert_eq!(v["mailbox"], "box");
        assert_eq!(v["id"], &*m.id);
        assert_eq!(v["data"], "hi\nthere");
        let sse = std::str::from_utf8(encoded(&m, Encoding::NamedSseData)).unwrap();
        assert!(sse.starts_with("data: {") && sse.ends_with("}\n\n"));
        assert_eq!(
            sse.matches('\n').count(),
            2,
            "JSON escapes the payload's newline"
        );
        assert_eq!(Encoding::Sse.named(), Encoding::NamedSseData);
    }
}
