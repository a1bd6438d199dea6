//! Timers: one deadline per connection (header timeout, keep-alive idle,
//! poll timeout, heartbeat, stream end, drain limit), kept in a wheel of
//! 250 ms buckets. Setting a deadline moves the connection between buckets
//! in O(1); a tick looks only at the buckets whose time has come, so idle
//! connections cost nothing per tick and nothing is allocated.

use slab::Slab;

use super::Worker;
use crate::conn::{Conn, Phase, TimerSlot};
use crate::http::{HttpError, Status};
use crate::metrics;
use crate::transport::{stream, ws_session};

/// The wheel's resolution, and how often the worker ticks.
pub const TICK_MS: u64 = 250;

/// 256 × 250 ms: deadlines up to 64 s ahead land in their own bucket;
/// later ones come round and are put back until their turn.
const BUCKETS: usize = 256;

pub struct TimerWheel {
    buckets: Vec<Vec<u32>>,
    /// The next tick (a multiple of TICK_MS on the worker clock) whose
    /// bucket has not been looked at.
    next_tick: u64,
    /// Keys found due by the last [`TimerWheel::expire`], kept for reuse.
    due: Vec<u32>,
}

impl Default for TimerWheel {
    fn default() -> TimerWheel {
        TimerWheel {
            buckets: (0..BUCKETS).map(|_| Vec::new()).collect(),
            next_tick: 0,
            due: Vec::new(),
        }
    }
}

impl TimerWheel {
    fn bucket_of(&self, deadline: u64) -> usize {
        // A deadline already behind the wheel's hand fires on the next tick.
        let tick = (deadline / TICK_MS).max(self.next_tick);
        (tick % BUCKETS as u64) as usize
    }

    /// The tick at which `bucket` is looked at next.
    fn next_look(&self, bucket: u32) -> u64 {
        let lap = BUCKETS as u64;
        self.next_tick + (bucket as u64 + lap - self.next_tick % lap) % lap
    }

    /// Sets `key`'s deadline (ms on the worker clock; `u64::MAX` = none).
    ///
    /// A deadline that moves later leaves the connection in its bucket:
    /// when that bucket's tick comes, [`TimerWheel::expire`] finds it not
    /// due and puts it where it now belongs. A long-poll moves its deadline
    /// at every exchange (the poll timeout, then the keep-alive, then the
    /// poll timeout again), and moving it in the wheel each time meant
    /// writing to another connection's memory (the one `swap_remove` moves)
    /// and to the old and new buckets.
    pub fn set(&mut self, conns: &mut Slab<Conn>, key: usize, deadline: u64) {
        let slot = conns[key].timer;
        if slot != TimerSlot::NONE
            && self.next_look(slot.bucket) <= (deadline / TICK_MS).max(self.next_tick)
        {
            conns[key].deadline = deadline;
            return;
        }
        self.unlink(conns, key);
        let conn = &mut conns[key];
        conn.deadline = deadline;
        if deadline == u64::MAX {
            return;
        }
        let bucket = self.bucket_of(deadline);
        let list = &mut self.buckets[bucket];
        conn.timer = TimerSlot {
            bucket: bucket as u32,
            index: list.len() as u32,
        };
        list.push(key as u32);
    }

    /// Takes `key` out of the wheel (before its slot is freed).
    pub fn unlink(&mut self, conns: &mut Slab<Conn>, key: usize) {
        let slot = std::mem::replace(&mut conns[key].timer, TimerSlot::NONE);
        if slot == TimerSlot::NONE {
            return;
        }
        let list = &mut self.buckets[slot.bucket as usize];
        let index = slot.index as usize;
        debug_assert_eq!(list[index], key as u32, "a connection knows its timer slot");
        list.swap_remove(index);
        if let Some(&moved) = list.get(index) {
            conns[moved as usize].timer.index = index as u32;
        }
    }

