//! A WebSocket session over the sans-IO codec in `websocket`: the upgrade's
//! checks and its 101, what the peer's frames ask of us, our pings, pongs
//! and close frames. Frames are written into buffers; the worker sends them.

use super::websocket::{self, CLOSE_GOING_AWAY, CLOSE_NORMAL, Inbound, InboundDecoder};
use crate::http::{self, HttpError, Method, Request, Status};

/// Without `mailbox.upstream`, client messages are ignored; anything larger
/// than this is refused (1009) rather than skipped forever. With it, the
/// limit is `mailbox.max-message-size`.
pub const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

/// Where a client's text messages go (`mailbox.upstream`).
pub struct Upstream {
    /// The followed mailboxes it may send to.
    pub mailboxes: Vec<std::sync::Arc<str>>,
    pub subject: Option<std::sync::Arc<str>>,
    /// Several mailboxes followed: a message names its mailbox.
    pub multiplexed: bool,
}

/// What a client's text messages are for. Plain subscribers have none.
pub enum Talk {
    /// They go to the backends (`mailbox.upstream`).
    Upstream(Upstream),
    /// They are Bayeux messages (docs/bayeux.md).
    Bayeux(crate::session::WsSession),
}

/// What few sessions need, behind one pointer that is null for an idle
/// plain subscriber.
#[derive(Default)]
struct Extras {
    /// The peer's most recent ping, not answered yet because output was
    /// queued. RFC 6455 5.5.3 lets an endpoint answer only the latest ping,
    /// so a flood of pings from a peer that never reads costs one pong.
    pong_owed: Option<Vec<u8>>,
    /// Set when the client's text messages are kept (the decoder keeps
    /// them only then); for the whole session.
    talk: Option<Talk>,
}

/// Held inline in the connection's phase (no allocation per WebSocket), so
/// it is kept within the size of a stream's state (80 bytes): what few
/// sessions need (an owed pong, `mailbox.upstream`, Bayeux) is behind one
/// pointer.
pub struct WsState {
    pub decoder: InboundDecoder,
    /// A ping of ours is unanswered; the next heartbeat without any frame
    /// from the peer closes the connection.
    pub ping_outstanding: bool,
    /// Message bytes sent, for `mailbox.stream-max-bytes`.
    pub sent: u64,
    /// When the connection ends by itself (stream-max-duration or the
    /// token's expiry), in ms on the worker clock; `u64::MAX`, the worker's
    /// "no deadline", when never.
    pub ends_at: u64,
    extras: Option<Box<Extras>>,
}

impl WsState {
    pub fn new(ends_at: Option<u64>) -> WsState {
        WsState {
            decoder: InboundDecoder::new(MAX_CLIENT_MESSAGE),
            ping_outstanding: false,
            sent: 0,
            ends_at: ends_at.unwrap_or(u64::MAX),
            extras: None,
        }
    }

    fn talking(ends_at: Option<u64>, decoder: InboundDecoder, talk: Talk) -> WsState {
        WsState {
            decoder,
            extras: Some(Box::new(Extras {
                pong_owed: None,
                talk: Some(talk),
            })),
            ..WsState::new(ends_at)
        }
    }

    /// A session whose text messages are kept for `upstream` (up to
    /// `max_message` bytes each).
    pub fn with_upstream(ends_at: Option<u64>, upstream: Upstream, max_message: usize) -> WsState {
        let decoder = InboundDecoder::new(max_message).keeping_text();
        WsState::talking(ends_at, decoder, Talk::Upstream(upstream))
    }

    /// A Bayeux session over this socket: its text messages are kept.
    pub fn with_bayeux(ends_at: Option<u64>, session: crate::session::WsSession) -> WsState {
        let decoder = InboundDecoder::new(MAX_CLIENT_MESSAGE).keeping_text();
        WsState::talking(ends_at, decoder, Talk::Bayeux(session))
    }

    fn talk(&self) -> Option<&Talk> {
        self.extras.as_deref()?.talk.as_ref()
    }

    /// Where text messages go upstream, on an upstream session.
    pub fn upstream(&self) -> Option<&Upstream> {
        match self.talk()? {
            Talk::Upstream(up) => Some(up),
            Talk::Bayeux(_) => None,
        }
    }

