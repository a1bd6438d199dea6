//! Start-up: the log read back into a [`LocalStore`], record by record,
//! each message with the id it had and the retention limits applied as a
//! publish applies them (so TTL, DEL and the caps hold across a restart).
//!
//! Damage: a record that fails its checksum with no valid record after it
//! is a torn tail (a write cut short by a crash): it is cut off with a
//! warning. One with valid records after it is corruption in the middle:
//! the bytes up to the next valid record are skipped with a warning naming
//! the offset, the rest is replayed, and the log is rewritten (compacted)
//! at once. A mailbox whose record was lost continues after a gap, so a
//! reader from before it is told `missed`.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::time::Instant;

use ::log::warn;

use super::Clock;
use super::record::{self, Corrupt, Decoded, Record};
use crate::store::{LocalStore, StoreLimits};

/// Bytes read per syscall.
const CHUNK: usize = 1 << 20;

pub(crate) struct Replayed {
    pub local: LocalStore,
    /// Where the valid log ends (appends go there).
    pub valid_len: u64,
    /// A log file was there (a restart, not a first start).
    pub existed: bool,
    /// Something was skipped: rewrite the log.
    pub damaged: bool,
    /// A torn tail was cut off.
    pub cut: bool,
    pub records: u64,
}

/// The log as a window over the file, refilled as records are taken.
struct Reader {
    file: File,
    buf: Vec<u8>,
    /// Where in `buf` the next record starts, and the file offset of buf[0].
    pos: usize,
    base: u64,
    eof: bool,
}

impl Reader {
    fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Reads at least one more chunk unless at the end; false at the end.
    fn fill(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.base += self.pos as u64;
            self.pos = 0;
        }
        let start = self.buf.len();
        self.buf.resize(start + CHUNK, 0);
        let mut got = 0;
        while got < CHUNK {
            match self.file.read(&mut self.buf[start + got..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.buf.truncate(start + got);
        Ok(got > 0)
    }

    /// The next record, or None at the end of what is valid.
    fn next(&mut self) -> io::Result<Result<Option<(Record<'_>, usize)>, Corrupt>> {
        loop {
            match record::decode(&self.buf[self.pos..]) {
                Ok(Decoded::NeedMore) => {
                    if !self.fill()? {
                        if self.pos < self.buf.len() {
                            // A record cut short at the very end.
                            return Ok(Err(Corrupt::Length(0)));
                        }
                        return Ok(Ok(None));
                    }
                }
                Ok(Decoded::Record(_, used)) => {
                    let start = self.pos;
                    self.pos += used;
                    // Decoded again to hand out a borrow of the buffer; the
                    // checksum was checked once, this only slices.
                    let Ok(Decoded::Record(r, _)) = record::decode(&self.buf[start..]) else {
                        unreachable!("the same bytes decoded a moment ago");
                    };
                    return Ok(Ok(Some((r, used))));
                }
                Err(c) => return Ok(Err(c)),
            }
        }
    }

    /// After corruption at `pos`: the next offset where a valid record
    /// starts, reading the rest of the file if need be. None: the damage
    /// runs to the end (a torn tail).
    fn resync(&mut self) -> io::Result<Option<u64>> {
        while self.fill()? {}
        let rest = &self.buf[self.pos..];
        for skip in 1..rest.len() {
            if let Ok(Decoded::Record(..)) = record::decode(&rest[skip..]) {
                self.pos += skip;
                return Ok(Some(self.offset()));
            }
        }
        Ok(None)
    }
}

pub(crate) fn replay(
    path: &Path,
    limits: StoreLimits,
    workers: usize,
    clock: &Clock,
    now: Instant,
) -> Result<Replayed, String> {
    let shown = path.display();
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Replayed {
                local: LocalStore::new(limits, workers),
                valid_len: 0,
                existed: false,
                damaged: false,
                cut: false,
                records: 0,
            });
        }
        Err(e) => return Err(format!("cannot read the disk store's log {shown}: {e}")),
    };
    let read_error = |e: io::Error| format!("cannot read the disk store's log {shown}: {e}");
    let mut reader = Reader {
        file,
        buf: Vec::new(),
        pos: 0,
        base: 0,
        eof: false,
    };
    // The first record says whose ids these are; without it the messages
    // are kept under a new epoch (their old cursors read as `missed`).
    let (local, mut damaged) = match reader.next().map_err(read_error)? {
        Ok(Some((
            Record::Head {
                store,
                next_generation,
            },
            _,
        ))) => {
            let local = LocalStore::with_epoch(limits.clone(), workers, store);
            local.raise_next_generation(next_generation.saturating_sub(1));
            (local, false)
        }
        Ok(None) => (LocalStore::new(limits, workers), false),
        _ => {
            warn!(
                "the disk store's log {shown} does not start with its header; its messages get new ids"
            );
            reader.pos = 0;
            (LocalStore::new(limits, workers), true)
        }
    };
    let mut records = 0u64;
    loop {
        let at = reader.offset();
        match reader.next().map_err(read_error)? {
            Ok(Some((r, _))) => {
                apply(&local, r, clock, now);
                records += 1;
            }
            Ok(None) => break,
            Err(why) => match reader.resync().map_err(read_error)? {
                Some(next) => {
                    warn!(
                        "the disk store's log {shown} is corrupt at offset {at} ({why}): skipped \
                         {} bytes up to the next valid record at {next}; the log will be rewritten",
                        next - at
                    );
                    damaged = true;
                }
                None => {
                    let len = reader.base + reader.buf.len() as u64;
                    warn!(
                        "the disk store's log {shown} ends in a torn record at offset {at} ({why}): \
                         cutting off its last {} bytes (a write cut short by a crash)",
                        len - at
                    );
                    return Ok(Replayed {
                        local,
                        valid_len: at,
                        existed: true,
                        damaged,
                        cut: true,
                        records,
                    });
                }
            },
        }
    }
    Ok(Replayed {
        local,
        valid_len: reader.offset(),
        existed: true,
        damaged,
        cut: false,
        records,
    })
}

fn apply(local: &LocalStore, record: Record<'_>, clock: &Clock, now: Instant) {
    match record {
        Record::Head {
            next_generation, ..
        } => local.raise_next_generation(next_generation.saturating_sub(1)),
        Record::Publish {
            mailbox,
            generation,
            seq,
            unix_ms,
            payload,
        } => local.restore_publish(
            mailbox,
            (generation, seq),
            clock.instant(unix_ms, now),
            payload.into(),
            now,
        ),
        Record::Delete {
            mailbox,
            generation,
        } => local.restore_delete(mailbox, generation, now),
        Record::State {
            mailbox,
            generation,
            last_seq,
            prev_generation,
            prev_last_seq,
        } => {
            let prev = (prev_generation != 0).then_some((prev_generation, prev_last_seq));
            local.restore_state(mailbox, (generation, last_seq), prev, now)
        }
    }
}
