//! Client WebSocket frames: the decoder consumes any byte stream, in any
//! pieces, without panicking or claiming more than it was given.
#![no_main]

use cometbox::transport::websocket::InboundDecoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&piece, rest)) = data.split_first() else { return };
    let mut decoder = InboundDecoder::new(1024);
    let mut buf: Vec<u8> = Vec::new();
    for chunk in rest.chunks((piece as usize % 32) + 1) {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok((0, None)) => break,
                Ok((used, _)) => {
                    assert!(used <= buf.len());
                    buf.drain(..used);
                }
                Err(v) => {
                    assert!(matches!(v.close_code, 1002 | 1007 | 1009));
                    return;
                }
            }
        }
    }
});