    /// The connections whose deadline is at or before `now`, unlinked.
    /// Those in a due bucket whose deadline is later go back in.
    pub fn expire(&mut self, conns: &mut Slab<Conn>, now: u64) -> Vec<u32> {
        let mut due = std::mem::take(&mut self.due);
        due.clear();
        let now_tick = now / TICK_MS;
        // After a long stall every bucket is due once, not once per lap.
        let first = self
            .next_tick
            .max(now_tick.saturating_sub(BUCKETS as u64 - 1));
        let mut later = Vec::new();
        for tick in first..=now_tick {
            let bucket = (tick % BUCKETS as u64) as usize;
            let mut list = std::mem::take(&mut self.buckets[bucket]);
            for &key in &list {
                let conn = &mut conns[key as usize];
                conn.timer = TimerSlot::NONE;
                if conn.deadline <= now {
                    due.push(key);
                } else {
                    later.push(key);
                }
            }
            list.clear();
            // Keep the bucket's allocation unless something was put in it
            // meanwhile (nothing was: no deadline is set while we sweep).
            self.buckets[bucket] = list;
        }
        self.next_tick = now_tick + 1;
        for key in later {
            let deadline = conns[key as usize].deadline;
            self.set(conns, key as usize, deadline);
        }
        due
    }

    /// Gives back the buffer [`TimerWheel::expire`] returned.
    pub fn recycle(&mut self, due: Vec<u32>) {
        self.due = due;
    }
}

impl Worker {
    pub(super) fn set_deadline(&mut self, key: usize, deadline: u64) {
        self.timers.set(&mut self.conns, key, deadline);
    }

    /// Now plus a configured duration, on the worker clock.
    pub(super) fn after(&self, d: std::time::Duration) -> u64 {
        self.now_ms.saturating_add(Self::ms(d))
    }

    pub(super) fn tick(&mut self) {
        self.next_tick = self.now_ms + TICK_MS;
        if std::mem::take(&mut self.accept_blocked) {
            self.accept_http();
        }
        self.date.refresh();
        self.shared.metrics.fold(&mut self.counts);
        let due = self.timers.expire(&mut self.conns, self.now_ms);
        for &key in &due {
            if self.conns.get(key as usize).is_some_and(|c| !c.dead) {
                self.on_deadline(key as usize);
            }
        }
        self.timers.recycle(due);
    }

    fn on_deadline(&mut self, key: usize) {
        let heartbeat = Self::ms(self.shared.config().mailbox.heartbeat);
        let now = self.now_ms;
        let conn = &mut self.conns[key];
        let mut next = u64::MAX;
        match conn.phase_mut() {
            Phase::Head => {
                if conn.inbuf.is_empty() {
                    metrics::inc(&self.shared.metrics.idle_keepalive_closed);
                    return self.kill(key);
                }
                metrics::inc(&self.shared.metrics.header_timeouts);
                let error = HttpError::new(Status::RequestTimeout, "request header timeout");
                return self.respond_error(
                    key,
                    error.closing(),
                    true,
                    false,
                    &crate::http::Cors::None,
                );
            }
            Phase::Attaching(_) | Phase::BayeuxWaiting(_) => {
                // The store did not answer in time: the client retries.
                let error = HttpError::new(
                    Status::ServiceUnavailable,
                    crate::http::error::STORE_TIMEOUT,
                );
                return self.respond_error(
                    key,
                    error.closing(),
                    true,
                    false,
                    &crate::http::Cors::None,
                );
            }
            Phase::Held(_) => return self.answer_timeout(key),
            Phase::Stream(stream) => {
                if stream.ends_at <= now {
                    return self.end_stream(key);
                }
                self.scratch.head.clear();
                let beat = stream::heartbeat(stream.kind);
                stream::chunk_into(&mut self.scratch.head, beat, stream.reply.http11);
                next = next.min(stream.ends_at);
            }
            Phase::WebSocket(ws) => {
                if ws.ends_at <= now {
                    return self.end_stream(key);
                }
                if ws.ping_outstanding {
                    debug!("{}: websocket peer did not answer our ping", conn.peer);
                    return self.kill(key);
                }
                self.scratch.head.clear();
                if let Some(session) = ws.bayeux_mut()
                    && let Some(reply) = session.pending_connect.take()
                {
                    // A held Bayeux connect is answered at the heartbeat.
                    let mut array = Vec::with_capacity(reply.len() + 2);
                    array.push(b'[');
                    array.extend_from_slice(&reply);
                    array.push(b']');
                    crate::endpoint::bayeux::reply::write_frame(&array, &mut self.scratch.head);
                }
                ws_session::write_ping(ws, &mut self.scratch.head);
                next = next.min(ws.ends_at);
            }
            Phase::Draining => return self.kill(key),
        }
        let result = conn.send(
            &mut self.counts.bytes_out,
            &[crate::out::Part::Copy(&self.scratch.head)],
        );
        if result.is_err() {
            return self.kill(key);
        }
        self.set_deadline(key, next.min(now + heartbeat));
        self.bayeux_ws_touch(key);
    }
}

