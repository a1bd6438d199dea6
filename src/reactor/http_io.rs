//! Browser connections' I/O: accepting on the shared listener, reading into
//! the worker's scratch, parsing requests while the connection may take
//! another, and the one place ([`Worker::after_io`]) that decides what
//! happens once output was written.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use log::{debug, warn};
use mio::Interest;
use mio::net::TcpStream;

use super::{READ_BUDGET, READ_CHUNK, Worker, http_token};
use crate::conn::{Conn, Phase};
use crate::http::chunked::Chunked;
use crate::http::{self, Cors, HttpError, Parsed, Status};
use crate::metrics;
use crate::shared::ToWorker;

/// How many more connections than the least loaded worker a worker takes
/// before it leaves the backlog to that one. The shared listener wakes one
/// worker per arrival (EPOLLEXCLUSIVE), and a woken worker would accept
/// until the backlog is empty: in a burst of arrivals (a deploy, a
/// reconnect storm, the bench's 10,000 subscriptions) the worker that
/// happens to be awake took nearly all of them, and a fan-out to them then
/// ran on one core while the others idled (docs/BENCHMARKS.md). 16 keeps
/// the workers within a few dozen connections of each other for the cost
/// of one hand-over per 16 accepts in a burst.
const ACCEPT_SLACK: usize = 16;

