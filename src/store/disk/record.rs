//! The records of the disk store's log, and their codec: bytes in, a record
//! or `NeedMore` or `Corrupt` out; records out into a buffer. No files here,
//! so the codec is tested at every split and every bit, and fuzzed.
//!
//! A record on disk: `len: u32 LE` (of what follows the checksum), `crc:
//! u32 LE` (CRC-32 of those bytes), then a kind byte and its fields. Integers
//! are little-endian u64; a mailbox name is a length byte and its bytes
//! (names are at most 200 bytes); a payload is the rest of the record.

use crate::store::{MAX_NAME_LEN, is_valid_name};

/// Length and checksum.
pub const HEADER: usize = 8;

/// Largest record: the largest `mailbox.max-message-size` (512 MiB) plus
/// the fields around it. A length beyond it is corruption, not a record.
pub const MAX_BODY: usize = 512 * 1024 * 1024 + 1024;

const PUBLISH: u8 = 1;
const DELETE: u8 = 2;
const STATE: u8 = 3;
const HEAD: u8 = 4;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// The first record of every log file: whose ids these are.
    Head { store: u64, next_generation: u64 },
    /// A stored message, with its id and its publish time (Unix ms).
    Publish {
        mailbox: &'a str,
        generation: u64,
        seq: u64,
        unix_ms: u64,
        payload: &'a [u8],
    },
    /// DEL: the mailbox starts again at `generation`, empty.
    Delete { mailbox: &'a str, generation: u64 },
    /// A mailbox's state: compaction writes one before its messages, and a
    /// start after a crash one per mailbox moved to a new generation.
    /// `prev_generation` 0 means none.
    State {
        mailbox: &'a str,
        generation: u64,
        last_seq: u64,
        prev_generation: u64,
        prev_last_seq: u64,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A record and the bytes it took.
    Record(Record<'a>, usize),
    /// The input ends inside a record.
    NeedMore,
}

/// Why the bytes at this point are not a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corrupt {
    Length(u32),
    Checksum,
    Kind(u8),
    Fields,
}

impl std::fmt::Display for Corrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Corrupt::Length(n) => write!(f, "impossible record length {n}"),
            Corrupt::Checksum => f.write_str("checksum mismatch"),
            Corrupt::Kind(k) => write!(f, "unknown record kind {k}"),
            Corrupt::Fields => f.write_str("malformed fields"),
        }
    }
}

pub fn decode(input: &[u8]) -> Result<Decoded<'_>, Corrupt> {
    if input.len() < HEADER {
        return Ok(Decoded::NeedMore);
    }
    let len = u32::from_le_bytes(input[0..4].try_into().expect("4 bytes"));
    if len == 0 || len as usize > MAX_BODY {
        return Err(Corrupt::Length(len));
    }
    let end = HEADER + len as usize;
    if input.len() < end {
        return Ok(Decoded::NeedMore);
    }
    let crc = u32::from_le_bytes(input[4..8].try_into().expect("4 bytes"));
    let body = &input[HEADER..end];
    if crc32fast::hash(body) != crc {
        return Err(Corrupt::Checksum);
    }
    let record = fields(body)?;
    Ok(Decoded::Record(record, end))
}

/// Reads fields off the front of a record's body.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn u64(&mut self) -> Result<u64, Corrupt> {
        let (head, rest) = self.0.split_at_checked(8).ok_or(Corrupt::Fields)?;
        self.0 = rest;
        Ok(u64::from_le_bytes(head.try_into().expect("8 bytes")))
    }

    fn name(&mut self) -> Result<&'a str, Corrupt> {
        let (&len, rest) = self.0.split_first().ok_or(Corrupt::Fields)?;
        let (name, rest) = rest.split_at_checked(len as usize).ok_or(Corrupt::Fields)?;
        self.0 = rest;
        if !is_valid_name(name) {
            return Err(Corrupt::Fields);
        }
        std::str::from_utf8(name).map_err(|_| Corrupt::Fields)
    }

    fn end(self) -> Result<(), Corrupt> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Corrupt::Fields)
        }
    }
}

fn fields(body: &[u8]) -> Result<Record<'_>, Corrupt> {
    let mut f = Fields(&body[1..]);
    let record = match body[0] {
        HEAD => Record::Head {
            store: f.u64()?,
            next_generation: f.u64()?,
        },
        PUBLISH => {
            let (generation, seq, unix_ms) = (f.u64()?, f.u64()?, f.u64()?);
            let mailbox = f.name()?;
            return Ok(Record::Publish {
                mailbox,
                generation,
                seq,
                unix_ms,
                payload: f.0,
            });
        }
        DELETE => {
            let generation = f.u64()?;
            Record::Delete {
                mailbox: f.name()?,
                generation,
            }
        }
        STATE => {
            let (generation, last_seq) = (f.u64()?, f.u64()?);
            let (prev_generation, prev_last_seq) = (f.u64()?, f.u64()?);
            Record::State {
                mailbox: f.name()?,
                generation,
                last_seq,
                prev_generation,
                prev_last_seq,
            }
        }
        kind => return Err(Corrupt::Kind(kind)),
    };
    f.end()?;
    Ok(record)
}

