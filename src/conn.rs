//! One client connection: its socket, its protocol state and its output queue.
//!
//! A connection owns no buffer while it idles: requests are read into the
//! worker's scratch buffer, and only the unparsed tail of a partial or
//! pipelined request is kept here. Output is written at once; only what the
//! socket would not take is queued, and shared message bytes are queued by
//! reference (`Arc<Message>`), never copied per subscriber.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::net::IpAddr;
use std::sync::Arc;

use mio::net::TcpStream;

use crate::mailbox::{Cursor, Message};
use crate::transport::encode::Encoding;
use crate::transport::websocket::InboundDecoder;
use crate::transport::{Cors, StreamKind};

/// A piece of output: bytes to copy if they must wait, or a message's shared
/// encoding, which waits by reference.
pub enum Part<'a> {
    Copy(&'a [u8]),
    Shared(&'a Arc<Message>, Encoding),
}

impl Part<'_> {
    pub fn len(&self) -> usize {
        self.bytes().len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes().is_empty()
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Part::Copy(b) => b,
            Part::Shared(m, e) => m.encoded(*e),
        }
    }
}

enum Chunk {
    Owned(Vec<u8>),
    Shared(Arc<Message>, Encoding),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(b) => b,
            Chunk::Shared(m, e) => m.encoded(*e),
        }
    }
}

/// Output that the socket has not taken yet. Empty (and unallocated) in the
/// common case where the kernel takes everything at once.
#[derive(Default)]
pub struct OutQueue {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    offset: usize,
    /// Bytes waiting, for the slow-reader cap.
    pending: usize,
}

/// How many slices one `writev` gathers; enough to coalesce a backlog of
/// small frames without a large stack array.
const MAX_IOV: usize = 64;

/// Most parts one [`OutQueue::send`] takes.
pub const MAX_PARTS: usize = MAX_IOV;

impl OutQueue {
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    pub fn pending_bytes(&self) -> usize {
        self.pending
    }

