//! The one output queue, used by browser and backend connections alike.
//!
//! Output is written at once; only what the socket would not take is queued.
//! Three kinds of bytes wait differently: bytes built for this connection
//! are copied, `'static` bytes (the embedded client script, literal framing)
//! and a message's shared encodings wait by reference, never copied per
//! connection. `pending_bytes` is what the caps of `conn` look at.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::sync::Arc;

/// A piece of output.
pub enum Part<'a> {
    /// Built for this response: copied if it must wait.
    Copy(&'a [u8]),
    /// Lives as long as the program: waits by reference.
    Static(&'static [u8]),
    /// A message's shared encoding: waits by reference count.
    Shared(&'a Arc<[u8]>),
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
            Part::Static(b) => b,
            Part::Shared(b) => b,
        }
    }
}

enum Chunk {
    Owned(Vec<u8>),
    Static(&'static [u8]),
    Shared(Arc<[u8]>),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(b) => b,
            Chunk::Static(b) => b,
            Chunk::Shared(b) => b,
        }
    }
}

/// Output that the socket has not taken yet. Empty (and unallocated) in the
/// common case where the kernel takes everything at once: one null pointer
/// in every connection (the slab holds tens of thousands), the queue itself
/// only in the few whose socket is full.
#[derive(Default)]
pub struct OutQueue {
    waiting: Option<Box<Waiting>>,
}

/// What a full socket left behind; never empty while it exists.
#[derive(Default)]
struct Waiting {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    offset: usize,
    /// Bytes waiting, for the caps.
    pending: usize,
}

/// How many slices one `writev` gathers; enough to coalesce a backlog of
/// small frames without a large stack array.
const MAX_IOV: usize = 64;

/// Most parts one [`OutQueue::send`] takes.
pub const MAX_PARTS: usize = MAX_IOV;

impl OutQueue {
    pub fn is_empty(&self) -> bool {
        self.waiting.is_none()
    }

    pub fn pending_bytes(&self) -> usize {
        self.waiting.as_ref().map_or(0, |w| w.pending)
    }

