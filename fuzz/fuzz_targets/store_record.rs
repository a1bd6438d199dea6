//! The disk store's record decoder: nothing may panic; a record decoded
//! re-encodes to exactly the bytes it took; and a prefix of those bytes is
//! never taken for a record. Raw input rarely passes the checksum, so when
//! the first byte is odd the rest is framed with a valid length and
//! checksum first, to reach the field parsing.
#![no_main]

use cometbox::store::record::{Decoded, HEADER, decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let framed;
    let input = if mode & 1 == 1 && !rest.is_empty() {
        let mut f = Vec::with_capacity(HEADER + rest.len());
        f.extend_from_slice(&(rest.len() as u32).to_le_bytes());
        f.extend_from_slice(&crc32fast_hash(rest).to_le_bytes());
        f.extend_from_slice(rest);
        framed = f;
        &framed[..]
    } else {
        rest
    };
    let mut pos = 0;
    while let Ok(Decoded::Record(record, used)) = decode(&input[pos..]) {
        let mut again = Vec::new();
        encode(&record, &mut again);
        assert_eq!(again, &input[pos..pos + used], "{record:?}");
        for cut in 0..used {
            assert!(!matches!(decode(&input[pos..pos + cut]), Ok(Decoded::Record(..))));
        }
        pos += used;
    }
});

/// CRC-32 (IEEE), bit by bit: the fuzz crate need not depend on crc32fast.
fn crc32fast_hash(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}
