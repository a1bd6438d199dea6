//! The disk store (`mailbox.store = "disk"`): the in-memory store still
//! serves every read; each publish and DEL is also handed, under its shard
//! lock, to a writer thread that appends it to a log and fsyncs per
//! `mailbox.store-fsync`. At start the log is replayed into memory with the
//! ids it had. docs/storage.md tells the whole story; in short:
//!
//! - `record`: the log's records and their codec (pure, fuzzed);
//! - `files`: the directory, its lock and its clean-shutdown marker;
//! - `replay`: the log back into a [`LocalStore`], torn tails cut off;
//! - `log`: the writer thread, group commit, and (`always`) the deliveries
//!   and replies that wait for it, handed back through the [`Outlet`];
//! - `compact`: the log rewritten from what is retained.

mod compact;
mod files;
mod log;
pub mod record;
mod replay;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Sender;

use self::log::{Ack, Op, Writer};
use super::{Answer, LocalStore, Outlet, Published, StoreError, StoreLimits, Ticket};
use crate::config::StoreFsync;

/// Instants (what the store keeps) to Unix milliseconds (what the log
/// keeps) and back, from one reading of both clocks.
#[derive(Clone, Copy)]
pub(crate) struct Clock {
    instant: Instant,
    unix_ms: u64,
}

impl Clock {
    fn now() -> Clock {
        Clock {
            instant: Instant::now(),
            unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        }
    }

    fn unix_ms(&self, at: Instant) -> u64 {
        match at.checked_duration_since(self.instant) {
            Some(later) => self.unix_ms + later.as_millis() as u64,
            None => self
                .unix_ms
                .saturating_sub((self.instant - at).as_millis() as u64),
        }
    }

    /// The instant of a Unix time, seen from `now`; a time in the future
    /// (a clock set back) is taken as now.
    fn instant(&self, unix_ms: u64, now: Instant) -> Instant {
        let age = self.unix_ms(now).saturating_sub(unix_ms);
        now.checked_sub(Duration::from_millis(age)).unwrap_or(now)
    }
}

pub struct DiskStore {
    local: Arc<LocalStore>,
    tx: Sender<Op>,
    fsync: StoreFsync,
    tickets: AtomicU64,
    writer: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<log::WriterStats>,
    dir: std::path::PathBuf,
}

/// The log's counters at one moment, for `/metrics` (the ops listener turns
/// them into its text format; the store knows nothing of it).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogSnapshot {
    pub log_bytes: u64,
    pub writes: u64,
    pub fsyncs: u64,
    pub compactions: u64,
    pub write_errors: u64,
    /// Publishes handed to the writer thread and not written yet.
    pub queued: u64,
    /// The last write to the log failed.
    pub failing: bool,
}

