//! RFC 6455 for the server side, sans-IO: the handshake key, server frames
//! (never masked, so one encoding serves every subscriber) and a decoder for
//! client frames that unmasks in place and validates as it goes.
//!
//! The gateway does not route client data yet, so data frames are consumed
//! piecemeal and dropped (after UTF-8 validation for text): the caller never
//! buffers a large frame. Control frames are small (≤ 125 bytes) and are
//! consumed whole.

use base64::Engine;
use sha1::{Digest, Sha1};

pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// RFC 6455 5.5: control frames carry at most 125 bytes.
const MAX_CONTROL_PAYLOAD: usize = 125;

pub fn accept_key(sec_websocket_key: &[u8]) -> String {
    let mut sha = Sha1::new();
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

pub fn encode_frame_header(opcode: Opcode, fin: bool, payload_len: usize, out: &mut Vec<u8>) {
    out.push(if fin { 0x80 } else { 0 } | opcode.bits());
    if payload_len < 126 {
        out.push(payload_len as u8);
    } else if payload_len <= u16::MAX as usize {
        out.push(126);
        out.extend_from_slice(&(payload_len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(payload_len as u64).to_be_bytes());
    }
}

pub fn encode_text_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    encode_frame_header(Opcode::Text, true, payload.len(), &mut out);
    out.extend_from_slice(payload);
    out
}

pub fn encode_close(code: u16, reason: &str, out: &mut Vec<u8>) {
    // Keep the reason within a control frame, cut at a char boundary.
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    encode_frame_header(Opcode::Close, true, 2 + end, out);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&reason.as_bytes()[..end]);
}

pub fn encode_ping(payload: &[u8], out: &mut Vec<u8>) {
    control(Opcode::Ping, payload, out);
}

pub fn encode_pong(payload: &[u8], out: &mut Vec<u8>) {
    control(Opcode::Pong, payload, out);
}

fn control(opcode: Opcode, payload: &[u8], out: &mut Vec<u8>) {
    let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
    encode_frame_header(opcode, true, payload.len(), out);
    out.extend_from_slice(payload);
}

#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    /// Answer with a pong carrying the same payload.
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// The peer started or answered the close handshake.
    Close {
        code: Option<u16>,
        reason: Vec<u8>,
    },
    /// A whole client data message arrived (and was dropped).
    Message,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Violation {
    pub close_code: u16,
    pub reason: &'static str,
}

const PROTOCOL_ERROR: u16 = 1002;
const INVALID_DATA: u16 = 1007;
const TOO_BIG: u16 = 1009;

fn violation(close_code: u16, reason: &'static str) -> Violation {
    Violation { close_code, reason }
}

/// Validates UTF-8 across pieces, carrying at most 3 bytes of a sequence
/// split between them.
#[derive(Default)]
struct Utf8Stream {
    carry: [u8; 4],
    carried: usize,
}

impl Utf8Stream {
    fn feed(&mut self, mut piece: &[u8]) -> bool {
        if self.carried > 0 {
            // Complete the carried sequence with up to 3 more bytes.
            let take = (4 - self.carried).min(piece.len());
            let mut joined = [0u8; 4];
            joined[..self.carried].copy_from_slice(&self.carry[..self.carried]);
            joined[self.carried..self.carried + take].copy_from_slice(&piece[..take]);
            let len = self.carried + take;
            match std::str::from_utf8(&joined[..len]) {
                Ok(_) => {
                    self.carried = 0;
                    piece = &piece[take..];
                }
                Err(e) if e.valid_up_to() > 0 => {
                    // The carried sequence completed within `joined`.
                    let used = e.valid_up_to() - self.carried;
                    self.carried = 0;
                    piece = &piece[used..];
                }
                Err(e) if e.error_len().is_none() && take == piece.len() => {
                    // Still incomplete and nothing more to add: keep carrying.
                    self.carry[..len].copy_from_slice(&joined[..len]);
                    self.carried = len;
                    return true;
                }
                Err(_) => return false,
            }
        }
        match std::str::from_utf8(piece) {
            Ok(_) => true,
            Err(e) if e.error_len().is_none() => {
                let rest = &piece[e.valid_up_to()..];
                self.carry[..rest.len()].copy_from_slice(rest);
                self.carried = rest.len();
                true
            }
            Err(_) => false,
        }
    }

