//! One client connection: its socket, its protocol state and its output queue.
//!
//! A connection owns no buffer while it idles: requests are read into the
//! worker's scratch buffer, and only the unparsed tail of a partial or
//! pipelined request is kept here. Output goes through the one [`OutQueue`] (`crate::out`).
//! The phase changes only through [`Conn::set_phase`], which keeps the
//! gauges of open polls, streams and WebSockets true. The protocol states
//! of the transports (`StreamState`, `WsState`) live with their transport.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use mio::net::TcpStream;

use crate::metrics::{self, Metrics};
use crate::out::{OutQueue, Part};
use crate::store::{Cursor, Message};
use crate::transport::ReplyTo;
use crate::transport::stream::StreamState;
use crate::transport::ws_session::WsState;

/// A long-poll waiting for mail.
pub struct Held {
    pub reply: ReplyTo,
    /// The first message announced while waiting (the worker answers at the
    /// end of the event batch, so several arrivals go out in one response).
    pub ready: Option<Arc<Message>>,
    /// More than `ready` arrived, or it did not follow the cursor: read the
    /// store when answering.
    pub ready_more: bool,
    /// A Bayeux `/meta/connect`: its replies go first in the answer, and
    /// the cursors go back to its session.
    pub bayeux: Option<Box<crate::endpoint::bayeux::Connect>>,
}

/// The protocol state. What moves each variant on is said beside it.
pub enum Phase {
    /// Reading a request head, or idle between keep-alive requests. Moved on
    /// by a complete head (to any other phase) or by the header/idle timeout.
    Head,
    /// Waiting for the store to answer an attach (a remote store's
    /// `Answer::Pending`); the last completion moves it to `Held`, `Stream`
    /// or `WebSocket` as the plan says.
    Attaching(Box<Attaching>),
    /// A Bayeux request whose replies wait for the store (cluster mode: a
    /// client publish being stored, a subscription's position being read),
    /// named by its serial in the worker's table of waiting batches. The
    /// last answer writes the replies (to `Head`) or carries on with the
    /// batch's `/meta/connect` (to `Attaching` or `Held`); the poll timeout
    /// answers 503.
    BayeuxWaiting(u64),
    /// A long-poll held until a message arrives or the poll timeout; both
    /// answer and move back to `Head` (or `Draining`).
    Held(Held),
    /// SSE, NDJSON or iframe stream. Moved on by its end (duration, bytes,
    /// token expiry, shutdown) to `Draining`.
    Stream(StreamState),
    /// After the 101. Moved on by a close handshake, a violation, its end or
    /// shutdown, to `Draining`. Inline, as a stream's state is: boxing it
    /// cost every idle WebSocket a 192-byte heap chunk.
    WebSocket(WsState),
    /// The last response is queued; close once it is written (or at the
    /// deadline).
    Draining,
}

impl Phase {
    /// The gauge that counts connections in this phase.
    fn gauge<'m>(&self, metrics: &'m Metrics) -> Option<&'m AtomicU64> {
        match self {
            Phase::Held(_) => Some(&metrics.polls_waiting),
            Phase::Stream(s) => Some(match s.kind {
                crate::transport::StreamKind::Sse => &metrics.streams_sse,
                crate::transport::StreamKind::Ndjson => &metrics.streams_ndjson,
                crate::transport::StreamKind::Iframe => &metrics.streams_iframe,
            }),
            Phase::WebSocket(_) => Some(&metrics.websockets_open),
            Phase::Head | Phase::Attaching(_) | Phase::BayeuxWaiting(_) | Phase::Draining => None,
        }
    }
}

/// A subscription plan whose attaches are not all answered yet.
pub struct Attaching {
    pub plan: crate::endpoint::Subscribe,
    /// One per mailbox of the plan, in its order; `None` until answered.
    pub results: smallvec::SmallVec<[Option<crate::store::AttachResult>; 1]>,
    /// The tickets still outstanding, with the index they answer.
    pub tickets: Vec<(crate::store::Ticket, usize)>,
}

pub struct Subscription {
    pub mailbox: Arc<str>,
    pub cursor: Cursor,
    /// Index in the worker's subscriber list of this mailbox, so detaching is
    /// O(1).
    pub slot: u32,
}

/// The mailboxes a connection follows, in the order the request named
/// them: none, one (kept inline: the common case costs no allocation), or
/// several (`/mailbox/a,b,c`, up to `mailbox.max-per-connection`).
#[derive(Default)]
pub struct Subs {
    first: Option<Subscription>,
    /// Boxed on purpose: 8 bytes in every connection (the slab holds tens of
    /// thousands), a vector only in the multiplexed ones.
    #[allow(clippy::box_collection)]
    rest: Option<Box<Vec<Subscription>>>,
}

impl Subs {
    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// More than one mailbox: messages name theirs, cursors are composite.
    pub fn is_multiplexed(&self) -> bool {
        self.rest.is_some()
    }

