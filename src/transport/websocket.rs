//! RFC 6455 for the server side, sans-IO: the handshake key, server frames
//! (never masked, so one encoding serves every subscriber) and a decoder for
//! client frames that unmasks in place and validates as it goes.
//!
//! The gateway does not route client data yet, so data frames are consumed
//! piecemeal and dropped (after UTF-8 validation for text): the caller never
//! buffers a large frame. Control frames are small and are consumed whole,
//! so the caller holds at most [`MAX_CLIENT_CONTROL_FRAME`] unconsumed bytes.

use base64::Engine;
use sha1::{Digest, Sha1};

/// RFC 6455 4.2.2: appended to the client's key before hashing.
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// RFC 6455 7.4.1 close codes the gateway sends.
pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
pub const CLOSE_INVALID_DATA: u16 = 1007;
pub const CLOSE_TOO_BIG: u16 = 1009;

/// RFC 6455 5.5: control frames carry at most 125 bytes, so their length
/// always fits the 7-bit field.
const MAX_CONTROL_PAYLOAD: usize = 125;

/// The longest a client control frame can be: 2 header bytes, the 4-byte
/// masking key and the payload. Decoding never stalls with more than this
/// left unconsumed, so it bounds what a caller must keep between reads.
pub const MAX_CLIENT_CONTROL_FRAME: usize = 2 + 4 + MAX_CONTROL_PAYLOAD;

/// The longest server frame header: 2 bytes and a 64-bit length (no mask).
const MAX_SERVER_HEADER: usize = 10;

// RFC 6455 5.2: the bits of the first two header bytes.
const FIN_BIT: u8 = 0x80;
const RSV_BITS: u8 = 0x70;
const OPCODE_BITS: u8 = 0x0f;
const MASK_BIT: u8 = 0x80;
const LEN_BITS: u8 = 0x7f;
/// 7-bit length values that announce a 16-bit or a 64-bit length.
const LEN_16: u8 = 126;
const LEN_64: u8 = 127;

/// The `Sec-WebSocket-Accept` value for a client's `Sec-WebSocket-Key`.
pub fn accept_key(sec_websocket_key: &[u8]) -> String {
    let mut sha = Sha1::new();
    // 4.2.2 hashes the key "minus any leading and trailing whitespace".
    sha.update(sec_websocket_key.trim_ascii());
    sha.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// RFC 6455 4.2.1: the key is base64 of 16 bytes.
pub fn is_valid_client_key(key: &[u8]) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(key.trim_ascii())
        .is_ok_and(|k| k.len() == 16)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    /// None for the opcodes RFC 6455 5.2 reserves (3–7, 0xB–0xF).
    fn from_bits(bits: u8) -> Option<Opcode> {
        Some(match bits {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// Server-to-client frames are never masked, so one encoding serves every
/// subscriber. Writes 2, 4 or 10 bytes: RFC 6455 5.2 wants the shortest
/// length form.
pub fn encode_frame_header(opcode: Opcode, fin: bool, payload_len: usize, out: &mut Vec<u8>) {
    out.push(if fin { FIN_BIT } else { 0 } | opcode.bits());
    if payload_len < usize::from(LEN_16) {
        out.push(payload_len as u8);
    } else if let Ok(len) = u16::try_from(payload_len) {
        out.push(LEN_16);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(LEN_64);
        out.extend_from_slice(&(payload_len as u64).to_be_bytes());
    }
}

/// A whole text frame, built once per message and shared by the cache.
pub fn encode_text_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAX_SERVER_HEADER + payload.len());
    encode_frame_header(Opcode::Text, true, payload.len(), &mut out);
    out.extend_from_slice(payload);
    out
}

/// A close frame. The reason is cut (at a character boundary, so it stays
/// UTF-8 as 5.5.1 requires) to fit a control frame beside the code.
pub fn encode_close(code: u16, reason: &str, out: &mut Vec<u8>) {
    debug_assert!(
        close_code_allowed(code),
        "close code {code} is not for the wire"
    );
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    encode_frame_header(Opcode::Close, true, 2 + end, out);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&reason.as_bytes()[..end]);
}

/// Payloads past 125 bytes are cut: a longer control frame is invalid.
pub fn encode_ping(payload: &[u8], out: &mut Vec<u8>) {
    encode_control(Opcode::Ping, payload, out);
}

/// Payloads past 125 bytes are cut, as for pings. A pong echoes a decoded
/// ping, whose payload never exceeds that.
pub fn encode_pong(payload: &[u8], out: &mut Vec<u8>) {
    encode_control(Opcode::Pong, payload, out);
}

fn encode_control(opcode: Opcode, payload: &[u8], out: &mut Vec<u8>) {
    let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
    encode_frame_header(opcode, true, payload.len(), out);
    out.extend_from_slice(payload);
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// Answer with a pong carrying the same payload.
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// The peer started or answered the close handshake. `code` is None for
    /// an empty close frame; `reason` is valid UTF-8.
    Close {
        code: Option<u16>,
        reason: Vec<u8>,
    },
    /// A complete client data message was received and dropped (binary,
    /// or text when the decoder does not keep text).
    Message,
    /// A complete text message, kept because the decoder was built
    /// [`InboundDecoder::keeping_text`] (Bayeux over WebSocket,
    /// `mailbox.upstream`).
    Text(Vec<u8>),
}

/// The client broke the protocol: send a close frame with this code and
/// reason, then close. The decoder is not to be used again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Violation {
    pub close_code: u16,
    pub reason: &'static str,
}