use log::debug;

#[cfg(test)]
mod tests {
    use super::*;

    fn conns(n: usize) -> Slab<Conn> {
        // Real sockets are needed for Conn; a loopback pair per slot.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut slab = Slab::new();
        for _ in 0..n {
            let s = std::net::TcpStream::connect(addr).unwrap();
            let _peer = listener.accept().unwrap();
            slab.insert(Conn::new(mio::net::TcpStream::from_std(s), addr.ip()));
        }
        slab
    }

    #[test]
    fn deadlines_fire_once_at_their_tick_and_moves_cost_nothing_extra() {
        let mut slab = conns(4);
        let mut wheel = TimerWheel::default();
        wheel.set(&mut slab, 0, 100);
        wheel.set(&mut slab, 1, 600);
        wheel.set(&mut slab, 2, 70_000); // beyond one lap
        wheel.set(&mut slab, 3, 600);
        // Moving a deadline leaves no stale entry behind.
        for d in [900, 1_200, 600] {
            wheel.set(&mut slab, 3, d);
        }
        let entries: usize = wheel.buckets.iter().map(Vec::len).sum();
        assert_eq!(entries, 4);
        let due = wheel.expire(&mut slab, 250);
        assert_eq!(due, vec![0]);
        wheel.recycle(due);
        let mut due = wheel.expire(&mut slab, 600);
        due.sort();
        assert_eq!(due, vec![1, 3]);
        wheel.recycle(due);
        let due = wheel.expire(&mut slab, 64_500);
        assert!(due.is_empty(), "a lap later, still not due: {due:?}");
        wheel.recycle(due);
        let due = wheel.expire(&mut slab, 70_000);
        assert_eq!(due, vec![2]);
        assert!(wheel.buckets.iter().all(Vec::is_empty));
    }

    #[test]
    fn a_later_deadline_stays_put_until_its_bucket_comes_and_an_earlier_one_moves() {
        let mut slab = conns(2);
        let mut wheel = TimerWheel::default();
        wheel.set(&mut slab, 0, 30_000);
        let first = slab[0].timer;
        // Later: poll timeout, then keep-alive, then a later poll timeout.
        for d in [60_000, 31_000, 90_000] {
            wheel.set(&mut slab, 0, d);
            assert_eq!(slab[0].timer, first, "not moved for {d}");
        }
        let due = wheel.expire(&mut slab, 30_100);
        assert!(due.is_empty(), "not due at its old bucket: {due:?}");
        wheel.recycle(due);
        assert_ne!(slab[0].timer, TimerSlot::NONE, "put back");
        let due = wheel.expire(&mut slab, 89_900);
        assert!(due.is_empty(), "{due:?}");
        wheel.recycle(due);
        let due = wheel.expire(&mut slab, 90_000);
        assert_eq!(due, vec![0]);
        wheel.recycle(due);
        // Earlier: moved at once, and fires on time.
        wheel.set(&mut slab, 1, 50_000 + 90_000);
        wheel.set(&mut slab, 1, 91_000);
        let due = wheel.expire(&mut slab, 91_000);
        assert_eq!(due, vec![1]);
        assert!(wheel.buckets.iter().all(Vec::is_empty));
    }

    #[test]
    fn unlinking_keeps_the_other_slots_true() {
        let mut slab = conns(3);
        let mut wheel = TimerWheel::default();
        for key in 0..3 {
            wheel.set(&mut slab, key, 500);
        }
        wheel.unlink(&mut slab, 0);
        wheel.set(&mut slab, 1, u64::MAX);
        assert_eq!(slab[2].timer.index, 0);
        let due = wheel.expire(&mut slab, 1_000);
        assert_eq!(due, vec![2]);
    }
}