impl Worker {
    /// Accepts browsers until the backlog is empty, or until this worker
    /// holds [`ACCEPT_SLACK`] more connections than the least loaded one,
    /// which it then asks to go on (`ToWorker::Accept`). Each arrival wakes
    /// one waiting worker, so the connection is served by the thread that
    /// took it.
    pub(super) fn accept_http(&mut self) {
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            if let Some(lighter) = self.lighter_worker() {
                self.shared.peers[lighter].post(ToWorker::Accept);
                return;
            }
            let (mut sock, addr) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    // EMFILE/ENFILE: the connections wait in the kernel's
                    // backlog until descriptors free up. Said once an episode.
                    if !self.accept_blocked {
                        warn!("accept failed: {e}; retrying every tick until it works");
                    }
                    self.accept_blocked = true;
                    return;
                }
            };
            if super::admission::admit(&self.shared, &mut sock, addr) {
                self.adopt_http(sock, addr);
            }
            self.publish_connection_count();
        }
    }

    /// The least loaded other worker, if this one holds more than
    /// [`ACCEPT_SLACK`] connections beyond it. A worker shutting down has no
    /// listener and is never asked.
    fn lighter_worker(&self) -> Option<usize> {
        let mine = self.conns.len();
        let (worker, theirs) = self
            .shared
            .peers
            .iter()
            .enumerate()
            .filter(|&(w, _)| w != self.id)
            .map(|(w, peer)| (w, peer.connections.load(Ordering::Relaxed)))
            .min_by_key(|&(_, n)| n)?;
        (mine > theirs + ACCEPT_SLACK && !self.shared.stopping.load(Ordering::Relaxed))
            .then_some(worker)
    }

    /// Tells the other workers how many connections this one holds (after
    /// accepts and after reaping).
    pub(super) fn publish_connection_count(&self) {
        self.shared.peers[self.id]
            .connections
            .store(self.conns.len(), Ordering::Relaxed);
    }

    fn adopt_http(&mut self, mut sock: TcpStream, addr: SocketAddr) {
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut sock,
            http_token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("cannot register connection from {addr}: {e}");
            self.release_http_slot(addr.ip());
            return;
        }
        entry.insert(Conn::new(sock, addr.ip()));
        self.set_deadline(key, self.after(self.shared.config().server.header_timeout));
        if self.shutdown_deadline.is_some() {
            self.kill(key);
        }
    }

    pub(super) fn http_event(&mut self, key: usize, readable: bool, writable: bool) {
        let Some(conn) = self.conns.get_mut(key) else {
            return; // a stale event for a slot already reaped
        };
        if conn.dead {
            return;
        }
        if writable {
            if conn.out.flush(&mut conn.sock).is_err() {
                return self.kill(key);
            }
            self.after_io(key);
        }
        if readable && self.conns.get(key).is_some_and(|c| !c.dead) {
            self.http_read(key);
        }
    }

    /// What follows a write, decided in one place from the output queue:
    /// a draining connection closes once empty; an owed WebSocket pong goes
    /// out once nothing is ahead of it; requests that waited behind a
    /// response are read again.
    pub(super) fn after_io(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.dead || !conn.out.is_empty() {
            return;
        }
        let waits = conn.input_waits;
        match conn.phase_mut() {
            Phase::Draining => self.kill(key),
            Phase::WebSocket(ws) => {
                self.scratch.head.clear();
                if ws.take_pong(&mut self.scratch.head)
                    && conn
                        .send(
                            &mut self.counts.bytes_out,
                            &[crate::out::Part::Copy(&self.scratch.head)],
                        )
                        .is_err()
                {
                    self.kill(key);
                }
            }
            // Input waited behind the response just written (in our
            // buffer, or unread in the kernel's).
            Phase::Head if waits => {
                conn.input_waits = false;
                self.again.push(http_token(key));
            }
            Phase::Head
            | Phase::Attaching(_)
            | Phase::BayeuxWaiting(_)
            | Phase::Held(_)
            | Phase::Stream(_) => {}
        }
    }

    fn http_read(&mut self, key: usize) {
        if self.conns[key].output_blocks_requests() {
            // Not a byte more until the last response is written: after_io
            // brings us back. The kernel's buffers push back on the client.
            self.conns[key].input_waits = true;
            return;
        }
        if self.conns[key].inbuf.is_empty() {
            // The common case: a whole request (or nothing) in one read, into
            // the worker's scratch, zeroed once at start-up. A short read
            // means the socket is drained: new data brings a new event.
            let mut scratch = std::mem::take(&mut self.read_scratch);
            let conn = &mut self.conns[key];
            let read = loop {
                match conn.sock.read(&mut scratch) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    other => break other,
                }
            };
            let n = match read {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.read_scratch = scratch;
                    return;
                }
                Err(_) => 0,
            };
            self.counts.bytes_in += n as u64;
            if n == 0 {
                conn.peer_closed = true;
            }
            if n < scratch.len() {
                let consumed = self.consume_input(key, &mut scratch[..n]);
                self.keep_tail(key, &scratch[consumed..n]);
                self.read_scratch = scratch;
                return;
            }
            // The scratch filled up: more is waiting. Go on with a buffer of
            // the connection's own.
            self.keep_tail(key, &scratch[..]);
            self.read_scratch = scratch;
        }
        let conn = &mut self.conns[key];
        let mut buf = conn.inbuf.take();
        let cfg = &self.shared.config().server;
        let limit = cfg.max_request_header_size + cfg.max_request_body_size + READ_CHUNK;
        let mut eof = false;
        let mut budget = READ_BUDGET;
        loop {
            if buf.len() >= limit || budget == 0 {
                // Stop draining: either parsing will refuse this (431/413),
                // or it is a WebSocket/pipelining burst we take in turns.
                self.again.push(http_token(key));
                break;
            }
            let start = buf.len();
            buf.resize(start + READ_CHUNK, 0);
            match conn.sock.read(&mut buf[start..]) {
                Ok(0) => {
                    buf.truncate(start);
                    eof = true;
                    break;
                }
                Ok(n) => {
                    buf.truncate(start + n);
                    budget = budget.saturating_sub(n);
                    self.counts.bytes_in += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    buf.truncate(start);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => buf.truncate(start),
                Err(_) => {
                    buf.truncate(start);
                    eof = true;
                    break;
                }
            }
        }
        if eof {
            conn.peer_closed = true;
        }
        let consumed = self.consume_input(key, &mut buf);
        self.restore_input(key, buf, consumed);
    }

    /// Keeps the unparsed tail of the scratch in the connection's own buffer.
    fn keep_tail(&mut self, key: usize, tail: &[u8]) {
        let header_timeout = self.after(self.shared.config().server.header_timeout);
        if let Some(conn) = self.conns.get_mut(key)
            && !conn.dead
            && !tail.is_empty()
        {
            conn.inbuf.put(tail.to_vec());
            if matches!(conn.phase(), Phase::Head) && conn.out.is_empty() {
                // The first bytes of a request: the header timeout runs from here.
                self.set_deadline(key, header_timeout);
            }
        }
    }

    /// Acts on buffered input according to the phase; returns bytes used.
    pub(super) fn consume_input(&mut self, key: usize, buf: &mut [u8]) -> usize {
        if matches!(self.conns[key].phase(), Phase::Draining) {
            // The last response is on its way; whatever else comes is moot,
            // and keeping it would make us re-read a full buffer forever.
            return buf.len();
        }
        let mut pos = self.process_requests(key, buf);
        let Some(conn) = self.conns.get(key) else {
            return buf.len();
        };
        if conn.dead {
            return buf.len();
        }
        if matches!(conn.phase(), Phase::WebSocket(_)) {
            pos += self.websocket_input(key, &mut buf[pos..]);
        }
        let Some(conn) = self.conns.get_mut(key).filter(|c| !c.dead) else {
            return buf.len();
        };
        if conn.peer_closed {
            match conn.phase() {
                // Nobody is left to read a held response or a stream.
                Phase::Attaching(_)
                | Phase::BayeuxWaiting(_)
                | Phase::Held(_)
                | Phase::Stream(_)
                | Phase::WebSocket(_) => self.kill(key),
                // A response may still be on its way: finish it, then close.
                Phase::Head if !conn.out.is_empty() => {
                    conn.set_phase(Phase::Draining, &self.shared.metrics);
                    let drain = self.after(self.shared.config().server.shutdown_timeout);
                    self.set_deadline(key, drain);
                }
                Phase::Head => self.kill(key),
                Phase::Draining => {}
            }
        } else if buf.len() - pos > self.shared.config().server.max_request_header_size
            && !matches!(conn.phase(), Phase::Head | Phase::WebSocket(_))
        {
            // Pipelined bytes piling up behind a held response: abuse.
            self.kill(key);
        }
        pos
    }

    /// Puts the unparsed rest of the connection's own buffer back.
    pub(super) fn restore_input(&mut self, key: usize, mut buf: Vec<u8>, consumed: usize) {
        if let Some(conn) = self.conns.get_mut(key)
            && !conn.dead
        {
            buf.drain(..consumed);
            conn.inbuf.put(buf); // idle connections hold no buffer
        }
    }

    /// Parses and answers requests while the connection is between
    /// responses and the last one is written. Returns bytes used.
    fn process_requests(&mut self, key: usize, buf: &[u8]) -> usize {
        let mut pos = 0;
        let max_head = self.shared.config().server.max_request_header_size;
        let max_body = self.shared.config().server.max_request_body_size as u64;
        loop {
            let conn = &mut self.conns[key];
            if conn.dead || !matches!(conn.phase(), Phase::Head) || pos >= buf.len() {
                return pos;
            }
            if conn.output_blocks_requests() {
                conn.input_waits = true;
                return pos;
            }
            match http::parse_request(&buf[pos..], max_head) {
                Parsed::Partial => return pos,
                Parsed::Invalid(status, why) => {
                    metrics::inc(&self.shared.metrics.requests_rejected);
                    if status == Status::HeaderFieldsTooLarge {
                        metrics::inc(&self.shared.metrics.headers_too_large);
                    }
                    debug!("{}: bad request: {why}", conn.peer);
                    // We could not read the version; we speak HTTP/1.1
                    // (RFC 9112 2.3), and the stream is no longer trusted.
                    let error = HttpError::new(status, why).closing();
                    self.respond_error(key, error, true, false, &Cors::None);
                    return buf.len();
                }
                Parsed::Complete(req, head_len) if req.chunked => {
                    let body_start = pos + head_len;
                    match http::chunked::decode(&buf[body_start..], max_body as usize) {
                        Chunked::Partial => return pos, // the body is on its way
                        Chunked::Complete(body, used) => {
                            metrics::inc(&self.shared.metrics.requests_total);
                            self.handle_request(key, &req, &body);
                            pos = body_start + used;
                        }
                        Chunked::TooLarge => {
                            metrics::inc(&self.shared.metrics.requests_rejected);
                            metrics::inc(&self.shared.metrics.bodies_too_large);
                            let error =
                                HttpError::new(Status::PayloadTooLarge, "request body too large");
                            self.respond_error(key, error.closing(), true, false, &Cors::None);
                            return buf.len();
                        }
                        Chunked::Invalid(why) => {
                            metrics::inc(&self.shared.metrics.requests_rejected);
                            let error = HttpError::new(Status::BadRequest, why).closing();
                            self.respond_error(key, error, true, false, &Cors::None);
                            return buf.len();
                        }
                    }
                }
                Parsed::Complete(req, head_len) => {
                    if req.content_length > max_body {
                        metrics::inc(&self.shared.metrics.requests_rejected);
                        metrics::inc(&self.shared.metrics.bodies_too_large);
                        let error =
                            HttpError::new(Status::PayloadTooLarge, "request body too large");
                        self.respond_error(key, error.closing(), req.http11, false, &Cors::None);
                        return buf.len();
                    }
                    let total = head_len + req.content_length as usize;
                    if buf.len() - pos < total {
                        return pos; // the body is still on its way
                    }
                    metrics::inc(&self.shared.metrics.requests_total);
                    let body = &buf[pos + head_len..pos + total];
                    self.handle_request(key, &req, body);
                    pos += total;
                }
            }
        }
    }

    /// A pipelined request may have been waiting behind the one just answered.
    pub(super) fn resume_pipelined(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.dead || conn.inbuf.is_empty() || !matches!(conn.phase(), Phase::Head) {
            return;
        }
        let mut buf = conn.inbuf.take();
        let consumed = self.consume_input(key, &mut buf);
        self.restore_input(key, buf, consumed);
    }
}
