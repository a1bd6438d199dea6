//! The backend side: app servers connect to a Unix socket and speak the Redis
//! protocol, so their existing Redis client can `PUBLISH mailbox payload`.
//!
//! `resp` is the codec and `commands` the command table, both free of
//! sockets; this module owns a backend connection's buffers and binds the
//! commands to the mailbox store through [`WorkerHub`].

pub mod commands;
pub mod events;
mod replies;
pub mod resp;

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Instant;

use crate::config::MailboxConfig;
use crate::metrics;
pub use crate::net::BackendStream;
use crate::shared::{Budget as CommandBudget, Shared};
use crate::store::{Answer, Message, Store, StoreError, Ticket};
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

    /// In pub/sub mode: events are written to it.
    pub fn is_listening(&self) -> bool {
        self.session.pubsub.is_active()
    }

    /// Queues the frames this connection gets for `event`; how many.
    pub fn push_event(&mut self, event: &crate::shared::Event) -> usize {
        let session = &mut self.session;
        self.replies
            .write_with(|out| session.pubsub.write_event(session.proto, event, out))
    }

    /// Replies not yet written, those waiting for a store included.
    pub fn out_len(&self) -> usize {
        self.replies.pending()
    }

    /// Fills the reply slot of a command the store answered late. False if
    /// this connection was not waiting for `ticket`.
    pub fn complete(&mut self, ticket: Ticket, answer: Result<u64, StoreError>) -> bool {
        self.replies
            .complete(ticket, answer.map_err(|e| error_line(&e)))
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
    /// Runs the whole commands in the input buffer, until the hub's turn is
    /// full ([`WorkerHub::turn_is_full`]). Returns true if commands wait
    /// for the next turn.
    pub fn execute_buffered(&mut self, hub: &mut WorkerHub<'_>) -> bool {
        let mut pos = 0;
        let mut more = false;
        while !self.closing && pos < self.inbuf.len() {
            if hub.turn_is_full() {
                more = true;
                break;
            }
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
                    // Most commands have a few arguments: point at them from
                    // the stack, allocating nothing per command.
                    let mut stack: [&[u8]; 8] = [&[]; 8];
                    let heap: Vec<&[u8]>;
                    let words: &[&[u8]] = if args.len() <= stack.len() {
                        for (slot, arg) in stack.iter_mut().zip(args.iter()) {
                            *slot = arg;
                        }
                        &stack[..args.len()]
                    } else {
                        heap = args.iter().collect();
                        &heap
                    };
                    let session = &mut self.session;
                    let after = self
                        .replies
                        .write_with(|out| commands::execute(session, words, hub, out));
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
        more
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

/// A store's refusal as a RESP error line (after the `-`): `TRYAGAIN` when
/// a shared store is out of reach, so clients that retry know they may.
fn error_line(e: &StoreError) -> String {
    match e {
        StoreError::Unavailable(_) => format!("TRYAGAIN {e}"),
        _ => format!("ERR {e}"),
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
    /// The config in force for this batch of commands (a guard: no shared
    /// reference count is touched per batch).
    pub config: arc_swap::Guard<Arc<crate::config::Config>>,
    pub outbox: &'a mut [Vec<Arc<Message>>],
    pub now: Instant,
    /// Subscribers this turn's publishes were announced to.
    pub announced: u64,
    /// The worker's per-command counts (`metrics::COMMANDS` order).
    pub commands: &'a mut [u64; metrics::COMMANDS.len()],
    /// The worker running the commands (late answers come back to it).
    pub worker: usize,
    /// Commands whose replies wait for these tickets; the worker notes
    /// which connection each belongs to.
    pub tickets: Vec<Ticket>,
}

/// Deliveries one worker turn's publishes may cause before the rest of a
/// backend's commands wait for the next turn: fan-out costs one write per
/// subscriber, and a turn that writes without end would keep the worker
/// from its other sockets (and from noticing shutdown). About 50 ms of
/// writes here.
pub const TURN_DELIVERIES: u64 = 100_000;

impl WorkerHub<'_> {
    /// This turn's publishes have been announced to enough subscribers.
    pub fn turn_is_full(&self) -> bool {
        self.announced >= TURN_DELIVERIES
    }

    fn max_message_size(&self) -> usize {
        self.config.mailbox.max_message_size
    }

    fn protocol_error(&self) {
        metrics::inc(&self.shared.metrics.backend_protocol_errors);
    }
}

impl Hub for WorkerHub<'_> {
    fn publish(&mut self, mailbox: &[u8], payload: Vec<u8>) -> Result<Publish, HubError> {
        match self
            .shared
            .store
            .publish(mailbox, payload, self.now, self.worker)
        {
            Answer::Pending(ticket) => Ok(Publish::Later(ticket)),
            Answer::Ready(Ok(published)) => {
                // Bayeux wildcard subscribers learn of new mailboxes here.
                let wakes = self.shared.sessions.on_publish(&published.message);
                self.shared.wake(wakes);
                let mut mask = published.workers;
                while mask != 0 {
                    let worker = mask.trailing_zeros() as usize;
                    mask &= mask - 1;
                    self.outbox[worker].push(published.message.clone());
                }
                self.announced += published.receivers.max(1);
                Ok(Publish::Now(published.receivers))
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

    fn delete_all(&mut self, names: &[&[u8]]) -> Publish {
        match self.shared.store.delete_all(names, self.now, self.worker) {
            Answer::Ready(n) => Publish::Now(n),
            Answer::Pending(ticket) => Publish::Later(ticket),
        }
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
        if want("workers") {
            // How evenly the workers hold the browsers (their accepts are
            // balanced; docs/architecture.md).
            out.push_str("# Workers\r\nhttp_connections_per_worker:");
            for (i, peer) in shared.peers.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let n = peer.connections.load(std::sync::atomic::Ordering::Relaxed);
                let _ = write!(out, "{n}");
            }
            out.push_str("\r\n\r\n");
        }
        if section.is_some_and(|s| s == "cluster" || s == "all" || s == "everything")
            && let Store::Redis(redis) = &shared.store
        {
            out.push_str("# Cluster\r\n");
            redis.write_info(out);
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
                 retained_memory:{}\r\n\
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
                store.memory_used(),
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
        self.config.mailbox.backend_password.as_deref()
    }

    fn count_command(&mut self, name: &str) {
        self.commands[metrics::command_slot(name)] += 1;
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
