//! The writer thread: the one owner of the log file. Workers send it what
//! they stored (a pointer to the message, no copy, no I/O on their side);
//! it takes everything waiting as one batch, writes it with one write(2),
//! fsyncs per `mailbox.store-fsync`, and then finishes the publishes that
//! wait for the disk (`always`): it announces them to the subscribers'
//! workers and completes their tickets through the store's [`Outlet`].
//! Group commit: one fsync and one post per worker per batch, however many
//! publishes it holds.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ::log::{error, info};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::Clock;
use super::compact::{Filter, Running};
use super::files::Dir;
use super::record::{self, Record};
use crate::config::StoreFsync;
use crate::store::local::MailboxImage;
use crate::store::{LocalStore, Message, Outlet, StoreError, Ticket};

/// A batch is written once this much is encoded even if more waits, so
/// that `always` replies are not held behind an unbounded write.
const BATCH_BYTES: usize = 4 << 20;

/// `everysec`: fsync when the last one is this old.
const EVERY: Duration = Duration::from_secs(1);

/// `everysec` and `no`: after a batch, how long the writer lets the next
/// one gather before it looks again. While it sleeps it is not parked on
/// the channel, so a worker's send wakes nobody; parked, nearly every send
/// would wake it (a futex call on the worker, a context switch for one or
/// two records): the writer's CPU per message halved with this. 2 ms is
/// nothing beside everysec's second, and bounds what waits in the channel
/// to 2 ms of publishes. `always` does not linger: its replies wait for
/// the batch.
const LINGER: Duration = Duration::from_millis(2);

/// While a compaction runs, how often the writer looks whether it is done.
const COMPACTION_POLL: Duration = Duration::from_millis(20);

/// What the writer is sent.
pub(crate) enum Op {
    /// A stored message; `ack` when its PUBLISH (reply and deliveries)
    /// waits for the disk.
    Publish(Arc<Message>, Option<Ack>),
    /// DEL: the mailbox's new generation.
    Delete(Arc<str>, u64),
    /// Write and fsync everything before this, then answer.
    Sync(Sender<()>),
    /// Like Sync, then mark the directory clean and stop.
    Close(Sender<()>),
}

/// A PUBLISH waiting for the fsync of its batch: whom to reply to, and
/// (a bit per worker) whom to announce it to.
pub(crate) struct Ack {
    pub worker: usize,
    pub ticket: Ticket,
    pub receivers: u64,
    pub workers: u64,
}

/// Counters for INFO.
#[derive(Default)]
pub(crate) struct WriterStats {
    pub log_bytes: AtomicU64,
    pub writes: AtomicU64,
    pub fsyncs: AtomicU64,
    pub compactions: AtomicU64,
    pub errors: AtomicU64,
}

pub(crate) struct Writer {
    pub(super) rx: Receiver<Op>,
    pub(super) file: File,
    pub(super) dir: Dir,
    fsync: StoreFsync,
    pub(super) local: Arc<LocalStore>,
    outlet: Arc<dyn Outlet>,
    pub(super) clock: Clock,
    pub(super) stats: Arc<WriterStats>,
    buf: Vec<u8>,
    /// The waiting publishes of this batch, in log order, with their
    /// messages.
    acks: Vec<(Ack, Arc<Message>)>,
    /// Per worker, what this batch announces (kept for its capacity).
    deliveries: Vec<Vec<Arc<Message>>>,
    /// Written since the last fsync.
    pub(super) dirty: bool,
    last_sync: Instant,
    /// Bytes in the log, and what it held after the last compaction.
    pub(super) size: u64,
    pub(super) compacted_size: u64,
    /// Records the last snapshot holds (see `compact`).
    pub(super) filter: Option<Filter>,
    /// A compaction being written by its thread.
    pub(super) running: Option<Running>,
    /// The log is damaged (replay skipped something): rewrite it soon.
    pub(super) compact_now: bool,
    /// Why the last write failed, while it keeps failing (logged once).
    failing: Option<String>,
}

/// The log, opened for appending after what replay found valid (a torn
/// tail is cut off here); a new log starts with its header.
pub(crate) fn open_for_append(
    dir: &Dir,
    local: &LocalStore,
    valid_len: u64,
    existed: bool,
) -> Result<File, String> {
    let path = dir.log_path();
    let fail = |e: io::Error| format!("cannot open the disk store's log {}: {e}", path.display());
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(fail)?;
    if file.metadata().map_err(fail)?.len() > valid_len {
        file.set_len(valid_len).map_err(fail)?;
    }
    if !existed || valid_len == 0 {
        let mut head = Vec::new();
        record::encode(
            &Record::Head {
                store: local.epoch(),
                next_generation: local.next_generation(),
            },
            &mut head,
        );
        file.write_all(&head).map_err(fail)?;
        file.sync_all().map_err(fail)?;
        dir.sync().map_err(fail)?;
    }
    Ok(file)
}