fn violation<T>(close_code: u16, reason: &'static str) -> Result<T, Violation> {
    Err(Violation { close_code, reason })
}

/// RFC 6455 7.4: the codes an endpoint may put in a close frame. Below 1000
/// is unused; 1004 is reserved; 1005, 1006 and 1015 only report locally what
/// happened; 1012–1014 were registered with IANA after the RFC; 1016–2999
/// are kept for future RFCs; 3000–4999 belong to libraries and applications.
fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Checks UTF-8 across pieces with `std::str::from_utf8`. Between pieces it
/// keeps only the start of a character cut by the boundary: at most 3
/// bytes, as no character is longer than 4.
#[derive(Default)]
struct Utf8Validator {
    partial: [u8; 3],
    /// At most 3 (a `u8`, so an open message costs 16 bytes).
    partial_len: u8,
}

impl Utf8Validator {
    /// False as soon as the bytes so far cannot begin valid UTF-8, so a bad
    /// message is refused without waiting for its end.
    fn feed(&mut self, piece: &[u8]) -> bool {
        let mut rest = piece;
        if self.partial_len > 0 {
            // Give the carried start up to 4 bytes in all: enough to either
            // finish its character or prove it invalid.
            let have = usize::from(self.partial_len);
            let take = rest.len().min(4 - have);
            let mut joined = [0; 4];
            joined[..have].copy_from_slice(&self.partial[..have]);
            joined[have..have + take].copy_from_slice(&rest[..take]);
            let joined = &joined[..have + take];
            let finished = match std::str::from_utf8(joined) {
                Ok(_) => joined.len(),
                // The character finished; what follows is checked below.
                Err(e) if e.valid_up_to() > 0 => e.valid_up_to(),
                // Unfinished even now, which means the piece ran out.
                Err(e) if e.error_len().is_none() => return self.keep(joined),
                Err(_) => return false,
            };
            self.partial_len = 0;
            // The finished character spans all `have` carried bytes and at
            // least one new one, so this does not underflow.
            rest = &rest[finished - have..];
        }
        match std::str::from_utf8(rest) {
            Ok(_) => true,
            Err(e) if e.error_len().is_none() => self.keep(&rest[e.valid_up_to()..]),
            Err(_) => false,
        }
    }

    /// `from_utf8` reports an unfinished end (`error_len() == None`) only for
    /// a valid start of one character, which is at most 3 bytes.
    fn keep(&mut self, start: &[u8]) -> bool {
        self.partial[..start.len()].copy_from_slice(start);
        self.partial_len = start.len() as u8;
        true
    }

    /// A text message may not end inside a character (RFC 6455 8.1).
    fn is_complete(&self) -> bool {
        self.partial_len == 0
    }
}

/// A client frame header that passed every check needing only the header.
struct Header {
    fin: bool,
    opcode: Opcode,
    payload_len: u64,
    mask: [u8; 4],
    /// Header bytes, masking key included.
    len: usize,
}

/// The data frame whose payload is being consumed.
#[derive(Clone, Copy)]
struct Payload {
    remaining: u64,
    mask: [u8; 4],
    /// Where in the mask's 4-byte cycle the next payload byte falls (0–3).
    mask_offset: u8,
    fin: bool,
}

/// Where the decoder is within the byte stream.
enum Frame {
    /// The next byte starts a frame header. A complete data frame header
    /// moves to `Payload`; a control frame is consumed whole and stays here.
    Header,
    /// Inside a data frame's payload; consuming its last byte moves back to
    /// `Header`.
    Payload(Payload),
}

/// The data message being received: from its first frame's header to the
/// end of the frame with FIN set.
struct Message {
    /// Text or Binary, from the first frame.
    opcode: Opcode,
    /// Payload bytes announced so far, over all its frames.
    size: u64,
    utf8: Utf8Validator,
}

