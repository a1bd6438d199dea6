//! The ways a browser can hold a mailbox open, chosen per request, and each
//! one's framing around the shared message encodings: `longpoll` (and
//! JSONP), `stream` (SSE, NDJSON, forever iframe), `ws_session` over the
//! RFC 6455 codec in `websocket`, and `encode` (the per-message bytes they
//! all share).
//!
//! Every transport has the same semantics (backlog after the cursor, then
//! live messages, `missed` when the cursor fell out of history); they differ
//! only in framing. Framers are pure: they write into buffers and return
//! parts for the output queue; the worker does the I/O. See docs/protocol.md.

pub mod encode;
pub mod longpoll;
pub mod stream;
pub mod websocket;
pub mod ws_session;

use crate::http::{Cors, Request, Status, query_pairs};

/// What a response needs to remember of its request while it is held open.
#[derive(Debug)]
pub struct ReplyTo {
    pub http11: bool,
    pub keep_alive: bool,
    pub cors: Cors,
    /// JSONP or iframe callback name, validated.
    pub callback: Option<Box<str>>,
}

/// The one `missed` marker: every transport carries this JSON object
/// (framed its own way) when a cursor fell out of history. On a connection
/// that follows several mailboxes it names the mailbox:
/// `{"mailbox":"room:42","missed":true}`.
pub fn write_missed_json(mailbox: Option<&str>, out: &mut Vec<u8>) {
    match mailbox {
        None => out.extend_from_slice(b"{\"missed\":true}"),
        Some(name) => {
            out.extend_from_slice(b"{\"mailbox\":");
            encode::write_json_string(out, name);
            out.extend_from_slice(b",\"missed\":true}");
        }
    }
}

/// Callback names: a JavaScript identifier or dotted path, at most 64 bytes.
pub const MAX_CALLBACK_LEN: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    Sse,
    Ndjson,
    Iframe,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Transport {
    LongPoll,
    Jsonp,
    Stream(StreamKind),
    WebSocket,
}

/// What a mailbox request asked for, from its URL and headers.
#[derive(Debug)]
pub struct Choice {
    pub transport: Transport,
    pub callback: Option<Box<str>>,
    /// The raw cursor (`Last-Event-ID` for SSE reconnects wins over `?since=`).
    pub since: Option<Vec<u8>>,
    pub token: Option<Vec<u8>>,
}

pub fn is_valid_callback(name: &[u8]) -> bool {
    let ident_start = |b: u8| b.is_ascii_alphabetic() || b == b'_' || b == b'$';
    let ident_rest = |b: u8| ident_start(b) || b.is_ascii_digit();
    !name.is_empty()
        && name.len() <= MAX_CALLBACK_LEN
        && name.split(|&b| b == b'.').all(|ident| {
            ident.first().is_some_and(|&b| ident_start(b)) && ident.iter().all(|&b| ident_rest(b))
        })
}

