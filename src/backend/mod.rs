//! The backend side: app servers connect to a Unix socket and speak the Redis
//! protocol, so their existing Redis client can `PUBLISH mailbox payload`.
//!
//! `resp` is the codec and `commands` the command table, both free of
//! sockets; this module owns a backend connection's buffers and binds the
//! commands to the mailbox store through [`WorkerHub`].

pub mod commands;
pub mod resp;

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Instant;

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

use crate::config::MailboxConfig;
use crate::mailbox::{Message, StoreError};
use crate::metrics;
use crate::reactor::Shared;
use commands::{After, Hub, HubError, Session};
use resp::{Decoded, Decoder, Limits};

/// Read size per syscall for backend sockets: pipelined publishes arrive in
/// bulk, so read big.
const READ_CHUNK: usize = 64 * 1024;

/// A backend's socket: the Unix socket, or the optional TCP listener
/// (`mailbox.backend-port`).
pub enum BackendStream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Read for BackendStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            BackendStream::Unix(s) => s.read(buf),
            BackendStream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for BackendStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            BackendStream::Unix(s) => s.write(buf),
            BackendStream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for BackendStream {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            BackendStream::Unix(s) => s.register(registry, token, interests),
            BackendStream::Tcp(s) => s.register(registry, token, interests),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            BackendStream::Unix(s) => s.reregister(registry, token, interests),
            BackendStream::Tcp(s) => s.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            BackendStream::Unix(s) => s.deregister(registry),
            BackendStream::Tcp(s) => s.deregister(registry),
        }
    }
}

pub struct BackendConn {
    pub sock: BackendStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    decoder: Decoder,
    session: Session,
    /// QUIT, a protocol error or shutdown: close once replies are written.
    pub closing: bool,
    pub dead: bool,
    /// Replies are piling up unread: stop reading commands until they drain.
    pub paused: bool,
}

impl BackendConn {
    pub fn new(sock: BackendStream, id: u64, config: &MailboxConfig) -> BackendConn {
        BackendConn {
            sock,
            inbuf: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            decoder: Decoder::new(Limits {
                max_bulk: config.max_message_size,
            }),
            session: Session::new(id, config.backend_password.is_some()),
            closing: false,
            dead: false,
            paused: false,
        }
    }