    /// The Bayeux session over this socket, if it is one.
    pub fn bayeux(&self) -> Option<&crate::session::WsSession> {
        match self.talk()? {
            Talk::Bayeux(session) => Some(session),
            Talk::Upstream(_) => None,
        }
    }

    pub fn bayeux_mut(&mut self) -> Option<&mut crate::session::WsSession> {
        match self.extras.as_deref_mut()?.talk.as_mut()? {
            Talk::Bayeux(session) => Some(session),
            Talk::Upstream(_) => None,
        }
    }

    /// The peer pinged: the pong is owed until [`WsState::take_pong`]
    /// (only the latest ping's, see `Extras::pong_owed`).
    fn owe_pong(&mut self, payload: Vec<u8>) {
        self.extras.get_or_insert_default().pong_owed = Some(payload);
    }

    /// Writes the owed pong, if any, into `out`.
    pub fn take_pong(&mut self, out: &mut Vec<u8>) -> bool {
        let Some(extras) = self.extras.as_deref_mut() else {
            return false;
        };
        let Some(payload) = extras.pong_owed.take() else {
            return false;
        };
        if extras.talk.is_none() {
            self.extras = None; // a plain subscriber goes back to no chunk
        }
        websocket::encode_pong(&payload, out);
        true
    }
}

/// Checks a WebSocket upgrade request (RFC 6455 4.2.1).
pub fn check_upgrade(req: &Request<'_>, origin_allowed: bool) -> Result<(), HttpError> {
    if req.method() != Method::Get {
        Err(HttpError::bad_request("a WebSocket upgrade must be a GET"))
    } else if !req.http11 || !req.connection_upgrade {
        Err(HttpError::bad_request(
            "a WebSocket upgrade needs HTTP/1.1 and Connection: Upgrade",
        ))
    } else if req.websocket_version != Some(b"13") {
        Err(HttpError::new(
            Status::UpgradeRequired,
            "only WebSocket version 13 is supported",
        ))
    } else if !req
        .websocket_key
        .is_some_and(websocket::is_valid_client_key)
    {
        Err(HttpError::bad_request(
            "missing or invalid Sec-WebSocket-Key",
        ))
    } else if !origin_allowed {
        Err(HttpError::new(Status::Forbidden, "origin not allowed"))
    } else {
        Ok(())
    }
}

