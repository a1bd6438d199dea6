//! Compaction: the log rewritten from what the store retains, so the
//! directory stays a small multiple of the retained bytes however many
//! messages pass through (Redis' AOF rewrite).
//!
//! The writer takes a snapshot: each shard is locked only while the
//! pointers to its messages are cloned, so workers wait at most that long.
//! A thread of its own writes the snapshot to `log.compact` and fsyncs it,
//! while the writer goes on appending to the old log (so fsync policies and
//! replies are not held up) and keeps a copy of each record that is newer
//! than the snapshot. When the thread is done, the writer appends that
//! tail, fsyncs, and renames the new log over the old one.
//!
//! Records that workers sent before a shard's snapshot may still be queued
//! for the writer; they are in the snapshot already. The [`Filter`]
//! recognises them: a mailbox's records reach the queue in (generation,
//! seq) order, under the same lock as the snapshot, so a record is in the
//! snapshot exactly when it is not newer than the mailbox's state there.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Instant;

use ::log::{error, info};

use super::Clock;
use super::log::{Writer, encode_message, encode_state};
use super::record::{self, Record};
use crate::store::local::{MailboxImage, SHARDS};

/// No compaction below this size: rewriting a small log often costs more
/// than the space it frees.
const MIN_BYTES: u64 = 1 << 20;

/// Compact when the log has grown to this many times its compacted size,
/// so the directory holds at most about four times the retained bytes (five
/// times while a compaction is being written). Each compaction rewrites
/// what is retained, so the log is written 1 / (GROWTH - 1) more than the
/// appends alone: at 2 (Redis' `auto-aof-rewrite-percentage 100`) a busy
/// store with much retained rewrote its whole log for every log's worth of
/// publishes, and compaction's CPU and cross-thread frees cost a tenth of
/// the publish rate; at 4 a third of that.
const GROWTH: u64 = 4;

/// Records the last snapshot already holds.
pub(crate) struct Filter {
    /// Each mailbox's (generation, last seq) in the snapshot.
    marks: HashMap<Arc<str>, (u64, u64)>,
    /// Records queued when the snapshot ended: only those can be in it.
    left: usize,
}

impl Filter {
    /// Whether the record of `mailbox` at (generation, seq) is in the
    /// snapshot. A DEL counts as seq 0 of its new generation.
    pub(crate) fn written(&mut self, mailbox: &str, generation: u64, seq: u64) -> bool {
        self.left = self.left.saturating_sub(1);
        self.marks
            .get(mailbox)
            .is_some_and(|&(g, last)| generation < g || (generation == g && seq <= last))
    }

    pub(crate) fn done(&self) -> bool {
        self.left == 0
    }
}

/// A compaction being written by its thread.
pub(crate) struct Running {
    thread: JoinHandle<io::Result<u64>>,
    /// Records newer than the snapshot, to append to the new log.
    pub(crate) tail: Vec<u8>,
    started: Instant,
    before: u64,
}

impl Writer {
    pub(super) fn should_compact(&self) -> bool {
        self.running.is_none()
            && (self.compact_now || self.size >= MIN_BYTES.max(self.compacted_size * GROWTH))
    }

    /// Takes the snapshot and starts the thread that writes it.
    pub(super) fn compact(&mut self) {
        self.compact_now = false;
        let now = Instant::now();
        let mut images: Vec<MailboxImage> = Vec::new();
        for shard in 0..SHARDS {
            self.local.snapshot_shard(shard, now, &mut images);
        }
        let head = (self.local.epoch(), self.local.next_generation());
        self.filter = Some(Filter {
            marks: images
                .iter()
                .map(|m| (m.name.clone(), (m.generation, m.last_seq)))
                .collect(),
            left: self.rx.len(),
        });
        let (path, clock) = (self.dir.compact_path(), self.clock);
        let thread = std::thread::Builder::new()
            .name("store-compact".into())
            .spawn(move || write_snapshot(path, head, &images, &clock));
        match thread {
            Ok(thread) => {
                self.running = Some(Running {
                    thread,
                    tail: Vec::new(),
                    started: now,
                    before: self.size,
                })
            }
            Err(e) => {
                self.filter = None;
                self.compacted_size = self.size;
                error!("disk store: cannot start a compaction: {e}");
            }
        }
    }

    /// Once the thread is done: the tail after the snapshot, fsync, and
    /// the new log in the old one's place. `wait` joins a running one.
    pub(super) fn finish_compaction(&mut self, wait: bool) {
        if !wait
            && !self
                .running
                .as_ref()
                .is_some_and(|r| r.thread.is_finished())
        {
            return;
        }
        let Some(running) = self.running.take() else {
            return;
        };
        let took = running.started.elapsed();
        let written = running
            .thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the compaction thread panicked")));
        match written.and_then(|size| self.swap(size, &running.tail)) {
            Ok(()) => {
                self.stats.compactions.fetch_add(1, Ordering::Relaxed);
                info!(
                    "disk store: compacted the log from {} to {} bytes in {} ms",
                    running.before,
                    self.size,
                    took.as_millis()
                );
            }
            Err(e) => {
                error!("disk store: compaction failed: {e}; the log keeps growing until it works");
                let _ = std::fs::remove_file(self.dir.compact_path());
                // Try again once it has grown as much again.
                self.compacted_size = self.size;
            }
        }
        if self.filter.as_ref().is_some_and(Filter::done) {
            self.filter = None;
        }
    }

    fn swap(&mut self, snapshot: u64, tail: &[u8]) -> io::Result<()> {
        let path = self.dir.compact_path();
        let mut file = OpenOptions::new().append(true).open(&path)?;
        file.write_all(tail)?;
        file.sync_data()?;
        std::fs::rename(&path, self.dir.log_path())?;
        self.dir.sync()?;
        self.file = file;
        self.size = snapshot + tail.len() as u64;
        // What is retained, not the tail: most of that is dead by now when
        // publishes are fast, and the next compaction should come soon.
        self.compacted_size = snapshot;
        self.dirty = false;
        self.stats.log_bytes.store(self.size, Ordering::Relaxed);
        Ok(())
    }
}

/// The compaction thread: a head, then per mailbox its state and its
/// retained messages, fsynced. Returns the bytes written.
fn write_snapshot(
    path: PathBuf,
    (store, next_generation): (u64, u64),
    images: &[MailboxImage],
    clock: &Clock,
) -> io::Result<u64> {
    let mut out = File::create(&path)?;
    let mut buf = Vec::with_capacity(1 << 20);
    record::encode(
        &Record::Head {
            store,
            next_generation,
        },
        &mut buf,
    );
    let mut size = 0u64;
    for image in images {
        encode_state(image, image.before, &mut buf);
        for message in &image.messages {
            encode_message(message, clock, &mut buf);
        }
        if buf.len() >= 1 << 20 {
            out.write_all(&buf)?;
            size += buf.len() as u64;
            buf.clear();
        }
    }
    out.write_all(&buf)?;
    size += buf.len() as u64;
    out.sync_all()?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_passes_only_what_is_newer_than_the_snapshot() {
        let mut f = Filter {
            marks: [(Arc::from("box"), (5, 10))].into_iter().collect(),
            left: 100,
        };
        assert!(f.written("box", 5, 10));
        assert!(f.written("box", 4, 99), "an older generation");
        assert!(!f.written("box", 5, 11));
        assert!(f.written("box", 5, 0), "the DEL that started generation 5");
        assert!(!f.written("box", 6, 0), "a DEL after the snapshot");
        assert!(!f.written("other", 1, 1));
        assert!(!f.done());
    }
}
