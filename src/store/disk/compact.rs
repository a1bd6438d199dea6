//! Compaction: the log rewritten from what the store retains, so the
//! directory stays a small multiple of the retained bytes however many
//! messages pass through (Redis' AOF rewrite, in the writer thread).
//!
//! The snapshot locks each shard only while it clones the pointers to its
//! messages, so workers wait at most that long. Records that workers sent
//! before a shard's snapshot may still be queued for the writer; they are
//! already in the new log. The [`Filter`] recognises them: a mailbox's
//! records reach the queue in (generation, seq) order, under the same lock
//! as the snapshot, so a record is in the snapshot exactly when it is not
//! newer than the mailbox's state there.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use ::log::{error, info};

use super::log::{Writer, encode_message, encode_state};
use super::record::{self, Record};
use crate::store::local::{MailboxImage, SHARDS};

/// No compaction below this size: rewriting a small log often costs more
/// than the space it frees.
const MIN_BYTES: u64 = 1 << 20;

/// Compact when the log has grown to this many times its compacted size,
/// so the directory holds at most about twice the retained bytes (three
/// times for the moment a compaction is being written).
const GROWTH: u64 = 2;

/// Records the last compaction already wrote.
pub(crate) struct Filter {
    /// Each mailbox's (generation, last seq) in the snapshot.
    marks: HashMap<Arc<str>, (u64, u64)>,
    /// Records queued when the snapshot ended: only those can be in it.
    left: usize,
}

impl Filter {
    /// Whether the record of `mailbox` at (generation, seq) is in the new
    /// log already. A DEL counts as seq 0 of its new generation.
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

impl Writer {
    pub(super) fn should_compact(&self) -> bool {
        self.compact_now || self.size >= MIN_BYTES.max(self.compacted_size * GROWTH)
    }

    pub(super) fn compact(&mut self) {
        let started = Instant::now();
        let before = self.size;
        match self.rewrite() {
            Ok(()) => {
                self.stats.compactions.fetch_add(1, Ordering::Relaxed);
                info!(
                    "disk store: compacted the log from {before} to {} bytes in {} ms",
                    self.size,
                    started.elapsed().as_millis()
                );
                self.warn_slow("compaction", started.elapsed());
            }
            Err(e) => {
                error!("disk store: compaction failed: {e}; the log keeps growing until it works");
                let _ = std::fs::remove_file(self.dir.compact_path());
                // Try again once it has grown as much again.
                self.compacted_size = self.size;
            }
        }
        self.compact_now = false;
    }

    fn rewrite(&mut self) -> io::Result<()> {
        let now = Instant::now();
        let mut images: Vec<MailboxImage> = Vec::new();
        for shard in 0..SHARDS {
            self.local.snapshot_shard(shard, now, &mut images);
        }
        let path = self.dir.compact_path();
        let mut out = File::create(&path)?;
        let mut buf = Vec::with_capacity(1 << 20);
        record::encode(
            &Record::Head {
                store: self.local.epoch(),
                next_generation: self.local.next_generation(),
            },
            &mut buf,
        );
        let mut size = 0u64;
        for image in &images {
            encode_state(image, image.before, &mut buf);
            for message in &image.messages {
                encode_message(message, &self.clock, &mut buf);
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
        drop(out);
        std::fs::rename(&path, self.dir.log_path())?;
        self.dir.sync()?;
        self.file = OpenOptions::new().append(true).open(self.dir.log_path())?;
        self.size = size;
        self.compacted_size = size;
        self.dirty = false;
        self.stats.log_bytes.store(size, Ordering::Relaxed);
        let marks = images
            .into_iter()
            .map(|m| (m.name, (m.generation, m.last_seq)))
            .collect();
        self.filter = Some(Filter {
            marks,
            left: self.rx.len(),
        })
        .filter(|f| !f.done());
        Ok(())
    }
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
