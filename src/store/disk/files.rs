//! The disk store's directory: `log` (the append-only log), `log.compact`
//! (a compaction being written), `clean` (present only between a clean
//! shutdown and the next start) and `lock` (held with flock(2) while a
//! gateway uses the directory, so two never write one log).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub(crate) struct Dir {
    path: PathBuf,
    /// Held for the flock; closing it lets the directory go.
    _lock: File,
}

impl Dir {
    /// Creates the directory if missing and takes its lock. Errors say
    /// which key, which path and why.
    pub(crate) fn open(path: &Path) -> Result<Dir, String> {
        crate::config::check_store_dir(path)?;
        let shown = path.display();
        std::fs::create_dir_all(path)
            .map_err(|e| format!("mailbox.store-dir {shown} cannot be created: {e}"))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join("lock"))
            .map_err(|e| format!("mailbox.store-dir {shown} cannot be written: {e}"))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            return Err(match e.kind() {
                io::ErrorKind::WouldBlock => format!(
                    "mailbox.store-dir {shown} is in use by another cometbox (its lock file is held)"
                ),
                _ => format!("cannot lock mailbox.store-dir {shown}: {e}"),
            });
        }
        // A compaction cut short by a crash; the log it was to replace is
        // whole.
        let _ = std::fs::remove_file(path.join("log.compact"));
        Ok(Dir {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    pub(crate) fn log_path(&self) -> PathBuf {
        self.path.join("log")
    }

    pub(crate) fn compact_path(&self) -> PathBuf {
        self.path.join("log.compact")
    }

    fn clean_path(&self) -> PathBuf {
        self.path.join("clean")
    }

    /// Whether the last gateway on this directory shut down cleanly.
    pub(crate) fn was_clean(&self) -> bool {
        self.clean_path().exists()
    }

    /// From now on a crash must be noticed: remove the marker, durably.
    pub(crate) fn mark_running(&self) -> io::Result<()> {
        match std::fs::remove_file(self.clean_path()) {
            Ok(()) => self.sync(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// After the last fsync of the log at shutdown.
    pub(crate) fn mark_clean(&self) -> io::Result<()> {
        File::create(self.clean_path())?.sync_all()?;
        self.sync()
    }

    /// fsync of the directory, so a created, renamed or removed file is
    /// durable.
    pub(crate) fn sync(&self) -> io::Result<()> {
        File::open(&self.path)?.sync_all()
    }
}