    /// Writes `parts` now if nothing is queued, and queues what the socket
    /// did not take (or everything, behind what is already queued). An error
    /// means the peer is gone.
    pub fn send<W: Write>(&mut self, sock: &mut W, parts: &[Part<'_>]) -> io::Result<()> {
        if self.waiting.is_none() {
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
            // Something is queued, so the last write met a full socket: the
            // kernel will report writability (edge-triggered), and that
            // flush takes these too. Trying now would cost a syscall per
            // message for every slow reader and write nothing.
            for part in parts {
                self.push(part, 0);
            }
            Ok(())
        }
    }

    /// Sends parts in groups of [`MAX_PARTS`]: one writev per group, and
    /// whatever the socket refuses is queued with the rest behind it.
    pub fn send_all<W: Write>(&mut self, sock: &mut W, parts: &[Part<'_>]) -> io::Result<()> {
        parts
            .chunks(MAX_PARTS)
            .try_for_each(|group| self.send(sock, group))
    }

    fn push(&mut self, part: &Part<'_>, skip: usize) {
        let len = part.bytes().len() - skip;
        if len == 0 {
            return;
        }
        let waiting = self.waiting.get_or_insert_default();
        let chunk = match part {
            Part::Copy(b) => Chunk::Owned(b[skip..].to_vec()),
            Part::Static(b) => Chunk::Static(&b[skip..]),
            Part::Shared(b) => {
                if waiting.chunks.is_empty() {
                    waiting.offset = skip;
                } else {
                    debug_assert_eq!(skip, 0, "only the front chunk can be partly written");
                }
                Chunk::Shared(Arc::clone(b))
            }
        };
        waiting.pending += len;
        waiting.chunks.push_back(chunk);
    }

    /// Writes as much of the queue as the socket takes. Ok(true) when empty.
    pub fn flush<W: Write>(&mut self, sock: &mut W) -> io::Result<bool> {
        let Some(waiting) = self.waiting.as_mut() else {
            return Ok(true);
        };
        while !waiting.chunks.is_empty() {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            for (i, chunk) in waiting.chunks.iter().take(MAX_IOV).enumerate() {
                let bytes = chunk.bytes();
                iov[i] = IoSlice::new(if i == 0 {
                    &bytes[waiting.offset..]
                } else {
                    bytes
                });
                n += 1;
            }
            let mut written = match write_slices(sock, &iov[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(w) => w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            waiting.pending -= written;
            while written > 0 {
                let front_left = waiting.chunks[0].bytes().len() - waiting.offset;
                if written >= front_left {
                    written -= front_left;
                    waiting.chunks.pop_front();
                    waiting.offset = 0;
                } else {
                    waiting.offset += written;
                    written = 0;
                }
            }
        }
        // Give the queue back: an idle connection holds no allocation.
        self.waiting = None;
        Ok(true)
    }
}

/// Up to this many bytes in several slices are copied into one buffer and
/// written as one slice (see [`write_slices`]): a long-poll's head and
/// body, a frame and its prefix. Copying a few hundred bytes costs less
/// than the kernel's gather path; above this, `writev` gathers without a
/// copy.
const COALESCE_MAX: usize = 2048;

/// One write of `iov`. A single slice goes out with `write`, which on a
/// TCP socket is `send(2)`: `writev(2)` first passes the file layer
/// (position lock, permission hooks, the iovec import), measurably more
/// per call when a fan-out writes one small frame to each of thousands of
/// sockets (docs/BENCHMARKS.md). A few small slices are copied together
/// for the same reason.
fn write_slices<W: Write>(sock: &mut W, iov: &[IoSlice<'_>]) -> io::Result<usize> {
    match iov {
        [one] => sock.write(one),
        _ => {
            let total: usize = iov.iter().map(|s| s.len()).sum();
            if total > COALESCE_MAX {
                return sock.write_vectored(iov);
            }
            let mut buf = [0u8; COALESCE_MAX];
            let mut len = 0;
            for s in iov {
                buf[len..len + s.len()].copy_from_slice(s);
                len += s.len();
            }
            sock.write(&buf[..len])
        }
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
        match write_slices(sock, &rest[..n]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(w) => done += w,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A socket that takes `budget` bytes, then says WouldBlock.
    pub(crate) struct FakeSock {
        pub taken: Vec<u8>,
        pub budget: usize,
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

    #[test]
    fn partial_writes_resume_in_order_at_every_budget() {
        let shared: Arc<[u8]> = Arc::from(&b"{\"id\":\"1\",\"data\":\"hello world\"}"[..]);
        let expected: Vec<u8> =
            [b"head:".as_slice(), &shared, b"tail", b"static", b"more"].concat();
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
                    Part::Shared(&shared),
                    Part::Copy(b"tail"),
                    Part::Static(b"static"),
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
        let shared: Arc<[u8]> = Arc::from(&b"x"[..]);
        let mut sock = FakeSock {
            taken: Vec::new(),
            budget: usize::MAX,
        };
        let mut q = OutQueue::default();
        q.send(&mut sock, &[Part::Copy(b"a"), Part::Shared(&shared)])
            .unwrap();
        assert!(q.is_empty());
        assert!(q.waiting.is_none());
    }

    #[test]
    fn static_and_shared_bytes_wait_by_reference() {
        static BODY: [u8; 8192] = [b'j'; 8192];
        let shared: Arc<[u8]> = Arc::from(vec![b's'; 4096]);
        let mut sock = FakeSock {
            taken: Vec::new(),
            budget: 0,
        };
        let mut q = OutQueue::default();
        for _ in 0..100 {
            q.send(&mut sock, &[Part::Static(&BODY), Part::Shared(&shared)])
                .unwrap();
        }
        assert_eq!(q.pending_bytes(), 100 * (8192 + 4096));
        assert_eq!(Arc::strong_count(&shared), 101);
        let waiting = q.waiting.as_ref().expect("queued");
        assert!(waiting.chunks.iter().all(|c| !matches!(c, Chunk::Owned(_))));
    }

    /// Counts plain and gathering writes; takes everything.
    #[derive(Default)]
    struct CountingSock {
        taken: Vec<u8>,
        writes: usize,
        gathers: usize,
    }

    impl Write for CountingSock {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.writes += 1;
            self.taken.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.gathers += 1;
            bufs.iter().for_each(|b| self.taken.extend_from_slice(b));
            Ok(bufs.iter().map(|b| b.len()).sum())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn small_output_is_one_plain_write_and_large_output_is_gathered() {
        let small: Arc<[u8]> = Arc::from(&b"{\"data\":1}"[..]);
        let large: Arc<[u8]> = Arc::from(vec![b'x'; COALESCE_MAX + 1]);
        for (body, writes, gathers) in [(&small, 1, 0), (&large, 0, 1)] {
            let mut sock = CountingSock::default();
            let parts = [
                Part::Copy(b"HTTP/1.1 200 OK\r\n\r\n"),
                Part::Shared(body),
                Part::Static(b"\n"),
            ];
            OutQueue::default().send(&mut sock, &parts).unwrap();
            let expected: Vec<u8> = parts.iter().flat_map(|p| p.bytes().to_vec()).collect();
            assert_eq!(sock.taken, expected);
            assert_eq!(
                (sock.writes, sock.gathers),
                (writes, gathers),
                "{} bytes",
                body.len()
            );
        }
        // One slice alone: a plain write whatever its size.
        let mut sock = CountingSock::default();
        OutQueue::default()
            .send(&mut sock, &[Part::Shared(&large)])
            .unwrap();
        assert_eq!((sock.writes, sock.gathers), (1, 0));
    }
}