    /// At the end of a message nothing may be left half-done.
    fn finish(&mut self) -> bool {
        let complete = self.carried == 0;
        self.carried = 0;
        complete
    }
}

/// A data frame whose payload is being consumed.
struct Payload {
    remaining: u64,
    mask: [u8; 4],
    mask_offset: usize,
    fin: bool,
}

pub struct InboundDecoder {
    max_message_size: usize,
    /// Inside a data frame's payload.
    payload: Option<Payload>,
    /// A fragmented (or current) data message: its kind, if text.
    message_is_text: Option<bool>,
    message_size: u64,
    utf8: Utf8Stream,
}

impl InboundDecoder {
    pub fn new(max_message_size: usize) -> Self {
        InboundDecoder {
            max_message_size,
            payload: None,
            message_is_text: None,
            message_size: 0,
            utf8: Utf8Stream::default(),
        }
    }

    /// Consumes a prefix of `buf` and returns how much plus at most one
    /// event. Ok((0, None)) means: more bytes needed.
    pub fn decode(&mut self, buf: &mut [u8]) -> Result<(usize, Option<Inbound>), Violation> {
        if self.payload.is_some() {
            return self.data_payload(buf);
        }
        // Frame header: 2 bytes, then 0/2/8 length bytes, then the mask.
        if buf.len() < 2 {
            return Ok((0, None));
        }
        let (b0, b1) = (buf[0], buf[1]);
        if b0 & 0x70 != 0 {
            return Err(violation(
                PROTOCOL_ERROR,
                "reserved bits set without an extension",
            ));
        }
        let fin = b0 & 0x80 != 0;
        let opcode =
            Opcode::from_bits(b0 & 0x0f).ok_or(violation(PROTOCOL_ERROR, "unknown opcode"))?;
        if b1 & 0x80 == 0 {
            return Err(violation(PROTOCOL_ERROR, "client frames must be masked"));
        }
        let (len, mut at) = match b1 & 0x7f {
            126 => {
                if buf.len() < 4 {
                    return Ok((0, None));
                }
                (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
            }
            127 => {
                if buf.len() < 10 {
                    return Ok((0, None));
                }
                let len = u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes"));
                if len >> 63 != 0 {
                    return Err(violation(
                        PROTOCOL_ERROR,
                        "frame length has the top bit set",
                    ));
                }
                (len, 10)
            }
            n => (n as u64, 2),
        };
        if opcode.is_control() {
            if !fin {
                return Err(violation(PROTOCOL_ERROR, "fragmented control frame"));
            }
            if len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(violation(PROTOCOL_ERROR, "control frame over 125 bytes"));
            }
        } else {
            match (opcode, self.message_is_text) {
                (Opcode::Continuation, None) => {
                    return Err(violation(PROTOCOL_ERROR, "continuation without a message"));
                }
                (Opcode::Text | Opcode::Binary, Some(_)) => {
                    return Err(violation(
                        PROTOCOL_ERROR,
                        "new message inside a fragmented one",
                    ));
                }
                _ => {}
            }
            if self.message_size + len > self.max_message_size as u64 {
                return Err(violation(TOO_BIG, "message too big"));
            }
        }
        if buf.len() < at + 4 {
            return Ok((0, None));
        }
        let mask: [u8; 4] = buf[at..at + 4].try_into().expect("4 bytes");
        at += 4;
        if opcode.is_control() {
            let len = len as usize;
            if buf.len() < at + len {
                return Ok((0, None));
            }
            let payload = &mut buf[at..at + len];
            unmask(payload, mask, 0);
            let event = control_event(opcode, payload)?;
            return Ok((at + len, Some(event)));
        }
        if opcode != Opcode::Continuation {
            self.message_is_text = Some(opcode == Opcode::Text);
            self.message_size = 0;
        }
        self.message_size += len;
        self.payload = Some(Payload {
            remaining: len,
            mask,
            mask_offset: 0,
            fin,
        });
        let (used, event) = self.data_payload(&mut buf[at..])?;
        Ok((at + used, event))
    }