pub fn choose(req: &Request<'_>) -> Result<Choice, (Status, &'static str)> {
    let mut transport_param: Option<Vec<u8>> = None;
    let mut callback: Option<Vec<u8>> = None;
    let mut since: Option<Vec<u8>> = None;
    let mut token: Option<Vec<u8>> = None;
    for (key, value) in query_pairs(req.query) {
        match key.as_slice() {
            b"transport" => transport_param = Some(value),
            b"callback" => callback = Some(value),
            b"since" => since = Some(value),
            b"token" => token = Some(value),
            _ => {}
        }
    }
    if let Some(name) = &callback
        && !is_valid_callback(name)
    {
        // Never reflected: a hostile name must not reach a script body.
        return Err((
            Status::BadRequest,
            "invalid callback: use a JavaScript identifier or dotted path of at most 64 characters",
        ));
    }
    let transport = if req.upgrade_websocket {
        Transport::WebSocket
    } else {
        match transport_param.as_deref() {
            Some(b"sse") => Transport::Stream(StreamKind::Sse),
            Some(b"stream") => Transport::Stream(StreamKind::Ndjson),
            Some(b"iframe") => Transport::Stream(StreamKind::Iframe),
            None if req.accept_event_stream => Transport::Stream(StreamKind::Sse),
            Some(b"longpoll") | Some(b"poll") | Some(b"jsonp") | None => {
                if callback.is_some() {
                    Transport::Jsonp
                } else {
                    Transport::LongPoll
                }
            }
            Some(b"websocket") => {
                return Err((
                    Status::BadRequest,
                    "transport=websocket needs a WebSocket upgrade request",
                ));
            }
            Some(_) => {
                return Err((
                    Status::BadRequest,
                    "unknown transport: use sse, stream, iframe or longpoll",
                ));
            }
        }
    };
    if transport == Transport::Stream(StreamKind::Iframe) && callback.is_none() {
        return Err((Status::BadRequest, "transport=iframe needs a callback"));
    }
    if transport == Transport::Stream(StreamKind::Sse)
        && let Some(last) = req.last_event_id
        && !last.is_empty()
    {
        since = Some(last.to_vec());
    }
    let callback = callback.map(|c| {
        // Validated above: ASCII only.
        String::from_utf8(c)
            .expect("callback is ASCII")
            .into_boxed_str()
    });
    Ok(Choice {
        transport,
        callback,
        since: since.filter(|s| !s.is_empty()),
        token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Parsed, parse_request};

    fn choice(raw: &str) -> Result<Choice, (Status, &'static str)> {
        let Parsed::Complete(req, _) = parse_request(raw.as_bytes(), 8192) else {
            panic!("bad test request")
        };
        choose(&req)
    }

    #[test]
    fn callbacks() {
        for good in ["cb", "$", "_a1", "a.b.c", "jQuery123_456", &"a".repeat(64)] {
            assert!(is_valid_callback(good.as_bytes()), "{good}");
        }
        for bad in [
            "",
            "1a",
            "a..b",
            "a.",
            ".a",
            "a-b",
            "alert(1)",
            "a;b",
            "a b",
            "é",
            &"a".repeat(65),
        ] {
            assert!(!is_valid_callback(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn transport_selection() {
        let get = |q: &str, extra: &str| {
            choice(&format!(
                "GET /mailbox/a{q} HTTP/1.1\r\nHost: h\r\n{extra}\r\n"
            ))
        };
        assert_eq!(get("", "").unwrap().transport, Transport::LongPoll);
        assert_eq!(get("?callback=cb", "").unwrap().transport, Transport::Jsonp);
        assert_eq!(
            get("", "Accept: text/event-stream\r\n").unwrap().transport,
            Transport::Stream(StreamKind::Sse)
        );
        assert_eq!(
            get("?transport=sse", "").unwrap().transport,
            Transport::Stream(StreamKind::Sse)
        );
        assert_eq!(
            get("?transport=stream", "").unwrap().transport,
            Transport::Stream(StreamKind::Ndjson)
        );
        assert_eq!(
            get("?transport=iframe&callback=f", "").unwrap().transport,
            Transport::Stream(StreamKind::Iframe)
        );
        assert_eq!(
            get("?transport=iframe", "").unwrap_err().0,
            Status::BadRequest
        );
        assert_eq!(
            get("?transport=carrier-pigeon", "").unwrap_err().0,
            Status::BadRequest
        );
        assert_eq!(
            get("?callback=alert(1)", "").unwrap_err().0,
            Status::BadRequest
        );
        assert_eq!(
            get("", "Upgrade: websocket\r\nConnection: Upgrade\r\n")
                .unwrap()
                .transport,
            Transport::WebSocket
        );
    }

    #[test]
    fn last_event_id_wins_for_sse() {
        let c = choice("GET /mailbox/a?since=old HTTP/1.1\r\nHost: h\r\nAccept: text/event-stream\r\nLast-Event-ID: new\r\n\r\n")
            .unwrap();
        assert_eq!(c.since.as_deref(), Some(&b"new"[..]));
        let c =
            choice("GET /mailbox/a?since=old HTTP/1.1\r\nHost: h\r\nLast-Event-ID: new\r\n\r\n")
                .unwrap();
        assert_eq!(c.since.as_deref(), Some(&b"old"[..]));
    }

    #[test]
    fn cors_grants() {
        let allowed = vec!["https://app.example".to_string()];
        assert_eq!(
            Cors::grant(Some(b"https://app.example"), &allowed),
            Cors::Listed(0)
        );
        assert_eq!(
            Cors::grant(Some(b"https://evil.example"), &allowed),
            Cors::None
        );
        assert_eq!(Cors::grant(None, &allowed), Cors::None);
        let any = vec!["*".to_string()];
        assert_eq!(
            Cors::grant(Some(b"https://x.example"), &any),
            Cors::Any("https://x.example".into())
        );
    }
}