    pub fn out_len(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Reads up to `budget` bytes. Returns (peer closed, budget ran out).
    pub fn read_some(&mut self, budget: usize) -> (bool, bool) {
        let mut read = 0;
        loop {
            if read >= budget {
                return (false, true);
            }
            let start = self.inbuf.len();
            self.inbuf.resize(start + READ_CHUNK, 0);
            match self.sock.read(&mut self.inbuf[start..]) {
                Ok(0) => {
                    self.inbuf.truncate(start);
                    return (true, false);
                }
                Ok(n) => {
                    self.inbuf.truncate(start + n);
                    read += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.inbuf.truncate(start);
                    return (false, false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => self.inbuf.truncate(start),
                Err(_) => {
                    self.inbuf.truncate(start);
                    return (true, false);
                }
            }
        }
    }

    /// Runs every whole command in the input buffer.
    pub fn execute_buffered(&mut self, hub: &mut WorkerHub<'_>) {
        let mut pos = 0;
        while !self.closing && pos < self.inbuf.len() {
            match self.decoder.decode(&self.inbuf[pos..]) {
                Ok(Decoded::NeedMore { consumed }) => {
                    pos += consumed;
                    break;
                }
                Ok(Decoded::Command { args, consumed }) => {
                    pos += consumed;
                    if commands::execute(&mut self.session, args, hub, &mut self.out)
                        == After::Close
                    {
                        self.closing = true;
                    }
                }
                Ok(Decoded::TooLarge {
                    name,
                    len,
                    consumed,
                }) => {
                    pos += consumed;
                    let _ = (name, len);
                    resp::error(
                        &mut self.out,
                        &format!(
                            "ERR {}",
                            StoreError::TooLarge {
                                limit: hub.max_message_size()
                            }
                        ),
                    );
                }
                Err(e) => {
                    hub.protocol_error();
                    if e.is_cross_protocol() {
                        log::warn!(
                            "backend socket received HTTP or other foreign traffic; closing that connection"
                        );
                    } else {
                        resp::error(&mut self.out, &format!("ERR Protocol error: {e}"));
                    }
                    self.closing = true;
                    pos = self.inbuf.len();
                }
            }
        }
        self.inbuf.drain(..pos);
        if self.inbuf.is_empty() && self.inbuf.capacity() > READ_CHUNK * 4 {
            self.inbuf = Vec::new(); // a burst passed: give the memory back
        }
    }

    /// Writes pending replies. Ok(true) when all are written.
    pub fn flush(&mut self) -> io::Result<bool> {
        while self.out_pos < self.out.len() {
            match self.sock.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        if self.out.capacity() > READ_CHUNK * 4 {
            self.out = Vec::new();
        }
        Ok(true)
    }
}

/// The commands' view of the gateway, from one worker's turn: publishes go
/// into the store and are announced, per worker, through `outbox`.
pub struct WorkerHub<'a> {
    pub shared: &'a Shared,
    pub outbox: &'a mut [Vec<Arc<Message>>],
    pub now: Instant,
}

impl WorkerHub<'_> {
    fn max_message_size(&self) -> usize {
        self.shared.config.mailbox.max_message_size
    }

    fn protocol_error(&self) {
        metrics::inc(&self.shared.metrics.backend_protocol_errors);
    }
}

impl Hub for WorkerHub<'_> {
    fn publish(&mut self, mailbox: &[u8], payload: Vec<u8>) -> Result<u64, HubError> {
        match self.shared.store.publish(mailbox, payload, self.now) {
            Ok(published) => {
                let mut mask = published.workers;
                while mask != 0 {
                    let worker = mask.trailing_zeros() as usize;
                    mask &= mask - 1;
                    self.outbox[worker].push(published.message.clone());
                }
                Ok(published.receivers)
            }
            Err(e @ StoreError::BadName) => Err(HubError::BadName(e.to_string())),
            Err(e @ StoreError::TooLarge { .. }) => Err(HubError::TooLarge(e.to_string())),
            Err(e) => Err(HubError::Full(e.to_string())),
        }
    }

    fn numsub(&mut self, mailbox: &[u8]) -> u64 {
        self.shared.store.subscriber_count(mailbox)
    }

    fn channels(&mut self) -> Vec<Vec<u8>> {
        // Keep everything: the caller filters with its pattern after the
        // store's shard locks are released.
        self.shared
            .store
            .active_names(|_| true)
            .iter()
            .map(|name| name.as_bytes().to_vec())
            .collect()
    }

    fn delete(&mut self, mailbox: &[u8]) -> bool {
        self.shared.store.delete(mailbox, self.now)
    }

    fn info(&mut self, section: Option<&str>, out: &mut String) {
        use std::fmt::Write;
        let shared = self.shared;
        let want = |name: &str| {
            section.is_none_or(|s| s.eq_ignore_ascii_case(name) || s == "all" || s == "everything")
        };
        if want("clients") || want("stats") {
            shared.metrics.write_info(out);
            out.push_str("\r\n");
        }
        if want("mailboxes") {
            let store = &shared.store;
            let stats = &store.stats;
            let limits = store.limits();
            let get =
                |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
            let _ = write!(
                out,
                "# Mailboxes\r\n\
                 mailboxes:{}\r\n\
                 retained_bytes:{}\r\n\
                 total_published:{}\r\n\
                                  rejected_publishes:{}\r\n\
                 rejected_too_large:{}\r\n\
                 rejected_mailbox_limit:{}\r\n\
                 rejected_subscriber_limit:{}\r\n\
                 rejected_out_of_memory:{}\r\n\
                 evicted_by_count:{}\r\n\
                 evicted_by_ttl:{}\r\n\
                 evicted_by_memory:{}\r\n\
                                  max_mailboxes:{}\r\n\
                 max_messages:{}\r\n\
                 max_memory:{}\r\n\
                 max_mailbox_bytes:{}\r\n\
                 max_subscribers:{}\r\n\
                 message_ttl:{}\r\n\
                 \r\n",
                store.mailbox_count(),
                store.retained_bytes(),
                get(&stats.published),
                get(&stats.rejected_publishes),
                get(&stats.rejected_too_large),
                get(&stats.rejected_mailbox_limit),
                get(&stats.rejected_subscriber_limit),
                get(&stats.rejected_out_of_memory),
                get(&stats.evicted_by_count),
                get(&stats.evicted_by_ttl),
                get(&stats.evicted_by_memory),
                limits.max_mailboxes,
                limits.max_messages,
                limits.max_memory,
                limits.max_mailbox_bytes,
                limits.max_subscribers,
                limits.message_ttl.as_secs(),
            );
        }
    }

    fn password(&self) -> Option<&str> {
        self.shared.config.mailbox.backend_password.as_deref()
    }

    fn uptime_secs(&self) -> Option<u64> {
        Some(self.shared.started.elapsed().as_secs())
    }
}