    pub fn push(&mut self, sub: Subscription) {
        if self.first.is_none() {
            self.first = Some(sub);
        } else {
            self.rest.get_or_insert_default().push(sub);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Subscription> {
        self.first
            .iter()
            .chain(self.rest.iter().flat_map(|r| r.iter()))
    }

    /// The subscription to `mailbox`. A connection on one mailbox's list
    /// follows only that one, so the common case compares nothing.
    pub fn get_mut(&mut self, mailbox: &str) -> Option<&mut Subscription> {
        if self.rest.is_none() {
            return self.first.as_mut();
        }
        self.first
            .iter_mut()
            .chain(self.rest.iter_mut().flat_map(|r| r.iter_mut()))
            .find(|s| &*s.mailbox == mailbox)
    }

    /// See [`Subs::get_mut`].
    pub fn get(&self, mailbox: &str) -> Option<&Subscription> {
        if self.rest.is_none() {
            return self.first.as_ref();
        }
        self.iter().find(|s| &*s.mailbox == mailbox)
    }

    /// Whether `mailbox` is among those followed (names compared, unlike
    /// [`Subs::get`]).
    pub fn follows(&self, mailbox: &str) -> bool {
        self.iter().any(|s| &*s.mailbox == mailbox)
    }

    pub fn take(&mut self) -> Subs {
        std::mem::take(self)
    }

    /// The subscriptions, in order, taken out (no vector for the one of
    /// an unmultiplexed connection).
    pub fn drain_all(self) -> impl Iterator<Item = Subscription> {
        self.first
            .into_iter()
            .chain(self.rest.into_iter().flat_map(|rest| *rest))
    }

    /// The cursor a client resumes with: the one mailbox's, or every
    /// mailbox's joined by `,` in the request's order (cursors contain no
    /// comma, so the join is unambiguous).
    pub fn write_cursor(&self, out: &mut Vec<u8>) {
        for (i, sub) in self.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            sub.cursor.write(out);
        }
    }
}

/// Unparsed bytes of a partial or pipelined request: none, and no chunk,
/// while idle. Boxed on purpose, as `Subs::rest` is: 8 bytes in every
/// connection instead of a `Vec`'s 24, a second chunk only while a request
/// is incomplete.
#[derive(Default)]
pub struct InBuf(#[allow(clippy::box_collection)] Option<Box<Vec<u8>>>);

impl InBuf {
    pub fn is_empty(&self) -> bool {
        self.0.is_none() // never holds an empty vector
    }

    /// The bytes, leaving none.
    pub fn take(&mut self) -> Vec<u8> {
        self.0.take().map_or_else(Vec::new, |buf| *buf)
    }

    /// Keeps `buf`, or nothing at all if it is empty.
    pub fn put(&mut self, buf: Vec<u8>) {
        self.0 = (!buf.is_empty()).then(|| Box::new(buf));
    }
}

/// Where a connection sits in the worker's timer wheel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerSlot {
    pub bucket: u32,
    pub index: u32,
}

impl TimerSlot {
    pub const NONE: TimerSlot = TimerSlot {
        bucket: u32::MAX,
        index: u32::MAX,
    };
}

pub struct Conn {
    pub sock: TcpStream,
    pub peer: IpAddr,
    phase: Phase,
    pub inbuf: InBuf,
    pub out: OutQueue,
    /// Next timed action, in ms on the worker clock. Changed only through
    /// the worker's timer wheel.
    pub deadline: u64,
    pub timer: TimerSlot,
    pub subs: Subs,
    /// The peer closed its side; finish what is in flight, then close.
    pub peer_closed: bool,
    /// Input was left unread or unparsed because a response was still
    /// queued ([`Conn::output_blocks_requests`]); read again once it is out.
    pub input_waits: bool,
    /// Marked for reaping at the end of the event batch.
    pub dead: bool,
}

impl Conn {
    pub fn new(sock: TcpStream, peer: IpAddr) -> Conn {
        Conn {
            sock,
            peer,
            phase: Phase::Head,
            inbuf: InBuf::default(),
            out: OutQueue::default(),
            deadline: u64::MAX,
            timer: TimerSlot::NONE,
            subs: Subs::default(),
            peer_closed: false,
            input_waits: false,
            dead: false,
        }
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    pub fn phase_mut(&mut self) -> &mut Phase {
        &mut self.phase
    }

    /// The one way to change phase: moves the gauges and returns the old
    /// phase, for the caller to take its state out of.
    pub fn set_phase(&mut self, phase: Phase, metrics: &Metrics) -> Phase {
        if let Some(gauge) = phase.gauge(metrics) {
            metrics::inc(gauge);
        }
        let old = std::mem::replace(&mut self.phase, phase);
        if let Some(gauge) = old.gauge(metrics) {
            metrics::dec(gauge);
        }
        old
    }

    /// Writes `parts` (queueing what the socket does not take) and adds
    /// their length to `bytes_out`, the worker's count.
    pub fn send(&mut self, bytes_out: &mut u64, parts: &[Part<'_>]) -> std::io::Result<()> {
        *bytes_out += parts.iter().map(|p| p.len() as u64).sum::<u64>();
        self.out.send(&mut self.sock, parts)
    }

    pub fn send_all(&mut self, bytes_out: &mut u64, parts: &[Part<'_>]) -> std::io::Result<()> {
        *bytes_out += parts.iter().map(|p| p.len() as u64).sum::<u64>();
        self.out.send_all(&mut self.sock, parts)
    }

    /// Between requests with output still queued: the next pipelined
    /// request waits until the socket has taken this response, so a client
    /// that pipelines and never reads costs one response, not one per
    /// request (lighttpd reads the next request only once the last is
    /// written, too).
    pub fn output_blocks_requests(&self) -> bool {
        matches!(self.phase, Phase::Head) && !self.out.is_empty()
    }
}

#[cfg(test)]
mod size {
    /// An idle connection's footprint in the worker's slab is a first-class
    /// number (docs/architecture.md); keep it from creeping up unnoticed.
    #[test]
    fn conn_stays_small() {
        let size = std::mem::size_of::<super::Conn>();
        println!("Conn is {size} bytes");
        // mio keeps the id of the poller a socket is registered with only in
        // debug builds (to catch registering with two): 16 bytes the release
        // build, whose footprint this guards, does not have.
        let limit = if cfg!(debug_assertions) {
            192 + 16
        } else {
            192
        };
        assert!(size <= limit, "Conn grew to {size} bytes");
    }
}
