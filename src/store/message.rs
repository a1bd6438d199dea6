//! A published message and the cursor that names a place in a mailbox.
//!
//! A message is immutable once built and shared (`Arc<Message>`) by every
//! subscriber on every worker and transport. Each transport's bytes are
//! built at most once, on first use, by `transport::encode`, and cached
//! here; the store counts those cached bytes against `mailbox.max-memory`
//! for as long as it retains the message.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// How many cached encodings a message has room for (one per
/// `transport::encode::Encoding`).
pub const ENCODING_SLOTS: usize = 9;

/// Width of the zero-padded sequence, so that ids of one mailbox also sort
/// as strings (clients may compare them).
const SEQ_WIDTH: usize = 10;

/// Where a client stands in a mailbox: the mailbox incarnation it read from
/// (store start time + generation) and the last sequence number it has seen.
/// On the wire it is the id of that message: `{store:x}.{generation:x}-{seq:010}`.
///
/// Generation 0 is the *unborn* incarnation: the position handed to a reader
/// of a mailbox that does not exist (reads create nothing). It stands before
/// seq 1 of whichever incarnation is born next in this store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub store: u64,
    pub generation: u64,
    pub seq: u64,
}

/// How a message stands to a subscriber's cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Follows {
    /// Already delivered (it was in the backlog, or announced twice).
    Seen,
    /// The very next one: deliver it.
    Next,
    /// Something lies between (announcements crossed, or another
    /// incarnation): read the store to catch up.
    Gap,
}

impl Cursor {
    pub const UNBORN_GENERATION: u64 = 0;

    /// The position of a reader of a mailbox that does not exist.
    pub fn unborn(store: u64) -> Cursor {
        Cursor {
            store,
            generation: Self::UNBORN_GENERATION,
            seq: 0,
        }
    }

    pub fn parse(text: &[u8]) -> Option<Cursor> {
        let text = std::str::from_utf8(text).ok()?;
        let (epoch, seq) = text.rsplit_once('-')?;
        let (store, generation) = epoch.split_once('.')?;
        let all_digits =
            |s: &str, radix: u32| !s.is_empty() && s.chars().all(|c| c.is_digit(radix));
        if !all_digits(store, 16) || !all_digits(generation, 16) || !all_digits(seq, 10) {
            return None;
        }
        Some(Cursor {
            store: u64::from_str_radix(store, 16).ok()?,
            generation: u64::from_str_radix(generation, 16).ok()?,
            seq: seq.parse().ok()?,
        })
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "{:x}.{:x}-{:0width$}",
            self.store,
            self.generation,
            self.seq,
            width = SEQ_WIDTH
        );
    }

    pub fn to_text(self) -> String {
        let mut out = Vec::with_capacity(32);
        self.write(&mut out);
        // Only ASCII digits and punctuation were written.
        String::from_utf8(out).expect("cursor text is ASCII")
    }

    /// Whether this cursor reads `incarnation` (a mailbox position or a
    /// message's cursor) from a known place: the same incarnation, or the
    /// unborn one of the same store, which stands before its seq 1.
    pub fn reads(&self, incarnation: &Cursor) -> bool {
        self.store == incarnation.store
            && (self.generation == incarnation.generation
                || (self.generation == Self::UNBORN_GENERATION && self.seq == 0))
    }

    /// The one place that decides what a delivered message means to a
    /// subscriber holding this cursor.
    pub fn follows(&self, message: &Cursor) -> Follows {
        if !self.reads(message) {
            return Follows::Gap;
        }
        if message.seq <= self.seq {
            Follows::Seen
        } else if message.seq == self.seq + 1 {
            Follows::Next
        } else {
            Follows::Gap
        }
    }
}

/// What a retained message's cached encodings have cost, shared with the
/// store's memory counter. `EVICTED` once the store let go of it: bytes
/// encoded after that belong to the readers still holding it, not the store.
struct Charge {
    encoded: AtomicUsize,
    memory: Arc<AtomicUsize>,
}

const EVICTED: usize = usize::MAX;

/// One published message. Immutable once built, shared by all subscribers.
pub struct Message {
    pub mailbox: Arc<str>,
    pub cursor: Cursor,
    pub id: Box<str>,
    pub payload: Box<[u8]>,
    pub published_at: Instant,
    encodings: [OnceLock<Arc<[u8]>>; ENCODING_SLOTS],
    charge: Charge,
}