/// Decodes client frames. Call `decode` with the unconsumed input until it
/// returns `Ok((0, None))`, keep what is left for the next read, and stop
/// after a `Close` event or a `Violation`.
///
/// It lives inline in every WebSocket connection's state, so it is kept to
/// 48 bytes: what only `mailbox.upstream` needs is behind one pointer.
pub struct InboundDecoder {
    max_message_size: usize,
    frame: Frame,
    /// Set while a message is open; it outlives frames when fragmented.
    /// Whenever `frame` is `Payload`, this is `Some`.
    message: Option<Message>,
    /// Set when text messages are kept ([`InboundDecoder::keeping_text`]):
    /// the open message's text so far. A boxed `Vec` is one pointer, so a
    /// decoder that drops text pays 8 bytes for it, not 24.
    #[allow(clippy::box_collection)]
    kept: Option<Box<Vec<u8>>>,
}

impl InboundDecoder {
    pub fn new(max_message_size: usize) -> Self {
        InboundDecoder {
            max_message_size,
            frame: Frame::Header,
            message: None,
            kept: None,
        }
    }

    /// Keep each text message and hand it over whole as [`Inbound::Text`]
    /// (up to the message size limit); binary messages are still dropped
    /// unread.
    pub fn keeping_text(mut self) -> Self {
        self.kept = Some(Box::default());
        self
    }

    /// Consumes a prefix of `buf` (unmasking in place where it needs to look
    /// at payload) and returns how many bytes were used plus at most one
    /// event. Data-frame payloads can be consumed piecemeal, so the caller
    /// never has to buffer a big data frame; control frames are only
    /// consumed whole. Returns Ok((0, None)) when it needs more bytes.
    pub fn decode(&mut self, buf: &mut [u8]) -> Result<(usize, Option<Inbound>), Violation> {
        match std::mem::replace(&mut self.frame, Frame::Header) {
            Frame::Header => self.frame_start(buf),
            Frame::Payload(payload) => self.payload_piece(payload, buf),
        }
    }

    fn frame_start(&mut self, buf: &mut [u8]) -> Result<(usize, Option<Inbound>), Violation> {
        let Some(header) = self.header(buf)? else {
            return Ok((0, None));
        };
        if header.opcode.is_control() {
            // header() capped the length at 125, so this is small and exact.
            let end = header.len + header.payload_len as usize;
            let Some(payload) = buf.get_mut(header.len..end) else {
                return Ok((0, None));
            };
            unmask(payload, header.mask, 0);
            let event = control_event(header.opcode, payload)?;
            return Ok((end, Some(event)));
        }
        // header() let a continuation through only with a message open, and
        // a Text or Binary frame only without one.
        let message = self.message.get_or_insert_with(|| Message {
            opcode: header.opcode,
            size: 0,
            utf8: Utf8Validator::default(),
        });
        message.size += header.payload_len;
        let payload = Payload {
            remaining: header.payload_len,
            mask: header.mask,
            mask_offset: 0,
            fin: header.fin,
        };
        let (used, event) = self.payload_piece(payload, &mut buf[header.len..])?;
        Ok((header.len + used, event))
    }

    /// Reads and checks a frame header; Ok(None) until all of it is there.
    /// Each check runs as soon as the bytes it needs are, so nothing is ever
    /// reserved or awaited on the strength of a bad length.
    fn header(&self, buf: &[u8]) -> Result<Option<Header>, Violation> {
        let [b0, b1, ..] = *buf else {
            return Ok(None);
        };
        if b0 & RSV_BITS != 0 {
            // No extension is ever negotiated, so no RSV bit has a meaning.
            return violation(CLOSE_PROTOCOL_ERROR, "reserved bits set");
        }
        let fin = b0 & FIN_BIT != 0;
        let Some(opcode) = Opcode::from_bits(b0 & OPCODE_BITS) else {
            return violation(CLOSE_PROTOCOL_ERROR, "unknown opcode");
        };
        if b1 & MASK_BIT == 0 {
            return violation(CLOSE_PROTOCOL_ERROR, "client frames must be masked");
        }
        let len7 = b1 & LEN_BITS;
        let so_far = if opcode.is_control() {
            if !fin {
                return violation(CLOSE_PROTOCOL_ERROR, "fragmented control frame");
            }
            if usize::from(len7) > MAX_CONTROL_PAYLOAD {
                return violation(CLOSE_PROTOCOL_ERROR, "control frame over 125 bytes");
            }
            0
        } else {
            match (opcode, &self.message) {
                (Opcode::Continuation, Some(message)) => message.size,
                (Opcode::Continuation, None) => {
                    return violation(CLOSE_PROTOCOL_ERROR, "continuation without a message");
                }
                (_, Some(_)) => {
                    return violation(CLOSE_PROTOCOL_ERROR, "new message before the last ended");
                }
                (_, None) => 0,
            }
        };
        let (payload_len, len) = match len7 {
            LEN_16 => {
                let Some(bytes) = array(buf, 2) else {
                    return Ok(None);
                };
                (u64::from(u16::from_be_bytes(bytes)), 4)
            }
            LEN_64 => {
                let Some(bytes) = array(buf, 2) else {
                    return Ok(None);
                };
                let len = u64::from_be_bytes(bytes);
                if len >> 63 != 0 {
                    return violation(CLOSE_PROTOCOL_ERROR, "frame length has the top bit set");
                }
                (len, 10)
            }
            short => (u64::from(short), 2),
        };
        // Only data frames count: so_far is 0 for control frames, whose
        // length is already capped. The limit is judged on the claim, before
        // any payload arrives.
        if !opcode.is_control()
            && payload_len > (self.max_message_size as u64).saturating_sub(so_far)
        {
            return violation(CLOSE_TOO_BIG, "message too big");
        }
        let Some(mask) = array(buf, len) else {
            return Ok(None);
        };
        Ok(Some(Header {
            fin,
            opcode,
            payload_len,
            mask,
            len: len + 4,
        }))
    }