/// State records for mailboxes moved to a new generation after a crash,
/// written and fsynced before anything is served.
pub(crate) fn append_states(file: &mut File, moved: &[MailboxImage]) -> io::Result<()> {
    let mut buf = Vec::new();
    for m in moved {
        encode_state(m, m.last_seq, &mut buf);
    }
    file.write_all(&buf)?;
    file.sync_data()
}

pub(super) fn encode_state(m: &MailboxImage, last_seq: u64, out: &mut Vec<u8>) {
    let (prev_generation, prev_last_seq) = m.prev.unwrap_or((0, 0));
    record::encode(
        &Record::State {
            mailbox: &m.name,
            generation: m.generation,
            last_seq,
            prev_generation,
            prev_last_seq,
        },
        out,
    );
}

pub(super) fn encode_message(message: &Message, clock: &Clock, out: &mut Vec<u8>) {
    record::encode(
        &Record::Publish {
            mailbox: &message.mailbox,
            generation: message.cursor.generation,
            seq: message.cursor.seq,
            unix_ms: clock.unix_ms(message.published_at),
            payload: &message.payload,
        },
        out,
    );
}

impl Writer {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        rx: Receiver<Op>,
        file: File,
        dir: Dir,
        fsync: StoreFsync,
        local: Arc<LocalStore>,
        outlet: Arc<dyn Outlet>,
        clock: Clock,
        stats: Arc<WriterStats>,
        damaged: bool,
    ) -> io::Result<Writer> {
        let size = file.metadata()?.len();
        stats.log_bytes.store(size, Ordering::Relaxed);
        Ok(Writer {
            rx,
            file,
            dir,
            fsync,
            local,
            outlet,
            clock,
            stats,
            buf: Vec::new(),
            acks: Vec::new(),
            deliveries: Vec::new(),
            dirty: false,
            last_sync: Instant::now(),
            size,
            compacted_size: size,
            filter: None,
            running: None,
            compact_now: damaged,
            failing: None,
        })
    }

    pub(crate) fn run(mut self) {
        if self.compact_now {
            self.compact(); // a damaged log: rewrite it before it grows
        }
        loop {
            let wait = match self.running {
                Some(_) => COMPACTION_POLL,
                None => EVERY,
            };
            let first = match self.rx.recv_timeout(wait) {
                Ok(op) => Some(op),
                Err(RecvTimeoutError::Timeout) => None,
                // The store was dropped without close: keep what we hold,
                // leave the directory unclean.
                Err(RecvTimeoutError::Disconnected) => {
                    self.commit(true);
                    self.finish_compaction(true);
                    return;
                }
            };
            let mut answers = Vec::new();
            let mut close = None;
            let linger = first.is_some() && self.fsync != StoreFsync::Always;
            if let Some(op) = first {
                self.take(op, &mut answers, &mut close);
            }
            while close.is_none() && self.buf.len() < BATCH_BYTES {
                match self.rx.try_recv() {
                    Ok(op) => self.take(op, &mut answers, &mut close),
                    Err(_) => break,
                }
            }
            self.commit(!answers.is_empty() || close.is_some());
            for done in answers {
                let _ = done.send(());
            }
            if let Some(done) = close {
                self.finish_compaction(true);
                // Leave the directory small at rest, as it is kept running.
                if self.should_compact() {
                    self.compact();
                    self.finish_compaction(true);
                }
                if let Err(e) = self.dir.mark_clean() {
                    error!(
                        "cannot mark the disk store clean: {e}; the next start will treat it as a crash"
                    );
                }
                let _ = done.send(());
                return;
            }
            self.finish_compaction(false);
            if self.should_compact() {
                self.compact();
            }
            if linger {
                std::thread::sleep(LINGER);
            }
        }
    }

    fn take(&mut self, op: Op, answers: &mut Vec<Sender<()>>, close: &mut Option<Sender<()>>) {
        match op {
            Op::Publish(message, ack) => {
                let (generation, seq) = (message.cursor.generation, message.seq());
                let seen = self.in_snapshot(&message.mailbox, generation, seq);
                let clock = self.clock;
                self.append(seen, |buf| encode_message(&message, &clock, buf));
                if let Some(ack) = ack {
                    self.acks.push((ack, message));
                }
            }
            Op::Delete(mailbox, generation) => {
                let seen = self.in_snapshot(&mailbox, generation, 0);
                let record = Record::Delete {
                    mailbox: &mailbox,
                    generation,
                };
                self.append(seen, |buf| record::encode(&record, buf));
            }
            Op::Sync(done) => answers.push(done),
            Op::Close(done) => *close = Some(done),
        }
    }

    /// Whether the last compaction's snapshot holds this record already.
    fn in_snapshot(&mut self, mailbox: &str, generation: u64, seq: u64) -> bool {
        let Some(filter) = self.filter.as_mut() else {
            return false;
        };
        let seen = filter.written(mailbox, generation, seq);
        if filter.done() {
            self.filter = None;
        }
        seen
    }

    /// Encodes a record into the batch. While a compaction runs the old log
    /// still gets every record (it must stay whole until the swap), and the
    /// compaction's tail those its snapshot lacks; after the swap, what the
    /// snapshot holds is not written again.
    fn append(&mut self, in_snapshot: bool, encode: impl FnOnce(&mut Vec<u8>)) {
        let start = self.buf.len();
        encode(&mut self.buf);
        match self.running.as_mut() {
            Some(running) if !in_snapshot => running.tail.extend_from_slice(&self.buf[start..]),
            Some(_) => {}
            None if in_snapshot => self.buf.truncate(start),
            None => {}
        }
    }

    /// Writes the batch, fsyncs if the policy (or `force`) says so, then
    /// answers the publishes that waited for it.
    fn commit(&mut self, force: bool) {
        let mut result = Ok(());
        if !self.buf.is_empty() {
            result = self.file.write_all(&self.buf);
            match &result {
                Ok(()) => {
                    self.size += self.buf.len() as u64;
                    self.dirty = true;
                    self.stats.writes.fetch_add(1, Ordering::Relaxed);
                    self.stats.log_bytes.store(self.size, Ordering::Relaxed);
                }
                // Whatever part of the batch got out is cut off again, so
                // the next batch does not follow a torn record.
                Err(_) => {
                    let _ = self.file.set_len(self.size);
                }
            }
            self.buf.clear();
        }
        let due = match self.fsync {
            StoreFsync::Always => true,
            StoreFsync::EverySec => self.last_sync.elapsed() >= EVERY,
            StoreFsync::No => false,
        };
        if result.is_ok() && self.dirty && (due || force) {
            result = self.file.sync_data();
            if result.is_ok() {
                self.dirty = false;
                self.last_sync = Instant::now();
                self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
            }
        }
        let answer = match result {
            Ok(()) => {
                if self.failing.take().is_some() {
                    info!("the disk store's log is written again");
                }
                Ok(())
            }
            Err(e) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                let why = format!("cannot write the log: {e}");
                if self.failing.is_none() {
                    error!("disk store: {why}; messages are kept in memory only until it works");
                }
                self.failing = Some(why.clone());
                Err(StoreError::Disk(why))
            }
        };
        self.answer(answer);
    }

    /// Finishes the batch's waiting publishes: first one batch of
    /// announcements per worker (in log order, so each mailbox's in seq
    /// order), then one batch of replies per worker, so that a backend
    /// acknowledged has its message on the way to every subscriber. A
    /// message the log could not take is announced all the same (it is in
    /// memory, where readers see it); its reply says the disk failed.
    fn answer(&mut self, result: Result<(), StoreError>) {
        if self.acks.is_empty() {
            return;
        }
        for (ack, message) in &self.acks {
            let mut mask = ack.workers;
            while mask != 0 {
                let worker = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                if self.deliveries.len() <= worker {
                    self.deliveries.resize_with(worker + 1, Vec::new);
                }
                self.deliveries[worker].push(message.clone());
            }
        }
        for (worker, queue) in self.deliveries.iter_mut().enumerate() {
            if !queue.is_empty() {
                self.outlet.deliver(worker, std::mem::take(queue));
            }
        }
        self.acks.sort_by_key(|(a, _)| a.worker);
        let mut acks = self.acks.drain(..).peekable();
        while let Some((first, _)) = acks.next() {
            let worker = first.worker;
            let mut done = vec![(first.ticket, reply(&result, first.receivers))];
            while let Some((next, _)) = acks.next_if(|(a, _)| a.worker == worker) {
                done.push((next.ticket, reply(&result, next.receivers)));
            }
            self.outlet.completed(worker, done);
        }
    }
}

fn reply(result: &Result<(), StoreError>, receivers: u64) -> Result<u64, StoreError> {
    match result {
        Ok(()) => Ok(receivers),
        Err(e) => Err(e.clone()),
    }
}
