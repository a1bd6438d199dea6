//! The RESP decoder, differentially: the commands decoded from the whole
//! input must equal those decoded when it arrives in pieces (the first byte
//! picks the piece size), and nothing may panic.
#![no_main]

use cometbox::backend::resp::{Decoded, Decoder, Limits};
use libfuzzer_sys::fuzz_target;

fn decode_all(data: &[u8], piece: usize) -> Vec<Result<Decoded, String>> {
    let mut decoder = Decoder::new(Limits::new(64));
    let mut out = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    for chunk in data.chunks(piece.max(1)) {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&buf) {
                Ok(Decoded::NeedMore { consumed }) => {
                    buf.drain(..consumed);
                    break;
                }
                Ok(d @ (Decoded::Command { .. } | Decoded::TooLarge { .. })) => {
                    let consumed = match &d {
                        Decoded::Command { consumed, .. } | Decoded::TooLarge { consumed, .. } => *consumed,
                        Decoded::NeedMore { .. } => unreachable!(),
                    };
                    buf.drain(..consumed);
                    out.push(Ok(strip(d)));
                }
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }
    out
}

/// `consumed` differs by split; the commands must not.
fn strip(d: Decoded) -> Decoded {
    match d {
        Decoded::Command { args, .. } => Decoded::Command { args, consumed: 0 },
        Decoded::TooLarge { name, len, .. } => Decoded::TooLarge { name, len, consumed: 0 },
        other => other,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&piece, rest)) = data.split_first() else { return };
    let whole = decode_all(rest, rest.len().max(1));
    let pieces = decode_all(rest, (piece as usize % 16) + 1);
    assert_eq!(whole, pieces);
});