/// The 101 that opens the session.
pub fn write_handshake(client_key: &[u8], date: &[u8], out: &mut Vec<u8>) {
    http::write_head(out, Status::SwitchingProtocols, true, date);
    out.extend_from_slice(b"Upgrade: websocket\r\nConnection: Upgrade\r\n");
    http::write_header(
        out,
        "Sec-WebSocket-Accept",
        websocket::accept_key(client_key).as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
}

/// The `missed` marker as a text frame; `mailbox` names it on a multiplexed
/// session.
pub fn write_missed(mailbox: Option<&str>, out: &mut Vec<u8>) {
    let mut json = Vec::with_capacity(64);
    super::write_missed_json(mailbox, &mut json);
    websocket::encode_frame_header(websocket::Opcode::Text, true, json.len(), out);
    out.extend_from_slice(&json);
}

/// Our close when the session ends by itself (duration, bytes, token expiry,
/// shutdown): the client reconnects with its cursor.
pub fn write_going_away(out: &mut Vec<u8>) {
    websocket::encode_close(CLOSE_GOING_AWAY, "going away", out);
}

/// The heartbeat: a ping the peer must answer before the next one.
pub fn write_ping(ws: &mut WsState, out: &mut Vec<u8>) {
    ws.ping_outstanding = true;
    websocket::encode_ping(b"", out);
}

/// What the peer's frames asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Every whole frame was consumed; wait for more input. A pong may be
    /// owed (see [`WsState::take_pong`]).
    NeedMore,
    /// The peer closed: our echo is in `out`; end the session.
    Closed,
    /// The peer broke the protocol: our close is in `out`; end the session.
    Violated(&'static str),
}

/// Consumes the whole frames at the start of `buf`, appending complete text
/// messages to `texts` (only a decoder that keeps text has any). Returns how
/// much was consumed and what to do next.
pub fn read_frames(
    ws: &mut WsState,
    buf: &mut [u8],
    out: &mut Vec<u8>,
    texts: &mut Vec<Vec<u8>>,
) -> (usize, Step) {
    let mut pos = 0;
    loop {
        match ws.decoder.decode(&mut buf[pos..]) {
            Ok((0, None)) => return (pos, Step::NeedMore),
            Ok((n, event)) => {
                pos += n;
                ws.ping_outstanding = false;
                match event {
                    Some(Inbound::Ping(payload)) => ws.owe_pong(payload),
                    Some(Inbound::Text(text)) => texts.push(text),
                    Some(Inbound::Pong(_)) | Some(Inbound::Message) | None => {}
                    Some(Inbound::Close { code, .. }) => {
                        // Echo the peer's code, as RFC 6455 5.5.1 suggests.
                        websocket::encode_close(code.unwrap_or(CLOSE_NORMAL), "", out);
                        return (buf.len(), Step::Closed);
                    }
                }
            }
            Err(violation) => {
                websocket::encode_close(violation.close_code, violation.reason, out);
                return (buf.len(), Step::Violated(violation.reason));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    #[test]
    fn a_ping_flood_owes_one_pong_for_the_latest_ping() {
        let mut ws = WsState::new(None);
        let mut input: Vec<u8> = (0..1000u32)
            .flat_map(|i| frame(0x9, i.to_string().as_bytes()))
            .collect();
        let mut out = Vec::new();
        let (used, step) = read_frames(&mut ws, &mut input, &mut out, &mut Vec::new());
        assert_eq!((used, step), (input.len(), Step::NeedMore));
        assert!(out.is_empty(), "nothing written per ping");
        assert!(ws.take_pong(&mut out));
        assert_eq!(out, [&[0x8a, 3][..], b"999"].concat());
        assert!(!ws.take_pong(&mut out));
    }

    #[test]
    fn a_plain_session_holds_no_chunk_once_its_pong_is_written() {
        let mut ws = WsState::new(None);
        let mut input = [frame(0x9, b"p"), frame(0x1, b"dropped")].concat();
        let (mut out, mut texts) = (Vec::new(), Vec::new());
        read_frames(&mut ws, &mut input, &mut out, &mut texts);
        assert!(texts.is_empty(), "a plain session keeps no text");
        assert!(ws.extras.is_some());
        assert!(ws.take_pong(&mut out));
        assert!(ws.extras.is_none());
        // A session that talks keeps its chunk: the pong shares it.
        let upstream = Upstream {
            mailboxes: vec![],
            subject: None,
            multiplexed: false,
        };
        let mut ws = WsState::with_upstream(None, upstream, 1024);
        let mut input = [frame(0x9, b"p"), frame(0x1, b"kept")].concat();
        read_frames(&mut ws, &mut input, &mut out, &mut texts);
        assert_eq!(texts, [b"kept".to_vec()]);
        assert!(ws.take_pong(&mut out));
        assert!(ws.upstream().is_some() && ws.bayeux().is_none());
    }

    #[test]
    fn close_is_echoed_and_violations_answered_with_their_code() {
        let mut ws = WsState::new(None);
        let mut input = frame(0x8, &4000u16.to_be_bytes());
        let mut out = Vec::new();
        assert_eq!(
            read_frames(&mut ws, &mut input, &mut out, &mut Vec::new()).1,
            Step::Closed
        );
        assert_eq!(out, [0x88, 2, 0x0f, 0xa0]);
        let mut ws = WsState::new(None);
        let mut unmasked = vec![0x81, 1, b'x'];
        out.clear();
        assert!(matches!(
            read_frames(&mut ws, &mut unmasked, &mut out, &mut Vec::new()).1,
            Step::Violated(_)
        ));
        assert_eq!(&out[..4], &[0x88, out[1], 0x03, 0xea], "1002");
    }

    #[test]
    fn the_handshake_uses_the_rfc_example_key() {
        let mut out = Vec::new();
        write_handshake(b"dGhlIHNhbXBsZSBub25jZQ==", b"now", &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }
}