impl DiskStore {
    /// Opens (or creates) the store in `dir`, replays its log and starts
    /// the writer thread. The error is a sentence for the operator.
    pub fn open(
        dir: &Path,
        limits: StoreLimits,
        workers: usize,
        fsync: StoreFsync,
        outlet: Arc<dyn Outlet>,
    ) -> Result<DiskStore, String> {
        let started = Instant::now();
        let dir_lock = files::Dir::open(dir)?;
        let clean = dir_lock.was_clean();
        // Before anything is changed: a crash from here on, even during
        // the replay, must be noticed by the next start.
        dir_lock
            .mark_running()
            .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
        let clock = Clock::now();
        let now = Instant::now();
        let replayed = replay::replay(&dir_lock.log_path(), limits, workers, &clock, now)?;
        let replay_ms = started.elapsed().as_millis();
        let local = Arc::new(replayed.local);
        let mut file =
            log::open_for_append(&dir_lock, &local, replayed.valid_len, replayed.existed)?;
        if replayed.existed && (!clean || replayed.damaged || replayed.cut) {
            // Something may be lost: its ids must never be given again.
            let moved = local.continue_all();
            log::append_states(&mut file, &moved)
                .map_err(|e| format!("cannot write the disk store's log: {e}"))?;
            let why = if clean {
                "lost records"
            } else {
                "was not shut down cleanly"
            };
            ::log::warn!(
                "the disk store in {} {why}: {} mailboxes continue in a new generation \
                 (cursors past what survived are told `missed`)",
                dir.display(),
                moved.len()
            );
        }
        ::log::info!(
            "disk store {}: {} records replayed, {} mailboxes, {} bytes retained, in {} ms \
             (the replay {replay_ms} ms; fsync {})",
            dir.display(),
            replayed.records,
            local.mailbox_count(),
            local.retained_bytes(),
            started.elapsed().as_millis(),
            fsync.name()
        );
        let (tx, rx) = crossbeam_channel::unbounded();
        let stats = Arc::new(log::WriterStats::default());
        let writer = Writer::new(
            rx,
            file,
            dir_lock,
            fsync,
            local.clone(),
            outlet,
            clock,
            stats.clone(),
            replayed.damaged,
        )
        .map_err(|e| format!("cannot use the disk store's log: {e}"))?;
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| format!("cannot start the store's writer thread: {e}"))?;
        Ok(DiskStore {
            local,
            tx,
            fsync,
            tickets: AtomicU64::new(1),
            writer: Mutex::new(Some(thread)),
            stats,
            dir: dir.to_path_buf(),
        })
    }

    pub(crate) fn local(&self) -> &LocalStore {
        &self.local
    }

    /// Stores in memory and hands the message to the writer under the
    /// shard lock (so the log holds each mailbox in seq order). With
    /// `everysec` and `no` that is all: the answer is ready, and the worker
    /// announces the message. With `always` the answer is `Pending`, like a
    /// remote store's: after the fsync of the batch that holds the message
    /// the writer announces it to the subscribers' workers and completes the
    /// ticket, both through the [`Outlet`] (group commit: one fsync, one
    /// post per worker, per batch).
    pub fn publish(
        &self,
        name: &[u8],
        payload: Vec<u8>,
        now: Instant,
        worker: usize,
    ) -> Answer<Result<Published, StoreError>> {
        let ticket = (self.fsync == StoreFsync::Always)
            .then(|| Ticket(self.tickets.fetch_add(1, Ordering::Relaxed)));
        let result = self.local.publish_logged(name, payload, now, |published| {
            let ack = ticket.map(|ticket| Ack {
                worker,
                ticket,
                receivers: published.receivers,
                workers: published.workers,
            });
            // The writer outlives every worker (it is stopped last).
            let _ = self.tx.send(Op::Publish(published.message.clone(), ack));
        });
        match (ticket, result) {
            (Some(ticket), Ok(_)) => Answer::Pending(ticket),
            (_, result) => Answer::Ready(result),
        }
    }

    pub fn delete(&self, name: &[u8], now: Instant) -> bool {
        self.local.delete_logged(name, now, |mailbox, generation| {
            let _ = self.tx.send(Op::Delete(mailbox.clone(), generation));
        })
    }

    /// Writes and fsyncs everything sent so far (tests, benchmarks).
    pub fn sync(&self) {
        let (done, wait) = crossbeam_channel::bounded(1);
        if self.tx.send(Op::Sync(done)).is_ok() {
            let _ = wait.recv();
        }
    }

    /// Writes and fsyncs what is left, marks the directory clean and stops
    /// the writer. Later publishes are kept in memory only.
    pub fn close(&self) {
        let (done, wait) = crossbeam_channel::bounded(1);
        if self.tx.send(Op::Close(done)).is_ok() {
            let _ = wait.recv();
        }
        let thread = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            ::log::error!("the store's writer thread panicked");
        }
    }

    /// What the metrics show of the log; atomics only, never waits on the
    /// writer thread.
    pub fn snapshot(&self) -> LogSnapshot {
        let s = &self.stats;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LogSnapshot {
            log_bytes: get(&s.log_bytes),
            writes: get(&s.writes),
            fsyncs: get(&s.fsyncs),
            compactions: get(&s.compactions),
            write_errors: get(&s.errors),
            queued: self.tx.len() as u64,
            failing: s.failing.load(Ordering::Relaxed),
        }
    }

    /// Why `/health` should say 503: the log cannot be written, so what is
    /// published now would not survive a restart.
    pub fn unavailable_because(&self) -> Option<String> {
        self.stats
            .failing
            .load(Ordering::Relaxed)
            .then(|| "disk store cannot write its log".to_string())
    }

    pub fn write_info(&self, out: &mut String) {
        use std::fmt::Write;
        let s = &self.stats;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = write!(
            out,
            "store:disk\r\nstore_dir:{}\r\nstore_fsync:{}\r\nlog_bytes:{}\r\n\
             log_writes:{}\r\nlog_fsyncs:{}\r\nlog_compactions:{}\r\nlog_write_errors:{}\r\n\
             log_queue:{}\r\nlog_failing:{}\r\n",
            self.dir.display(),
            self.fsync.name(),
            get(&s.log_bytes),
            get(&s.writes),
            get(&s.fsyncs),
            get(&s.compactions),
            get(&s.errors),
            self.tx.len(),
            u8::from(s.failing.load(Ordering::Relaxed)),
        );
    }
}

impl Drop for DiskStore {
    /// Without `close` (a failed start, a panic) the writer still writes
    /// what it holds, but leaves the directory marked unclean.
    fn drop(&mut self) {
        let thread = self
            .writer
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(thread) = thread {
            let (tx, _) = crossbeam_channel::bounded(0);
            drop(std::mem::replace(&mut self.tx, tx));
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests;