    /// Writes `parts` now if nothing is queued, and queues what the socket
    /// did not take. An error means the peer is gone.
    pub fn send<W: Write>(&mut self, sock: &mut W, parts: &[Part<'_>]) -> io::Result<()> {
        if self.chunks.is_empty() {
            // Callers pass a handful of parts (head, prefix, shared body, suffix).
            assert!(parts.len() <= MAX_IOV, "too many parts for one write");
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            for (slot, part) in iov.iter_mut().zip(parts) {
                *slot = IoSlice::new(part.bytes());
            }
            let mut written = write_all_vectored(sock, &iov[..parts.len()])?;
            for part in parts {
                let bytes = part.bytes();
                if written >= bytes.len() {
                    written -= bytes.len();
                    continue;
                }
                self.push(part, written);
                written = 0;
            }
            Ok(())
        } else {
            for part in parts {
                self.push(part, 0);
            }
            self.flush(sock).map(|_| ())
        }
    }

    fn push(&mut self, part: &Part<'_>, skip: usize) {
        let len = part.bytes().len() - skip;
        if len == 0 {
            return;
        }
        let chunk = match part {
            Part::Copy(b) => Chunk::Owned(b[skip..].to_vec()),
            Part::Shared(m, e) => {
                if self.chunks.is_empty() {
                    self.offset = skip;
                } else {
                    debug_assert_eq!(skip, 0, "only the front chunk can be partly written");
                }
                Chunk::Shared(Arc::clone(m), *e)
            }
        };
        self.pending += len;
        self.chunks.push_back(chunk);
    }

    /// Writes as much of the queue as the socket takes. Ok(true) when empty.
    pub fn flush<W: Write>(&mut self, sock: &mut W) -> io::Result<bool> {
        while !self.chunks.is_empty() {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            for (i, chunk) in self.chunks.iter().take(MAX_IOV).enumerate() {
                let bytes = chunk.bytes();
                iov[i] = IoSlice::new(if i == 0 { &bytes[self.offset..] } else { bytes });
                n += 1;
            }
            let mut written = match sock.write_vectored(&iov[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(w) => w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.pending -= written;
            while written > 0 {
                let front_left = self.chunks[0].bytes().len() - self.offset;
                if written >= front_left {
                    written -= front_left;
                    self.chunks.pop_front();
                    self.offset = 0;
                } else {
                    self.offset += written;
                    written = 0;
                }
            }
        }
        // Give back the ring buffer: an idle connection holds no allocation.
        self.chunks = VecDeque::new();
        Ok(true)
    }
}

/// Writes slices until done or the socket would block; returns bytes written.
fn write_all_vectored<W: Write>(sock: &mut W, iov: &[IoSlice<'_>]) -> io::Result<usize> {
    let total: usize = iov.iter().map(|s| s.len()).sum();
    let mut done = 0;
    while done < total {
        // Rebuild the slice list past what was written (rare: the kernel
        // usually takes a whole small write).
        let mut skip = done;
        let mut rest = [IoSlice::new(&[]); MAX_IOV];
        let mut n = 0;
        for s in iov {
            if skip >= s.len() {
                skip -= s.len();
                continue;
            }
            if n == MAX_IOV {
                break;
            }
            rest[n] = IoSlice::new(&s[skip..]);
            skip = 0;
            n += 1;
        }
        match sock.write_vectored(&rest[..n]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(w) => done += w,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// What a response needs to remember of its request while it is held open.
pub struct ReplyTo {
    pub http11: bool,
    pub keep_alive: bool,
    pub cors: Cors,
    /// JSONP or iframe callback name, validated.
    pub callback: Option<Box<str>>,
}

pub struct StreamState {
    pub kind: StreamKind,
    pub reply: ReplyTo,
    /// Message bytes sent, for `mailbox.stream-max-bytes`.
    pub sent: u64,
    /// When the stream ends by itself (ms on the worker clock), if ever.
    pub ends_at: Option<u64>,
}

pub struct WsState {
    pub decoder: InboundDecoder,
    /// A ping of ours is unanswered; the next heartbeat without any frame
    /// from the peer closes the connection.
    pub ping_outstanding: bool,
    /// We sent a close frame and wait for the peer's.
    pub closing: bool,
    /// Message bytes sent, for `mailbox.stream-max-bytes`.
    pub sent: u64,
    /// When the connection ends by itself (stream-max-duration or the
    /// token's expiry), in ms on the worker clock.
    pub ends_at: Option<u64>,
}

/// The protocol state. What moves each variant on is said beside it.
pub enum Phase {
    /// Reading a request head, or idle between keep-alive requests. Moved on
    /// by a complete head (to any other phase) or by the header/idle timeout.
    Head,
    /// A long-poll held until a message arrives (the worker collects it in
    /// `ready` and answers at the end of the event batch) or the poll timeout.
    Held {
        reply: ReplyTo,
        ready: Option<Arc<Message>>,
        /// More than `ready` arrived, or it did not follow the cursor: read
        /// the store when answering.
        ready_more: bool,
    },
    /// SSE, NDJSON or iframe stream. Moved on by its end (duration, bytes,
    /// shutdown) to `Draining`.
    Stream(StreamState),
    /// After the 101. Moved on by a close handshake or a violation.
    WebSocket(Box<WsState>),
    /// The last response is queued; close once it is written.
    Draining,
}

pub struct Subscription {
    pub mailbox: Arc<str>,
    pub cursor: Cursor,
    /// Index in the worker's subscriber list of this mailbox, so detaching is
    /// O(1).
    pub slot: u32,
}

pub struct Conn {
    pub sock: TcpStream,
    pub peer: IpAddr,
    pub phase: Phase,
    /// Unparsed bytes of a partial or pipelined request; empty and
    /// unallocated while idle.
    pub inbuf: Vec<u8>,
    pub out: OutQueue,
    /// Next timed action, in ms on the worker clock.
    pub deadline: u64,
    pub sub: Option<Subscription>,
    /// The peer closed its side; finish what is in flight, then close.
    pub peer_closed: bool,
    /// Marked for reaping at the end of the event batch.
    pub dead: bool,
}

impl Conn {
    pub fn new(sock: TcpStream, peer: IpAddr, deadline: u64) -> Conn {
        Conn {
            sock,
            peer,
            phase: Phase::Head,
            inbuf: Vec::new(),
            out: OutQueue::default(),
            deadline,
            sub: None,
            peer_closed: false,
            dead: false,
        }
    }

    pub fn send(&mut self, parts: &[Part<'_>]) -> io::Result<()> {
        self.out.send(&mut self.sock, parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes `budget` bytes, then says WouldBlock.
    struct FakeSock {
        taken: Vec<u8>,
        budget: usize,
    }

    impl Write for FakeSock {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.budget);
            self.budget -= n;
            self.taken.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn message(payload: &[u8]) -> Arc<Message> {
        use crate::mailbox::{Store, StoreLimits};
        use std::time::{Duration, Instant};
        let store = Store::new(
            StoreLimits {
                max_messages: 10,
                message_ttl: Duration::from_secs(10),
                max_message_size: 1 << 20,
                max_mailboxes: 10,
                max_subscribers: 0,
                max_mailbox_bytes: 1 << 20,
                max_memory: 1 << 20,
            },
            1,
        );
        store
            .publish(b"box", payload.to_vec(), Instant::now())
            .unwrap()
            .message
    }

    #[test]
    fn partial_writes_resume_in_order_at_every_budget() {
        let m = message(b"hello world");
        let expected: Vec<u8> = [
            b"head:".as_slice(),
            m.encoded(Encoding::Json),
            b"tail",
            b"more",
        ]
        .concat();
        for budget in 0..expected.len() + 2 {
            let mut sock = FakeSock {
                taken: Vec::new(),
                budget,
            };
            let mut q = OutQueue::default();
            q.send(
                &mut sock,
                &[
                    Part::Copy(b"head:"),
                    Part::Shared(&m, Encoding::Json),
                    Part::Copy(b"tail"),
                ],
            )
            .unwrap();
            q.send(&mut sock, &[Part::Copy(b"more")]).unwrap();
            assert_eq!(q.pending_bytes() + sock.taken.len(), expected.len());
            // Drain in small steps.
            while !q.is_empty() {
                sock.budget = 3;
                q.flush(&mut sock).unwrap();
            }
            assert_eq!(sock.taken, expected, "budget {budget}");
            assert_eq!(q.pending_bytes(), 0);
        }
    }

    #[test]
    fn nothing_is_allocated_when_the_socket_takes_everything() {
        let m = message(b"x");
        let mut sock = FakeSock {
            taken: Vec::new(),
            budget: usize::MAX,
        };
        let mut q = OutQueue::default();
        q.send(
            &mut sock,
            &[Part::Copy(b"a"), Part::Shared(&m, Encoding::Sse)],
        )
        .unwrap();
        assert!(q.is_empty());
        assert_eq!(q.chunks.capacity(), 0);
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
        assert!(size <= 256, "Conn grew to {size} bytes");
    }
}
