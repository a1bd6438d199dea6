//! The backend side: app servers connect to a Unix socket and speak the Redis
//! protocol, so their existing Redis client can `PUBLISH mailbox payload`.
//!
//! `resp` is the codec and `commands` the command table, both free of
//! sockets; this module owns a backend connection's buffers and binds the
//! commands to the mailbox store through [`WorkerHub`].

pub mod commands;
mod replies;
pub mod resp;

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Instant;

use crate::config::MailboxConfig;
use crate::metrics;
pub use crate::net::BackendStream;
use crate::shared::{Budget as CommandBudget, Shared};
use crate::store::{Answer, Message, StoreError, Ticket};
use commands::{After, Hub, HubError, Publish, Session};
use replies::Replies;
use resp::{Decoded, Decoder, Limits};

/// Read size per syscall for backend sockets: pipelined publishes arrive in
/// bulk, so read big.
const READ_CHUNK: usize = 64 * 1024;

/// Argument memory all backends' unfinished commands may hold together. Each
/// connection is capped at `max-message-size` + 1 MiB ([`Limits::new`]);
/// this bounds many of them at once: 128 maximal PUBLISHes arriving at the
/// same moment at the default message size.
pub const MAX_COMMANDS_TOTAL: usize = 256 * 1024 * 1024;

pub struct BackendConn {
    pub sock: BackendStream,
    inbuf: Vec<u8>,
    replies: Replies,
    decoder: Decoder,
    /// The gateway-wide argument budget, and this connection's share of it
    /// (what `decoder` held when last counted).
    budget: CommandBudget,
    charged: usize,
    session: Session,
    /// QUIT, a protocol error or shutdown: close once replies are written.
    pub closing: bool,
    pub dead: bool,
    /// Replies are piling up unread: stop reading commands until they drain.
    pub paused: bool,
}

impl BackendConn {
    /// A connection with a budget of its own: the per-connection cap holds,
    /// the gateway-wide one does not. The reactor should use
    /// [`BackendConn::with_budget`] with one [`CommandBudget`] for all.
    pub fn new(sock: BackendStream, id: u64, config: &MailboxConfig) -> BackendConn {
        BackendConn::with_budget(sock, id, config, CommandBudget::new(MAX_COMMANDS_TOTAL))
    }

    pub fn with_budget(
        sock: BackendStream,
        id: u64,
        config: &MailboxConfig,
        budget: CommandBudget,
    ) -> BackendConn {
        BackendConn {
            sock,
            inbuf: Vec::new(),
            replies: Replies::default(),
            decoder: Decoder::new(Limits::new(config.max_message_size)),
            budget,
            charged: 0,
            session: Session::new(id, config.backend_password.is_some()),
            closing: false,
            dead: false,
            paused: false,
        }
    }

    /// Replies not yet written, those waiting for a store included.
    pub fn out_len(&self) -> usize {
        self.replies.pending()
    }