    fn data_payload(&mut self, buf: &mut [u8]) -> Result<(usize, Option<Inbound>), Violation> {
        let payload = self.payload.as_mut().expect("inside a data frame");
        let take = (payload.remaining.min(buf.len() as u64)) as usize;
        let piece = &mut buf[..take];
        if self.message_is_text == Some(true) {
            unmask(piece, payload.mask, payload.mask_offset);
            if !self.utf8.feed(piece) {
                return Err(violation(INVALID_DATA, "text message is not UTF-8"));
            }
        }
        payload.mask_offset = (payload.mask_offset + take) % 4;
        payload.remaining -= take as u64;
        if payload.remaining > 0 {
            return Ok((take, None));
        }
        let fin = payload.fin;
        self.payload = None;
        if !fin {
            return Ok((take, None));
        }
        let text = self.message_is_text.take() == Some(true);
        if text && !self.utf8.finish() {
            return Err(violation(
                INVALID_DATA,
                "text message ends inside a UTF-8 sequence",
            ));
        }
        self.message_size = 0;
        Ok((take, Some(Inbound::Message)))
    }
}

fn unmask(payload: &mut [u8], mask: [u8; 4], offset: usize) {
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[(offset + i) % 4];
    }
}

fn control_event(opcode: Opcode, payload: &[u8]) -> Result<Inbound, Violation> {
    Ok(match opcode {
        Opcode::Ping => Inbound::Ping(payload.to_vec()),
        Opcode::Pong => Inbound::Pong(payload.to_vec()),
        Opcode::Close => match payload.len() {
            0 => Inbound::Close {
                code: None,
                reason: Vec::new(),
            },
            1 => {
                return Err(violation(
                    PROTOCOL_ERROR,
                    "close frame with a 1-byte payload",
                ));
            }
            _ => {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                // RFC 6455 7.4: codes a peer may send on the wire.
                let allowed = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
                if !allowed {
                    return Err(violation(
                        PROTOCOL_ERROR,
                        "close code not allowed on the wire",
                    ));
                }
                let reason = &payload[2..];
                if std::str::from_utf8(reason).is_err() {
                    return Err(violation(INVALID_DATA, "close reason is not UTF-8"));
                }
                Inbound::Close {
                    code: Some(code),
                    reason: reason.to_vec(),
                }
            }
        },
        _ => unreachable!("only control opcodes reach here"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
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

    /// Feeds `input` in pieces of the given sizes, collecting events.
    fn run(input: &[u8], split: usize, max: usize) -> Result<Vec<Inbound>, Violation> {
        let mut decoder = InboundDecoder::new(max);
        let mut events = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        for piece in input.chunks(split.max(1)) {
            pending.extend_from_slice(piece);
            loop {
                let (used, event) = decoder.decode(&mut pending)?;
                pending.drain(..used);
                if let Some(e) = event {
                    events.push(e);
                }
                if used == 0 {
                    break;
                }
            }
        }
        Ok(events)
    }

    #[test]
    fn accept_key_from_the_rfc() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert!(is_valid_client_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!is_valid_client_key(b"short"));
        assert!(!is_valid_client_key(b"!!!!"));
    }

    #[test]
    fn header_lengths() {
        for (len, header) in [(125usize, 2usize), (126, 4), (65535, 4), (65536, 10)] {
            let mut out = Vec::new();
            encode_frame_header(Opcode::Text, true, len, &mut out);
            assert_eq!(out.len(), header, "{len}");
            assert_eq!(out[0], 0x81);
        }
        let frame = encode_text_frame(b"hi");
        assert_eq!(frame, vec![0x81, 2, b'h', b'i']);
    }

    #[test]
    fn every_split_gives_the_same_events() {
        let mut input = client_frame(true, 0x9, b"ping!");
        input.extend(client_frame(false, 0x1, "héllo ".as_bytes()));
        input.extend(client_frame(true, 0x0, "wörld".as_bytes()));
        input.extend(client_frame(true, 0x2, &[0xff; 300]));
        input.extend(client_frame(true, 0xA, b""));
        input.extend(client_frame(true, 0x8, &[0x03, 0xe8, b'b', b'y', b'e']));
        let expected = vec![
            Inbound::Ping(b"ping!".to_vec()),
            Inbound::Message,
            Inbound::Message,
            Inbound::Pong(vec![]),
            Inbound::Close {
                code: Some(1000),
                reason: b"bye".to_vec(),
            },
        ];
        for split in 1..input.len() {
            assert_eq!(
                run(&input, split, 1 << 20).unwrap(),
                expected,
                "split {split}"
            );
        }
    }

    #[test]
    fn utf8_split_across_fragments() {
        let text = "a€b".as_bytes(); // € is 3 bytes
        for cut in 0..=text.len() {
            let mut input = client_frame(false, 0x1, &text[..cut]);
            input.extend(client_frame(true, 0x0, &text[cut..]));
            for split in 1..input.len() {
                assert_eq!(
                    run(&input, split, 1024).unwrap(),
                    vec![Inbound::Message],
                    "cut {cut}"
                );
            }
        }
        // Truncated sequence at the end of the message.
        let input = client_frame(true, 0x1, &[b'a', 0xe2, 0x82]);
        assert_eq!(run(&input, 1, 1024).unwrap_err().close_code, 1007);
        // Invalid byte in the middle.
        let mut input = client_frame(false, 0x1, &[b'a', 0xe2]);
        input.extend(client_frame(true, 0x0, &[0x28, b'b']));
        assert_eq!(run(&input, 3, 1024).unwrap_err().close_code, 1007);
    }

    #[test]
    fn violations_and_their_codes() {
        let unmasked = vec![0x81, 0x02, b'h', b'i'];
        let mut rsv = client_frame(true, 0x1, b"x");
        rsv[0] |= 0x40;
        let mut big_ping = client_frame(true, 0x9, &[0; 126]);
        big_ping.truncate(20);
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (unmasked, 1002),
            (rsv, 1002),
            (client_frame(true, 0x3, b""), 1002),
            (client_frame(false, 0x9, b""), 1002),
            (big_ping, 1002),
            (client_frame(true, 0x0, b"x"), 1002),
            (
                [
                    client_frame(false, 0x1, b"a"),
                    client_frame(true, 0x1, b"b"),
                ]
                .concat(),
                1002,
            ),
            (client_frame(true, 0x8, &[3]), 1002),
            (client_frame(true, 0x8, &1005u16.to_be_bytes()), 1002),
            (client_frame(true, 0x8, &999u16.to_be_bytes()), 1002),
            (client_frame(true, 0x8, &[0x03, 0xe8, 0xff]), 1007),
            (client_frame(true, 0x1, &[0xc3, 0x28]), 1007),
            (client_frame(true, 0x2, &[0; 2000]), 1009),
            (
                vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4],
                1002,
            ),
        ];
        for (input, code) in cases {
            let err = run(&input, input.len(), 1024).unwrap_err();
            assert_eq!(err.close_code, code, "{input:?}: {}", err.reason);
        }
    }

    #[test]
    fn huge_claimed_length_is_refused_from_the_header() {
        let header = [0x82u8, 0xff, 0, 0, 0, 1, 0, 0, 0, 0];
        let mut decoder = InboundDecoder::new(64 * 1024);
        let mut buf = header.to_vec();
        assert_eq!(decoder.decode(&mut buf).unwrap_err().close_code, 1009);
    }

    #[test]
    fn big_data_frames_are_consumed_piecemeal() {
        let input = client_frame(true, 0x2, &vec![7u8; 100_000]);
        let mut decoder = InboundDecoder::new(1 << 20);
        let mut consumed = 0;
        let mut events = Vec::new();
        for piece in input.chunks(4096) {
            let mut piece = piece.to_vec();
            let mut at = 0;
            // Headers may need more than one piece; data never does.
            loop {
                let (used, event) = decoder.decode(&mut piece[at..]).unwrap();
                at += used;
                events.extend(event);
                if used == 0 || at == piece.len() {
                    break;
                }
            }
            consumed += at;
        }
        assert_eq!(consumed, input.len());
        assert_eq!(events, vec![Inbound::Message]);
    }

    #[test]
    fn control_frames_roundtrip() {
        let mut out = Vec::new();
        encode_ping(b"abc", &mut out);
        assert_eq!(out, vec![0x89, 3, b'a', b'b', b'c']);
        out.clear();
        encode_pong(&[1; 200], &mut out);
        assert_eq!(out.len(), 2 + 125);
        out.clear();
        encode_close(1001, "going away", &mut out);
        assert_eq!(&out[..4], &[0x88, 12, 0x03, 0xe9]);
    }
}