/// Appends `record` to `out`.
pub fn encode(record: &Record<'_>, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    let name = |out: &mut Vec<u8>, name: &str| {
        debug_assert!(name.len() <= MAX_NAME_LEN);
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
    };
    let put = |out: &mut Vec<u8>, n: u64| out.extend_from_slice(&n.to_le_bytes());
    match *record {
        Record::Head {
            store,
            next_generation,
        } => {
            out.push(HEAD);
            put(out, store);
            put(out, next_generation);
        }
        Record::Publish {
            mailbox,
            generation,
            seq,
            unix_ms,
            payload,
        } => {
            out.push(PUBLISH);
            put(out, generation);
            put(out, seq);
            put(out, unix_ms);
            name(out, mailbox);
            out.extend_from_slice(payload);
        }
        Record::Delete {
            mailbox,
            generation,
        } => {
            out.push(DELETE);
            put(out, generation);
            name(out, mailbox);
        }
        Record::State {
            mailbox,
            generation,
            last_seq,
            prev_generation,
            prev_last_seq,
        } => {
            out.push(STATE);
            put(out, generation);
            put(out, last_seq);
            put(out, prev_generation);
            put(out, prev_last_seq);
            name(out, mailbox);
        }
    }
    let body = &out[start + HEADER..];
    let (len, crc) = (body.len() as u32, crc32fast::hash(body));
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Record<'static>> {
        vec![
            Record::Head {
                store: 0x18a3f2b1c0d9e,
                next_generation: 12,
            },
            Record::Publish {
                mailbox: "user:alice@example.com",
                generation: 3,
                seq: 41,
                unix_ms: 1_764_620_000_123,
                payload: b"{\"n\":1}\r\n\0\xff",
            },
            Record::Publish {
                mailbox: "a",
                generation: 1,
                seq: 1,
                unix_ms: 0,
                payload: b"",
            },
            Record::Delete {
                mailbox: "box",
                generation: 9,
            },
            Record::State {
                mailbox: "box",
                generation: 10,
                last_seq: 7,
                prev_generation: 9,
                prev_last_seq: 7,
            },
        ]
    }

    fn encoded(records: &[Record<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            encode(r, &mut out);
        }
        out
    }

    /// Decodes everything, asking for more as a reader would.
    fn decode_all(input: &[u8]) -> Result<(Vec<Record<'_>>, usize), Corrupt> {
        let (mut records, mut pos) = (Vec::new(), 0);
        while let Decoded::Record(r, used) = decode(&input[pos..])? {
            records.push(r);
            pos += used;
        }
        Ok((records, pos))
    }

    #[test]
    fn records_round_trip() {
        let records = samples();
        let bytes = encoded(&records);
        let (back, used) = decode_all(&bytes).unwrap();
        assert_eq!(back, records);
        assert_eq!(used, bytes.len());
    }

    #[test]
    fn every_split_decodes_a_prefix_and_waits_for_the_rest() {
        let records = samples();
        let bytes = encoded(&records);
        for split in 0..=bytes.len() {
            let (first, used) = decode_all(&bytes[..split]).unwrap();
            assert_eq!(first, records[..first.len()], "split at {split}");
            let (rest, _) = decode_all(&bytes[used..]).unwrap();
            assert_eq!(first.len() + rest.len(), records.len(), "split at {split}");
        }
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        for record in samples() {
            let bytes = encoded(std::slice::from_ref(&record));
            for bit in 0..bytes.len() * 8 {
                let mut bad = bytes.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                match decode(&bad) {
                    // A flipped length bit can make the record look longer:
                    // then it waits for bytes that never come (a torn tail).
                    Ok(Decoded::NeedMore) => assert!(bit < 32, "bit {bit}"),
                    Ok(Decoded::Record(r, _)) => panic!("bit {bit} of {record:?} gave {r:?}"),
                    Err(_) => {}
                }
            }
        }
    }

    #[test]
    fn zeros_and_garbage_are_corrupt_not_records() {
        assert_eq!(decode(&[0; 64]), Err(Corrupt::Length(0)));
        assert_eq!(decode(&[0xff; 64]), Err(Corrupt::Length(u32::MAX)));
        let mut bytes = Vec::new();
        encode(
            &Record::Delete {
                mailbox: "box",
                generation: 1,
            },
            &mut bytes,
        );
        // A valid checksum over a bad name is still refused.
        let body_start = HEADER + 1 + 8 + 1;
        bytes[body_start] = b'/';
        let crc = crc32fast::hash(&bytes[HEADER..]);
        bytes[4..8].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&bytes), Err(Corrupt::Fields));
    }
}
