//! A backend connection's replies, in the order of its commands, including
//! replies whose answer comes later (a PUBLISH the disk store answers after
//! its fsync, or a remote store's): such a reply holds its slot, the replies
//! to later commands wait behind it, and its completion (a ticket) fills it
//! and lets everything up to the next unanswered slot go out. Pure: bytes
//! in, bytes out; the socket is the connection's.

use std::collections::VecDeque;

use super::resp;
use crate::store::Ticket;

/// What a held reply costs against the connection's pending-reply cap, on
/// top of the bytes queued behind it: its slot, and the memory the
/// publish it waits for keeps alive meanwhile (counted by the store).
const HELD_COST: usize = 64;

#[derive(Default)]
pub struct Replies {
    /// Replies ready to write, and how much of them is written.
    out: Vec<u8>,
    pos: usize,
    /// Slots waiting for an answer, oldest first, each with the replies
    /// made after it.
    held: VecDeque<Held>,
    /// Bytes behind held slots plus `HELD_COST` per slot.
    held_bytes: usize,
}

struct Held {
    ticket: Ticket,
    answer: Option<Result<u64, String>>,
    behind: Vec<u8>,
}

impl Replies {
    /// Runs `write` on the buffer the next reply belongs in: the output,
    /// or behind the last held slot.
    pub fn write_with<R>(&mut self, write: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        match self.held.back_mut() {
            None => write(&mut self.out),
            Some(last) => {
                let before = last.behind.len();
                let r = write(&mut last.behind);
                self.held_bytes += last.behind.len() - before;
                r
            }
        }
    }

    /// The next reply waits for `ticket`.
    pub fn hold(&mut self, ticket: Ticket) {
        self.held.push_back(Held {
            ticket,
            answer: None,
            behind: Vec::new(),
        });
        self.held_bytes += HELD_COST;
    }

    /// Fills the slot of `ticket` (an error is the text after `-ERR `).
    /// False if this connection holds no such slot.
    pub fn complete(&mut self, ticket: Ticket, answer: Result<u64, String>) -> bool {
        let Some(slot) = self.held.iter_mut().find(|h| h.ticket == ticket) else {
            return false;
        };
        slot.answer = Some(answer);
        while self.held.front().is_some_and(|h| h.answer.is_some()) {
            let held = self.held.pop_front().expect("front checked above");
            match held.answer.expect("answer checked above") {
                Ok(n) => resp::integer(&mut self.out, i64::try_from(n).unwrap_or(i64::MAX)),
                Err(text) => resp::error(&mut self.out, &format!("ERR {text}")),
            }
            self.out.extend_from_slice(&held.behind);
            self.held_bytes -= HELD_COST + held.behind.len();
        }
        true
    }

    /// Replies not yet written, waiting ones included (the pause cap).
    pub fn pending(&self) -> usize {
        self.out.len() - self.pos + self.held_bytes
    }

    /// Some reply waits for a store's answer.
    pub fn waiting(&self) -> bool {
        !self.held.is_empty()
    }

    /// What can be written now.
    pub fn unwritten(&self) -> &[u8] {
        &self.out[self.pos..]
    }

    pub fn advance(&mut self, written: usize) {
        self.pos += written;
        if self.pos == self.out.len() {
            self.out.clear();
            self.pos = 0;
            if self.out.capacity() > super::READ_CHUNK * 4 {
                self.out = Vec::new(); // a burst passed: give the memory back
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(r: &Replies) -> String {
        String::from_utf8_lossy(r.unwritten()).into_owned()
    }

    #[test]
    fn a_held_reply_keeps_its_place_and_later_ones_wait_behind_it() {
        let mut r = Replies::default();
        r.write_with(|out| resp::simple(out, "PONG"));
        r.hold(Ticket(1));
        r.write_with(|out| resp::simple(out, "OK"));
        r.hold(Ticket(2));
        r.write_with(|out| resp::integer(out, 5));
        assert_eq!(text(&r), "+PONG\r\n");
        assert!(r.waiting());
        // The second answer first: still behind the first.
        assert!(r.complete(Ticket(2), Ok(3)));
        assert_eq!(text(&r), "+PONG\r\n");
        assert!(r.complete(Ticket(1), Err("disk store: full".into())));
        assert_eq!(
            text(&r),
            "+PONG\r\n-ERR disk store: full\r\n+OK\r\n:3\r\n:5\r\n"
        );
        assert!(!r.waiting());
        assert_eq!(r.pending(), r.unwritten().len());
        assert!(!r.complete(Ticket(1), Ok(0)), "answered once");
        let n = r.unwritten().len();
        r.advance(n);
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn held_slots_count_against_the_pause_cap() {
        let mut r = Replies::default();
        for i in 0..10 {
            r.hold(Ticket(i));
        }
        assert_eq!(r.pending(), 10 * HELD_COST);
        for i in 0..10 {
            r.complete(Ticket(i), Ok(1));
        }
        assert_eq!(r.pending(), 10 * ":1\r\n".len());
    }
}