    /// Consumes as much of a data frame's payload as `buf` holds.
    fn payload_piece(
        &mut self,
        mut payload: Payload,
        buf: &mut [u8],
    ) -> Result<(usize, Option<Inbound>), Violation> {
        let message = self
            .message
            .as_mut()
            .expect("a data frame's payload always belongs to the open message");
        let take = usize::try_from(payload.remaining).map_or(buf.len(), |r| r.min(buf.len()));
        let piece = &mut buf[..take];
        if message.opcode == Opcode::Text {
            // Binary payloads are dropped unread, so only text is unmasked.
            unmask(piece, payload.mask, usize::from(payload.mask_offset));
            if !message.utf8.feed(piece) {
                return violation(CLOSE_INVALID_DATA, "text message is not UTF-8");
            }
            if let Some(kept) = self.kept.as_mut() {
                kept.extend_from_slice(piece);
            }
        }
        payload.mask_offset = ((usize::from(payload.mask_offset) + take) % 4) as u8;
        payload.remaining -= take as u64;
        if payload.remaining > 0 {
            self.frame = Frame::Payload(payload);
            return Ok((take, None));
        }
        if !payload.fin {
            return Ok((take, None));
        }
        if message.opcode == Opcode::Text && !message.utf8.is_complete() {
            return violation(CLOSE_INVALID_DATA, "text message ends inside a character");
        }
        let message = self.message.take().expect("open, checked above");
        if let Some(kept) = self.kept.as_mut()
            && message.opcode == Opcode::Text
        {
            return Ok((take, Some(Inbound::Text(std::mem::take(&mut **kept)))));
        }
        Ok((take, Some(Inbound::Message)))
    }
}

/// `N` bytes of `buf` from `at`, if they have arrived.
fn array<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    buf.get(at..at + N)?.try_into().ok()
}

/// XORs `payload` with the masking key, starting `offset` bytes into the
/// key's 4-byte cycle (a payload may arrive in pieces of any length).
fn unmask(payload: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut key = mask;
    key.rotate_left(offset % 4);
    let mut words = payload.chunks_exact_mut(4);
    for word in &mut words {
        for (byte, k) in word.iter_mut().zip(key) {
            *byte ^= k;
        }
    }
    for (byte, k) in words.into_remainder().iter_mut().zip(key) {
        *byte ^= k;
    }
}

/// The event for a whole, unmasked control frame.
fn control_event(opcode: Opcode, payload: &[u8]) -> Result<Inbound, Violation> {
    Ok(match opcode {
        Opcode::Ping => Inbound::Ping(payload.to_vec()),
        Opcode::Pong => Inbound::Pong(payload.to_vec()),
        Opcode::Close => close_event(payload)?,
        data => unreachable!("header() sends only control opcodes here, not {data:?}"),
    })
}