    /// Fills the reply slot of a publish the store answered late. False if
    /// this connection was not waiting for `ticket`.
    pub fn complete(&mut self, ticket: Ticket, answer: Result<u64, StoreError>) -> bool {
        self.replies
            .complete(ticket, answer.map_err(|e| e.to_string()))
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
            let decoded = self.decoder.decode(&self.inbuf[pos..]);
            let decoded = match self.charge_budget() {
                Ok(()) => decoded,
                Err(e) => Err(e),
            };
            match decoded {
                Ok(Decoded::NeedMore { consumed }) => {
                    pos += consumed;
                    break;
                }
                Ok(Decoded::Command { args, consumed }) => {
                    pos += consumed;
                    let words: Vec<&[u8]> = args.iter().collect();
                    let session = &mut self.session;
                    let after = self
                        .replies
                        .write_with(|out| commands::execute(session, &words, hub, out));
                    match after {
                        After::Continue => {}
                        After::Close => self.closing = true,
                        After::Wait(ticket) => {
                            self.replies.hold(ticket);
                            hub.tickets.push(ticket);
                        }
                    }
                    self.decoder.recycle(args);
                }
                Ok(Decoded::TooLarge {
                    name,
                    len,
                    consumed,
                }) => {
                    pos += consumed;
                    let text = too_large_text(&name, len, hub.max_message_size());
                    self.replies.write_with(|out| resp::error(out, &text));
                }
                Err(e) => {
                    hub.protocol_error();
                    if e.is_cross_protocol() {
                        log::warn!(
                            "backend socket received HTTP or other foreign traffic; closing that connection"
                        );
                    } else {
                        let text = format!("ERR Protocol error: {e}");
                        self.replies.write_with(|out| resp::error(out, &text));
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

    /// Brings this connection's share of the gateway-wide budget up to what
    /// the decoder holds now.
    fn charge_budget(&mut self) -> Result<(), resp::ProtocolError> {
        let held = self.decoder.held();
        if held == self.charged {
            return Ok(());
        }
        if !self.budget.update(self.charged, held) {
            return Err(resp::ProtocolError::Malformed(
                format!(
                    "too big multibulk request: backends' unfinished commands would hold over {} bytes",
                    self.budget.limit()
                )
                .into(),
            ));
        }
        self.charged = held;
        Ok(())
    }

    /// Writes the replies that are ready. Ok(true) when all are written
    /// and none waits for a store.
    pub fn flush(&mut self) -> io::Result<bool> {
        while !self.replies.unwritten().is_empty() {
            match self.sock.write(self.replies.unwritten()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.replies.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(!self.replies.waiting())
    }
}

impl Drop for BackendConn {
    /// Gives this connection's share of the budget back, however it ends.
    fn drop(&mut self) {
        self.budget.update(self.charged, 0);
    }
}

/// The reply to a command with an argument over `mailbox.max-message-size`:
/// the store's text, then which command and how long the argument was, so a
/// backend's log says what was refused.
fn too_large_text(name: &[u8], len: usize, limit: usize) -> String {
    let base = format!("ERR {}", StoreError::TooLarge { limit });
    if name.is_empty() {
        return format!("{base}: a command name of {len} bytes");
    }
    let shown = String::from_utf8_lossy(&name[..name.len().min(64)]).to_ascii_uppercase();
    format!("{base}: {shown} argument of {len} bytes")
}

/// The commands' view of the gateway, from one worker's turn: publishes go
/// into the store and are announced, per worker, through `outbox`.
pub struct WorkerHub<'a> {
    pub shared: &'a Shared,
    pub outbox: &'a mut [Vec<Arc<Message>>],
    pub now: Instant,
    /// The worker running the commands (late answers come back to it).
    pub worker: usize,
    /// Publishes whose replies wait for these tickets; the worker notes
    /// which connection each belongs to.
    pub tickets: Vec<Ticket>,
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
    fn publish(&mut self, mailbox: &[u8], payload: Vec<u8>) -> Result<Publish, HubError> {
        let store = &self.shared.store;
        match store.publish(mailbox, payload, self.now, self.worker) {
            Answer::Pending(ticket) => Ok(Publish::Later(ticket)),
            Answer::Ready(Ok(published)) => {
                // Live subscribers need not wait for the disk: announce now.
                let mut mask = published.workers;
                while mask != 0 {
                    let worker = mask.trailing_zeros() as usize;
                    mask &= mask - 1;
                    self.outbox[worker].push(published.message.clone());
                }
                Ok(match published.wait {
                    Some(ticket) => Publish::Later(ticket),
                    None => Publish::Now(published.receivers),
                })
            }
            Answer::Ready(Err(e @ StoreError::BadName)) => Err(HubError::BadName(e.to_string())),
            Answer::Ready(Err(e @ StoreError::TooLarge { .. })) => {
                Err(HubError::TooLarge(e.to_string()))
            }
            Answer::Ready(Err(e)) => Err(HubError::Full(e.to_string())),
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
            .active_names()
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
        // Not `# Persistence`: that one is Redis' own, with `loading:0`.
        if section.is_some_and(|s| s == "store" || s == "all" || s == "everything") {
            out.push_str("# Store\r\n");
            shared.store.write_info(out);
            out.push_str("\r\n");
        }
        if want("mailboxes") {
            let store = &shared.store;
            let stats = store.stats();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_refuses_growth_past_the_limit_and_gives_back() {
        let budget = CommandBudget::new(100);
        let other = budget.clone();
        assert!(budget.update(0, 60));
        assert!(!other.update(0, 41), "60 + 41 is over 100");
        assert_eq!(budget.held(), 60, "a refused growth charges nothing");
        assert!(other.update(0, 40));
        assert!(budget.update(60, 10));
        assert!(other.update(40, 90));
        assert!(budget.update(10, 0) && other.update(90, 0));
        assert_eq!(budget.held(), 0);
    }

    /// Regression: the decoder's name and length of an oversized argument
    /// were dropped and every backend saw the same bare text.
    #[test]
    fn too_large_reply_says_which_command_and_how_long() {
        assert_eq!(
            too_large_text(b"publish", 5000, 1024),
            "ERR message exceeds mailbox.max-message-size (1024 bytes): PUBLISH argument of 5000 bytes"
        );
        assert_eq!(
            too_large_text(b"", 2000, 1024),
            "ERR message exceeds mailbox.max-message-size (1024 bytes): a command name of 2000 bytes"
        );
    }
}
