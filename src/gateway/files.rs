//! What start-up does to the process and the file system: the backend
//! socket file (created with its final mode, group, and removed at exit),
//! the open-file limit, SIGPIPE.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use log::{info, warn};
use mio::net::UnixListener;

use super::StartError;
use crate::config::Config;

/// File descriptors the gateway needs besides client connections: listeners,
/// pollers, wakers, backends, logs.
const RESERVED_FDS: u64 = 64;

/// Removes the backend socket file when the gateway stops, however it stops.
pub struct SocketFile(pub PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub fn bind_backend_socket(path: &Path, config: &Config) -> Result<UnixListener, StartError> {
    let shown = path.display();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let meta = std::fs::metadata(dir)
            .map_err(|e| StartError(format!("backend socket directory {}: {e}", dir.display())))?;
        let mode = meta.permissions().mode();
        // In a world-writable directory without the sticky bit anyone could
        // replace our socket with their own and receive the app's messages.
        if mode & 0o002 != 0 && mode & 0o1000 == 0 {
            return Err(StartError(format!(
                "refusing to create the backend socket in {}: the directory is world-writable without the sticky bit",
                dir.display()
            )));
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(StartError(format!(
                        "another process is listening on the backend socket {shown} (is cometbox already running?)"
                    )));
                }
                Err(_) => {
                    info!("removing stale backend socket {shown} left by an earlier run");
                    std::fs::remove_file(path).map_err(|e| {
                        StartError(format!("cannot remove stale socket {shown}: {e}"))
                    })?;
                }
            }
        }
        Ok(_) => {
            return Err(StartError(format!(
                "{shown} exists and is not a socket; refusing to replace it (mailbox.backend-socket)"
            )));
        }
        Err(_) => {}
    }
    let mode = config.mailbox.backend_socket_mode;
    // Create the socket with its final permissions: between bind() and a
    // later chmod() it would be open to anyone the umask lets in.
    let old_umask = unsafe_set_umask(!mode & 0o777);
    let bound = std::os::unix::net::UnixListener::bind(path);
    unsafe_set_umask(old_umask);
    let listener =
        bound.map_err(|e| StartError(format!("cannot create backend socket {shown}: {e}")))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| StartError(format!("cannot set permissions of {shown}: {e}")))?;
    if let Some(group) = &config.mailbox.backend_socket_group {
        set_group(path, group)?;
    }
    listener
        .set_nonblocking(true)
        .map_err(|e| StartError(format!("cannot configure {shown}: {e}")))?;
    Ok(UnixListener::from_std(listener))
}

fn set_group(path: &Path, group: &str) -> Result<(), StartError> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let name =
        CString::new(group).map_err(|_| StartError(format!("invalid group name {group:?}")))?;
    // SAFETY: getgrnam reads a NUL-terminated name and returns a pointer into
    // static storage or null; we copy the gid out at once, before any other
    // thread exists (start-up).
    let gid = unsafe {
        let entry = libc::getgrnam(name.as_ptr());
        if entry.is_null() {
            return Err(StartError(format!(
                "mailbox.backend-socket-group: no group named {group:?}"
            )));
        }
        (*entry).gr_gid
    };
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| StartError("socket path contains NUL".into()))?;
    // SAFETY: a valid C path; uid -1 leaves the owner unchanged.
    if unsafe { libc::chown(cpath.as_ptr(), u32::MAX, gid) } != 0 {
        return Err(StartError(format!(
            "cannot give the backend socket to group {group:?}: {}",
            io::Error::last_os_error()
        )));
    }
    Ok(())
}

fn unsafe_set_umask(mask: u32) -> u32 {
    // SAFETY: umask only swaps the process's file creation mask.
    unsafe { libc::umask(mask as libc::mode_t) as u32 }
}

pub fn unsafe_ignore_sigpipe() {
    // SAFETY: setting SIGPIPE to SIG_IGN is async-signal-safe and global;
    // Rust's runtime does the same for the main thread of binaries.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Raises the soft open-file limit to the hard limit and warns when
/// `server.max-connections` cannot be met.
pub fn raise_open_file_limit(max_connections: u64, workers: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            warn!(
                "cannot read the open-file limit: {}",
                io::Error::last_os_error()
            );
            return;
        }
        if limit.rlim_cur < limit.rlim_max {
            let wanted = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                limit.rlim_cur = limit.rlim_max;
            } else {
                warn!(
                    "cannot raise the open-file limit: {}",
                    io::Error::last_os_error()
                );
            }
        }
    }
    let needed = max_connections + RESERVED_FDS + workers * 2;
    if needed > limit.rlim_cur {
        warn!(
            "server.max-connections = {max_connections} needs about {needed} open files but the limit is {}; \
             connections beyond it will wait in the kernel's backlog (raise `ulimit -Hn` or lower server.max-connections)",
            limit.rlim_cur
        );
    } else {
        info!(
            "open-file limit {} (server.max-connections = {max_connections})",
            limit.rlim_cur
        );
    }
}

/// After a spike, hands memory the gateway freed back to the kernel: glibc
/// keeps freed heap memory in its arenas for reuse, so RSS stays at the
/// spike's peak (docs/BENCHMARKS.md measured 642 MiB staying at 620 after
/// every mailbox was deleted; `malloc_trim` brought it to 5). Trimming
/// locks each arena while it walks it, so it runs only once the store's
/// memory has fallen to half its peak and by at least [`TRIM_AFTER`].
pub struct Trimmer {
    peak: usize,
}

/// The least fall in the store's memory worth a trim.
const TRIM_AFTER: usize = 64 * 1024 * 1024;

impl Trimmer {
    pub fn new() -> Trimmer {
        Trimmer { peak: 0 }
    }

    /// Called after each store sweep with the store's memory in use.
    pub fn observe(&mut self, used: usize) {
        self.peak = self.peak.max(used);
        if self.peak - used >= TRIM_AFTER && used <= self.peak / 2 {
            let released = trim();
            log::debug!(
                "store memory fell from {} to {} bytes; returned freed memory to the system ({released})",
                self.peak,
                used
            );
            self.peak = used;
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() -> &'static str {
    // SAFETY: malloc_trim only walks glibc's own arenas under their locks.
    let released = unsafe { libc::malloc_trim(0) };
    if released == 1 { "some" } else { "none" }
}

/// Other allocators (musl, the BSDs' and macOS's) return memory on their
/// own or offer no such call.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> &'static str {
    "nothing to do"
}

#[cfg(test)]
mod trim_tests {
    use super::*;

    #[test]
    fn trims_only_after_a_large_fall_from_the_peak() {
        let mut t = Trimmer::new();
        let mib = 1024 * 1024;
        t.observe(100 * mib);
        t.observe(60 * mib); // fell 40 MiB: not enough
        assert_eq!(t.peak, 100 * mib);
        t.observe(30 * mib); // fell 70 MiB, to under half: trim
        assert_eq!(t.peak, 30 * mib, "the peak starts again from here");
        t.observe(200 * mib);
        t.observe(120 * mib); // fell 80 MiB but not to half
        assert_eq!(t.peak, 200 * mib);
    }
}