/// RFC 6455 5.5.1: a close body, if any, is a 2-byte code and a UTF-8 reason.
fn close_event(payload: &[u8]) -> Result<Inbound, Violation> {
    Ok(match *payload {
        [] => Inbound::Close {
            code: None,
            reason: Vec::new(),
        },
        [_] => return violation(CLOSE_PROTOCOL_ERROR, "close frame with a 1-byte body"),
        [hi, lo, ref reason @ ..] => {
            let code = u16::from_be_bytes([hi, lo]);
            if !close_code_allowed(code) {
                return violation(CLOSE_PROTOCOL_ERROR, "close code not allowed on the wire");
            }
            if std::str::from_utf8(reason).is_err() {
                return violation(CLOSE_INVALID_DATA, "close reason is not UTF-8");
            }
            Inbound::Close {
                code: Some(code),
                reason: reason.to_vec(),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An arbitrary masking key with no zero byte, so unmasking is visible.
    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    const TEXT: u8 = 0x1;
    const BINARY: u8 = 0x2;
    const CONTINUATION: u8 = 0x0;
    const CLOSE: u8 = 0x8;
    const PING: u8 = 0x9;
    const PONG: u8 = 0xA;

    /// A masked client frame with the shortest length form.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        raw_frame(if fin { 0x80 } else { 0 } | opcode, payload)
    }

    /// A masked client frame with the first byte given whole (RSV bits too).
    fn raw_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![b0];
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= 65535 {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&KEY);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
        out
    }

    /// A server frame (as our encoders write it) turned into the client
    /// frame a browser would send with the same content.
    fn masked(server_frame: &[u8]) -> Vec<u8> {
        let header = match server_frame[1] {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        let mut out = server_frame[..header].to_vec();
        out[1] |= 0x80;
        out.extend_from_slice(&KEY);
        let payload = &server_frame[header..];
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
        out
    }

    /// Feeds `pieces` in order the way the reactor does: append to what is
    /// left, decode until it asks for more. Checks on the way that the
    /// decoder never claims bytes it was not given and never leaves the
    /// caller holding more than a control frame.
    fn feed(decoder: &mut InboundDecoder, pieces: &[&[u8]]) -> Result<Vec<Inbound>, Violation> {
        let mut events = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        for piece in pieces {
            pending.extend_from_slice(piece);
            loop {
                let (used, event) = decoder.decode(&mut pending)?;
                assert!(used <= pending.len());
                pending.drain(..used);
                if used == 0 {
                    assert_eq!(event, None, "an event always consumes bytes");
                    break;
                }
                events.extend(event);
            }
            assert!(
                pending.len() < MAX_CLIENT_CONTROL_FRAME,
                "{}",
                pending.len()
            );
        }
        Ok(events)
    }

    fn decode_whole(input: &[u8], max: usize) -> Result<Vec<Inbound>, Violation> {
        feed(&mut InboundDecoder::new(max), &[input])
    }

    /// Decodes `input` whole, split in two at every offset, and one byte at
    /// a time; all must agree. Returns the common result.
    fn decode_every_split(input: &[u8], max: usize) -> Result<Vec<Inbound>, Violation> {
        let whole = decode_whole(input, max);
        for at in 0..=input.len() {
            let (a, b) = input.split_at(at);
            let split = feed(&mut InboundDecoder::new(max), &[a, b]);
            assert_eq!(split, whole, "split at {at}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(
            feed(&mut InboundDecoder::new(max), &bytes),
            whole,
            "byte by byte"
        );
        whole
    }

    fn close_event(code: Option<u16>, reason: &[u8]) -> Inbound {
        Inbound::Close {
            code,
            reason: reason.to_vec(),
        }
    }

    #[test]
    fn accept_key_from_the_rfc() {
        // RFC 6455 1.3 and 4.2.2.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(
            accept_key(b" dGhlIHNhbXBsZSBub25jZQ==\t"),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn client_keys_must_be_16_bytes_of_base64() {
        assert!(is_valid_client_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(is_valid_client_key(b" dGhlIHNhbXBsZSBub25jZQ== "));
        assert!(!is_valid_client_key(b""));
        assert!(!is_valid_client_key(b"short"));
        assert!(!is_valid_client_key(b"AAAAAAAAAAAAAAAAAAAA")); // 15 bytes
        assert!(!is_valid_client_key(b"AAAAAAAAAAAAAAAAAAAAAAA=")); // 17 bytes
        assert!(!is_valid_client_key(b"dGhlIHNhbXBsZSBub25jZQ")); // unpadded
        assert!(!is_valid_client_key(b"dGhlIHNhbXBsZSBub25j!Q=="));
    }

    #[test]
    fn header_lengths_at_the_boundaries() {
        let cases: [(usize, &[u8]); 5] = [
            (0, &[0x81, 0]),
            (125, &[0x81, 125]),
            (126, &[0x81, 126, 0, 126]),
            (65535, &[0x81, 126, 0xff, 0xff]),
            (65536, &[0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ];
        for (len, header) in cases {
            let mut out = Vec::new();
            encode_frame_header(Opcode::Text, true, len, &mut out);
            assert_eq!(out, header, "{len}");
        }
        let mut out = Vec::new();
        encode_frame_header(Opcode::Continuation, false, 3, &mut out);
        encode_frame_header(Opcode::Binary, true, 3, &mut out);
        assert_eq!(out, [0x00, 3, 0x82, 3]);
        assert_eq!(encode_text_frame(b"hi"), [0x81, 2, b'h', b'i']);
        let big = encode_text_frame(&[b'x'; 70_000]);
        assert_eq!(big.len(), 10 + 70_000);
        assert_eq!(&big[..10], [0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
    }

    #[test]
    fn every_split_gives_the_same_events() {
        let input = [
            client_frame(true, PING, b"ping!"),
            client_frame(false, TEXT, "héllo ".as_bytes()),
            // Control frames may come between fragments.
            client_frame(true, PONG, b"p"),
            client_frame(false, CONTINUATION, b""),
            client_frame(true, CONTINUATION, "wörld €😀".as_bytes()),
            client_frame(true, BINARY, &[0xff; 300]),
            client_frame(true, TEXT, b""),
            client_frame(true, TEXT, "x".repeat(200).as_bytes()),
            client_frame(true, PONG, b""),
            client_frame(true, CLOSE, &[0x03, 0xe8, b'b', b'y', b'e']),
        ]
        .concat();
        let expected = vec![
            Inbound::Ping(b"ping!".to_vec()),
            Inbound::Pong(b"p".to_vec()),
            Inbound::Message,
            Inbound::Message,
            Inbound::Message,
            Inbound::Message,
            Inbound::Pong(vec![]),
            close_event(Some(1000), b"bye"),
        ];
        assert_eq!(decode_every_split(&input, 1 << 20).unwrap(), expected);
    }

    #[test]
    fn sixty_four_bit_lengths_decode() {
        let text = "€".repeat(30_000); // 90,000 bytes, characters cut by pieces
        let input = [
            client_frame(true, TEXT, text.as_bytes()),
            client_frame(true, BINARY, &[0; 65_536]),
        ]
        .concat();
        for piece in [1, 7, 4096, input.len()] {
            let pieces: Vec<&[u8]> = input.chunks(piece).collect();
            let events = feed(&mut InboundDecoder::new(1 << 20), &pieces).unwrap();
            assert_eq!(events, [Inbound::Message, Inbound::Message], "{piece}");
        }
    }

    #[test]
    fn data_payload_is_consumed_as_it_arrives() {
        let input = client_frame(true, TEXT, "ab€cd".as_bytes());
        let mut decoder = InboundDecoder::new(1024);
        // The header alone (with its mask) is taken, and then every byte.
        let mut buf = input[..6].to_vec();
        assert_eq!(decoder.decode(&mut buf).unwrap(), (6, None));
        for (i, &b) in input[6..].iter().enumerate() {
            let event = (i == input.len() - 7).then_some(Inbound::Message);
            assert_eq!(decoder.decode(&mut [b]).unwrap(), (1, event), "{i}");
        }
        // A control frame waits until it is whole.
        let ping = client_frame(true, PING, b"12345");
        let mut buf = ping[..ping.len() - 1].to_vec();
        assert_eq!(decoder.decode(&mut buf).unwrap(), (0, None));
        let mut buf = ping.clone();
        assert_eq!(
            decoder.decode(&mut buf).unwrap(),
            (ping.len(), Some(Inbound::Ping(b"12345".to_vec())))
        );
    }

    fn violation_code(input: &[u8], max: usize) -> u16 {
        decode_every_split(input, max).unwrap_err().close_code
    }

    #[test]
    fn violations_and_their_codes() {
        let mut unmasked = client_frame(true, TEXT, b"hi");
        unmasked[1] &= 0x7f;
        let mut cases: Vec<(&str, Vec<u8>, u16)> = vec![
            ("unmasked", unmasked, 1002),
            ("RSV1", raw_frame(0x80 | 0x40 | TEXT, b"x"), 1002),
            ("RSV2", raw_frame(0x80 | 0x20 | TEXT, b"x"), 1002),
            ("RSV3", raw_frame(0x80 | 0x10 | PING, b""), 1002),
            ("fragmented ping", client_frame(false, PING, b""), 1002),
            ("fragmented close", client_frame(false, CLOSE, b""), 1002),
            ("126-byte ping", client_frame(true, PING, &[0; 126]), 1002),
            ("126-byte pong", client_frame(true, PONG, &[0; 126]), 1002),
            ("126-byte close", client_frame(true, CLOSE, &[0; 126]), 1002),
            (
                "continuation first",
                client_frame(true, CONTINUATION, b"x"),
                1002,
            ),
            (
                "continuation after the end",
                [
                    client_frame(true, TEXT, b"a"),
                    client_frame(true, CONTINUATION, b"b"),
                ]
                .concat(),
                1002,
            ),
            (
                "text inside a message",
                [
                    client_frame(false, TEXT, b"a"),
                    client_frame(true, TEXT, b"b"),
                ]
                .concat(),
                1002,
            ),
            (
                "binary inside a message",
                [
                    client_frame(false, BINARY, b"a"),
                    client_frame(true, BINARY, b"b"),
                ]
                .concat(),
                1002,
            ),
            (
                "64-bit length with the top bit set",
                vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4],
                1002,
            ),
            ("1-byte close body", client_frame(true, CLOSE, &[3]), 1002),
            (
                "close reason not UTF-8",
                client_frame(true, CLOSE, &[0x03, 0xe8, b'o', 0xff]),
                1007,
            ),
            (
                "close reason cut inside a character",
                client_frame(true, CLOSE, &[0x03, 0xe8, 0xe2, 0x82]),
                1007,
            ),
            (
                "text not UTF-8",
                client_frame(true, TEXT, &[0xc3, 0x28]),
                1007,
            ),
            ("overlong", client_frame(true, TEXT, &[0xc0, 0x80]), 1007),
            (
                "surrogate",
                client_frame(true, TEXT, &[0xed, 0xa0, 0x80]),
                1007,
            ),
            (
                "past U+10FFFF",
                client_frame(true, TEXT, &[0xf4, 0x90, 0x80, 0x80]),
                1007,
            ),
            (
                "text ends inside a character",
                client_frame(true, TEXT, &[b'a', 0xe2, 0x82]),
                1007,
            ),
            (
                "one frame too big",
                client_frame(true, BINARY, &[0; 1025]),
                1009,
            ),
            (
                "fragments too big together",
                [
                    client_frame(false, TEXT, &[b'a'; 600]),
                    client_frame(false, CONTINUATION, &[b'a'; 400]),
                    client_frame(true, CONTINUATION, &[b'a'; 25]),
                ]
                .concat(),
                1009,
            ),
        ];
        for opcode in [3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
            cases.push(("unknown opcode", client_frame(true, opcode, b""), 1002));
        }
        for code in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            let frame = client_frame(true, CLOSE, &code.to_be_bytes());
            cases.push(("close code not for the wire", frame, 1002));
        }
        for (what, input, code) in cases {
            let got = decode_every_split(&input, 1024).unwrap_err();
            assert_eq!(got.close_code, code, "{what}: {}", got.reason);
        }
    }

    #[test]
    fn close_codes_for_the_wire_are_accepted() {
        for code in [
            1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4999,
        ] {
            let input = client_frame(true, CLOSE, &code.to_be_bytes());
            assert_eq!(
                decode_whole(&input, 1024).unwrap(),
                [close_event(Some(code), b"")],
                "{code}"
            );
        }
        assert_eq!(
            decode_whole(&client_frame(true, CLOSE, b""), 1024).unwrap(),
            [close_event(None, b"")]
        );
    }

    #[test]
    fn a_message_of_exactly_the_limit_is_accepted() {
        let input = [
            client_frame(false, BINARY, &[0; 1000]),
            client_frame(true, CONTINUATION, &[0; 24]),
        ]
        .concat();
        assert_eq!(decode_whole(&input, 1024).unwrap(), [Inbound::Message]);
        // The count starts again with the next message.
        let twice = [input.clone(), input].concat();
        assert_eq!(decode_whole(&twice, 1024).unwrap().len(), 2);
    }

    #[test]
    fn the_size_limit_is_decided_from_the_header() {
        // 16-bit length 4096: refused from 4 bytes, mask and payload unsent.
        let mut header = vec![0x82, 0xfe, 0x10, 0x00];
        let err = InboundDecoder::new(1024).decode(&mut header).unwrap_err();
        assert_eq!(err.close_code, 1009);
    }

    #[test]
    fn a_huge_claimed_length_is_refused_without_allocating() {
        // 2^62 bytes claimed: refused from the 10-byte header.
        let mut header = [0x82, 0xff, 0x40, 0, 0, 0, 0, 0, 0, 0];
        let err = InboundDecoder::new(64 * 1024)
            .decode(&mut header)
            .unwrap_err();
        assert_eq!(err.close_code, 1009);
        // With no limit at all, the biggest legal claim (2^63 - 1) is taken
        // piece by piece; reserving memory for it would abort the test.
        let mut decoder = InboundDecoder::new(usize::MAX);
        let mut frame = vec![0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        frame.extend_from_slice(&KEY);
        frame.extend_from_slice(&[0; 100]);
        assert_eq!(decoder.decode(&mut frame).unwrap(), (114, None));
        assert_eq!(decoder.decode(&mut [0; 100]).unwrap(), (100, None));
        // The same for text, whose payload is unmasked and validated.
        let mut decoder = InboundDecoder::new(usize::MAX);
        let mut frame = vec![0x81, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        frame.extend_from_slice(&[0; 4]);
        frame.extend_from_slice(b"abc");
        assert_eq!(decoder.decode(&mut frame).unwrap(), (17, None));
    }

    #[test]
    fn utf8_split_across_fragments() {
        // 1-, 2-, 3- and 4-byte characters, cut into three fragments at
        // every pair of places.
        let text = "aé€😀z".as_bytes();
        for i in 0..=text.len() {
            for j in i..=text.len() {
                let input = [
                    client_frame(false, TEXT, &text[..i]),
                    client_frame(false, CONTINUATION, &text[i..j]),
                    client_frame(true, CONTINUATION, &text[j..]),
                ]
                .concat();
                assert_eq!(
                    decode_every_split(&input, 1024).unwrap(),
                    [Inbound::Message],
                    "cut at {i}, {j}"
                );
            }
        }
        // A character cut by fragments and then broken.
        let input = [
            client_frame(false, TEXT, &[b'a', 0xe2]),
            client_frame(true, CONTINUATION, &[0x28, b'b']),
        ]
        .concat();
        assert_eq!(violation_code(&input, 1024), 1007);
        // The message ends inside a character that began fragments ago.
        let input = [
            client_frame(false, TEXT, &[b'a', 0xf0]),
            client_frame(false, CONTINUATION, &[0x9f]),
            client_frame(true, CONTINUATION, &[0x98]),
        ]
        .concat();
        assert_eq!(violation_code(&input, 1024), 1007);
        // Bad UTF-8 is refused at once, before the message ends.
        let mut first = client_frame(false, TEXT, &[b'a', 0xff]);
        assert_eq!(
            InboundDecoder::new(1024)
                .decode(&mut first)
                .unwrap_err()
                .close_code,
            1007
        );
    }

    #[test]
    fn binary_is_not_checked_for_utf8() {
        let input = client_frame(true, BINARY, &[0xff, 0xc0, 0x80]);
        assert_eq!(decode_whole(&input, 1024).unwrap(), [Inbound::Message]);
    }

    /// The validator agrees with `from_utf8` on the whole, however the
    /// bytes are cut into three pieces.
    #[test]
    fn utf8_validator_matches_std_at_every_cut() {
        let samples: &[&[u8]] = &[
            b"plain ascii",
            "aé€😀z".as_bytes(),
            "\u{7f}\u{80}\u{7ff}\u{800}\u{ffff}\u{10000}\u{10ffff}".as_bytes(),
            &[0xc2],
            &[0x80],
            &[0xc0, 0x80],
            &[0xe0, 0x80, 0x80],
            &[0xed, 0xa0, 0x80],
            &[0xed, 0x9f, 0xbf],
            &[0xf4, 0x8f, 0xbf, 0xbf],
            &[0xf4, 0x90, 0x80, 0x80],
            &[0xf5, 0x80, 0x80, 0x80],
            &[0xf0, 0x9f, 0x98],
            &[0xf0, 0x9f, 0x98, 0x80, 0x80],
            &[b'a', 0xe2, 0x82, 0xac, 0xe2, 0x82],
            &[0xe2, 0x82, 0xac, 0xc3],
            &[0xe2, 0x28, 0xa1],
            &[0xf0, 0x28, 0x8c, 0xbc],
            &[
                0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5,
            ],
        ];
        for sample in samples {
            let expected = std::str::from_utf8(sample).is_ok();
            for i in 0..=sample.len() {
                for j in i..=sample.len() {
                    let mut v = Utf8Validator::default();
                    let ok = v.feed(&sample[..i])
                        && v.feed(&sample[i..j])
                        && v.feed(&sample[j..])
                        && v.is_complete();
                    assert_eq!(ok, expected, "{sample:x?} cut at {i}, {j}");
                }
            }
        }
    }

    #[test]
    fn control_frames_roundtrip() {
        let mut out = Vec::new();
        encode_ping(b"abc", &mut out);
        assert_eq!(out, [0x89, 3, b'a', b'b', b'c']);
        assert_eq!(
            decode_every_split(&masked(&out), 1024).unwrap(),
            [Inbound::Ping(b"abc".to_vec())]
        );

        let full = [7u8; 125];
        out.clear();
        encode_pong(&full, &mut out);
        assert_eq!(
            decode_whole(&masked(&out), 1024).unwrap(),
            [Inbound::Pong(full.to_vec())]
        );
        // Longer payloads are cut to stay a valid control frame.
        out.clear();
        encode_ping(&[1; 200], &mut out);
        assert_eq!(out.len(), 2 + 125);
        assert_eq!(
            decode_whole(&masked(&out), 1024).unwrap(),
            [Inbound::Ping(vec![1; 125])]
        );

        out.clear();
        encode_close(1001, "going away", &mut out);
        assert_eq!(&out[..4], [0x88, 12, 0x03, 0xe9]);
        assert_eq!(
            decode_every_split(&masked(&out), 1024).unwrap(),
            [close_event(Some(1001), b"going away")]
        );
        // A long reason is cut at a character boundary: 61 two-byte
        // characters fit in the 123 bytes beside the code.
        let reason = "é".repeat(100);
        out.clear();
        encode_close(1000, &reason, &mut out);
        assert_eq!(out.len(), 2 + 2 + 122);
        assert_eq!(
            decode_whole(&masked(&out), 1024).unwrap(),
            [close_event(Some(1000), "é".repeat(61).as_bytes())]
        );
    }

    #[test]
    fn unmask_continues_the_key_cycle_at_any_offset() {
        let plain: Vec<u8> = (0..23).collect();
        let masked: Vec<u8> = plain
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ KEY[i % 4])
            .collect();
        for cut in 0..=plain.len() {
            let mut buf = masked.clone();
            let (a, b) = buf.split_at_mut(cut);
            unmask(a, KEY, 0);
            unmask(b, KEY, cut);
            assert_eq!(buf, plain, "{cut}");
        }
    }
}