impl Message {
    pub(crate) fn new(
        mailbox: Arc<str>,
        cursor: Cursor,
        payload: Box<[u8]>,
        now: Instant,
        memory: Arc<AtomicUsize>,
    ) -> Message {
        Message {
            mailbox,
            id: cursor.to_text().into_boxed_str(),
            cursor,
            payload,
            published_at: now,
            encodings: Default::default(),
            charge: Charge {
                encoded: AtomicUsize::new(0),
                memory,
            },
        }
    }

    pub fn seq(&self) -> u64 {
        self.cursor.seq
    }

    /// The cached bytes in `slot`, built by `build` on first use. Encoded
    /// bytes are charged to the store's memory while it retains the message.
    pub fn encoded_with(&self, slot: usize, build: impl FnOnce(&Message) -> Vec<u8>) -> &Arc<[u8]> {
        self.encodings[slot].get_or_init(|| {
            let bytes: Arc<[u8]> = build(self).into();
            self.charge_encoding(bytes.len());
            bytes
        })
    }

    fn charge_encoding(&self, len: usize) {
        // Count first, then record; if the store evicted the message in the
        // meantime, take the count back. The store's counter never dips
        // below what it will later subtract.
        self.charge.memory.fetch_add(len, Ordering::Relaxed);
        let recorded = self
            .charge
            .encoded
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n != EVICTED).then(|| n + len)
            });
        if recorded.is_err() {
            self.charge.memory.fetch_sub(len, Ordering::Relaxed);
        }
    }

    /// The store lets go of the message: returns the encoded bytes it had
    /// been charged for (the payload is the store's to subtract).
    pub(crate) fn release_encodings(&self) -> usize {
        match self.charge.encoded.swap(EVICTED, Ordering::AcqRel) {
            EVICTED => 0,
            n => n,
        }
    }
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("mailbox", &self.mailbox)
            .field("id", &self.id)
            .field("len", &self.payload.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_roundtrip_and_rejects_garbage() {
        let c = Cursor {
            store: 0x18a3f2b1c0d9e,
            generation: 0x1f,
            seq: 42,
        };
        let text = c.to_text();
        assert_eq!(text, "18a3f2b1c0d9e.1f-0000000042");
        assert_eq!(Cursor::parse(text.as_bytes()), Some(c));
        for bad in [
            "", "abc", "1-2", "x.1-2", "1.1-", "1.1-x", "1.1-2-", ".1-2", "1.-2", "1.1--2",
        ] {
            assert_eq!(Cursor::parse(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn an_unborn_cursor_reads_the_next_incarnation_from_its_start() {
        let unborn = Cursor::unborn(7);
        let first = Cursor {
            store: 7,
            generation: 3,
            seq: 1,
        };
        assert_eq!(unborn.follows(&first), Follows::Next);
        assert_eq!(unborn.follows(&Cursor { seq: 2, ..first }), Follows::Gap);
        // Another process's store: its mail is gone.
        assert_eq!(unborn.follows(&Cursor { store: 8, ..first }), Follows::Gap);
        let at = Cursor { seq: 4, ..first };
        assert_eq!(at.follows(&Cursor { seq: 4, ..first }), Follows::Seen);
        assert_eq!(at.follows(&Cursor { seq: 5, ..first }), Follows::Next);
        assert_eq!(
            at.follows(&Cursor {
                generation: 9,
                seq: 1,
                ..first
            }),
            Follows::Gap
        );
    }

    #[test]
    fn encodings_are_charged_while_retained_only() {
        let memory = Arc::new(AtomicUsize::new(0));
        let m = Message::new(
            "box".into(),
            Cursor::unborn(1),
            b"hi".to_vec().into(),
            Instant::now(),
            memory.clone(),
        );
        assert_eq!(&**m.encoded_with(0, |_| vec![1, 2, 3]), &[1, 2, 3]);
        m.encoded_with(0, |_| unreachable!("built once"));
        assert_eq!(memory.load(Ordering::Relaxed), 3);
        assert_eq!(m.release_encodings(), 3);
        m.encoded_with(1, |_| vec![0; 10]);
        assert_eq!(
            memory.load(Ordering::Relaxed),
            3,
            "not the store's after eviction"
        );
        assert_eq!(m.release_encodings(), 0);
    }
}
