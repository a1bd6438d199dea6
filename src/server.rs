//! Start-up, the acceptor and shutdown.
//!
//! The main thread binds the sockets, starts the workers and then becomes the
//! acceptor. Browsers are accepted by the workers themselves, each waiting
//! on the shared listening socket (EPOLLEXCLUSIVE: one idle worker is woken
//! per arrival), with the caps of [`admit`] (503 at once rather than leaving
//! anyone hanging). The acceptor accepts backend connections and hands them
//! out round-robin, sweeps the store once a second, and on SIGTERM/SIGINT
//! closes the listeners, tells the workers to finish, waits for them and
//! removes the backend socket file.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use mio::net::{TcpListener, UnixListener};
use mio::{Events, Interest, Poll, Token};

use crate::backend::BackendStream;
use crate::config::Config;
use crate::mailbox::{Store, StoreLimits};
use crate::metrics::{self, Metrics};
use crate::reactor::{IpLimiter, Peer, Shared, ToWorker, WAKER, Worker};

const BACKEND_LISTENER: Token = Token(1);
const BACKEND_TCP_LISTENER: Token = Token(4);
const SIGNALS: Token = Token(2);
const STOP: Token = Token(3);

/// How often the acceptor expires messages and forgets idle mailboxes.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// How soon backend accepts that failed for lack of file descriptors are
/// retried. Nothing announces a freed descriptor, and backends already
/// queued are not announced again, so without a retry they waited until
/// another backend connected.
const BACKEND_ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// File descriptors the gateway needs besides client connections: listeners,
/// pollers, wakers, backends, logs.
const RESERVED_FDS: u64 = 64;

#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// Runs the gateway until SIGTERM or SIGINT.
pub fn run(config: Config) -> Result<(), StartError> {
    let gateway = Gateway::launch(config, true)?;
    gateway.wait();
    Ok(())
}

/// A gateway running in this process: what `run` uses, and what tests and
/// benchmarks embed. The acceptor runs on its own thread.
pub struct Gateway {
    http_addr: SocketAddr,
    stopper: Arc<mio::Waker>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl Gateway {
    /// Binds, starts the workers and the acceptor, and returns at once.
    /// Signals are left to the embedding program; call [`Gateway::stop`].
    pub fn start(config: Config) -> Result<Gateway, StartError> {
        Gateway::launch(config, false)
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Shuts down as SIGTERM would, and waits until it is done.
    pub fn stop(self) {
        let _ = self.stopper.wake();
        self.wait();
    }

    /// Waits until the gateway has stopped.
    pub fn wait(mut self) {
        if let Some(acceptor) = self.acceptor.take()
            && acceptor.join().is_err()
        {
            error!("the acceptor thread panicked");
        }
    }

    fn launch(config: Config, handle_signals: bool) -> Result<Gateway, StartError> {
        raise_open_file_limit(
            config.server.max_connections as u64,
            config.worker_count() as u64,
        );
        let workers = config.worker_count();

        let addr = SocketAddr::new(config.server.bind, config.server.port);
        let std_listener = std::net::TcpListener::bind(addr)
            .map_err(|e| StartError(format!("cannot listen for HTTP on {addr}: {e}")))?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| StartError(format!("cannot configure {addr}: {e}")))?;
        let local = std_listener.local_addr().unwrap_or(addr);
        // Workers accept browsers themselves, each with its own handle on
        // the one listening socket: no hand-off between threads per
        // connection. The socket closes when the last worker lets go of it.
        let mut worker_listeners = Vec::with_capacity(workers);
        for _ in 0..workers {
            worker_listeners.push(TcpListener::from_std(std_listener.try_clone().map_err(
                |e| StartError(format!("cannot share the listener on {addr}: {e}")),
            )?));
        }
        drop(std_listener);

        let auth = crate::auth::Auth::from_config(&config.auth).map_err(StartError)?;
        let socket_path = config.mailbox.backend_socket.clone();
        let mut backend = bind_backend_socket(&socket_path, &config)?;
        let socket_file = SocketFile(socket_path.clone());
        let mut backend_tcp = match config.mailbox.backend_port {
            0 => None,
            port => {
                // The config loader refuses a non-loopback bind without a password.
                let addr = SocketAddr::new(config.mailbox.backend_bind, port);
                let listener = std::net::TcpListener::bind(addr).map_err(|e| {
                    StartError(format!("cannot listen for backends on {addr}: {e}"))
                })?;
                listener
                    .set_nonblocking(true)
                    .map_err(|e| StartError(format!("cannot configure {addr}: {e}")))?;
                info!(
                    "backend TCP listener on {}",
                    listener.local_addr().unwrap_or(addr)
                );
                Some(TcpListener::from_std(listener))
            }
        };

        let poll = Poll::new().map_err(|e| StartError(format!("cannot create poller: {e}")))?;
        let registry = poll.registry();
        let stopper = Arc::new(
            mio::Waker::new(registry, STOP)
                .map_err(|e| StartError(format!("cannot create waker: {e}")))?,
        );
        let mut signals = None;
        if handle_signals {
            let (sig_rx, sig_tx) = std::os::unix::net::UnixStream::pair()
                .map_err(|e| StartError(format!("cannot create signal pipe: {e}")))?;
            sig_rx
                .set_nonblocking(true)
                .map_err(|e| StartError(format!("cannot create signal pipe: {e}")))?;
            let mut sig_rx = mio::net::UnixStream::from_std(sig_rx);
            for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                let tx = sig_tx
                    .try_clone()
                    .map_err(|e| StartError(format!("cannot set up signal handling: {e}")))?;
                signal_hook::low_level::pipe::register(signal, tx)
                    .map_err(|e| StartError(format!("cannot handle signal {signal}: {e}")))?;
            }
            registry
                .register(&mut sig_rx, SIGNALS, Interest::READABLE)
                .map_err(|e| StartError(format!("cannot register signal pipe: {e}")))?;
            signals = Some(sig_rx);
        }
        // Writing to a closed socket must be an error on that socket, not a
        // process-killing signal.
        unsafe_ignore_sigpipe();
        registry
            .register(&mut backend, BACKEND_LISTENER, Interest::READABLE)
            .and_then(|_| match backend_tcp.as_mut() {
                Some(tcp) => registry.register(tcp, BACKEND_TCP_LISTENER, Interest::READABLE),
                None => Ok(()),
            })
            .map_err(|e| StartError(format!("cannot register listeners: {e}")))?;

        let mut polls = Vec::with_capacity(workers);
        let mut peers = Vec::with_capacity(workers);
        let mut inboxes = Vec::with_capacity(workers);
        for _ in 0..workers {
            let worker_poll =
                Poll::new().map_err(|e| StartError(format!("cannot create poller: {e}")))?;
            let waker = mio::Waker::new(worker_poll.registry(), WAKER)
                .map_err(|e| StartError(format!("cannot create waker: {e}")))?;
            let (tx, rx) = crossbeam_channel::unbounded();
            peers.push(Peer::new(tx, waker));
            polls.push(worker_poll);
            inboxes.push(rx);
        }
        let m = &config.mailbox;
        let store = Store::new(
            StoreLimits {
                max_messages: m.max_messages,
                message_ttl: m.message_ttl,
                max_message_size: m.max_message_size,
                max_mailboxes: m.max_mailboxes,
                max_subscribers: m.max_subscribers,
                max_mailbox_bytes: m.max_mailbox_bytes,
                max_memory: m.max_memory,
            },
            workers,
        );
        let shared = Arc::new(Shared {
            config,
            auth,
            store,
            peers,
            metrics: Metrics::default(),
            ip_limiter: IpLimiter::default(),
            started: Instant::now(),
        });
        let mut threads = Vec::with_capacity(workers);
        for (id, ((worker_poll, inbox), listener)) in polls
            .into_iter()
            .zip(inboxes)
            .zip(worker_listeners)
            .enumerate()
        {
            let worker = Worker::new(id, worker_poll, inbox, listener, shared.clone())
                .map_err(|e| StartError(format!("cannot register the HTTP listener: {e}")))?;
            let thread = std::thread::Builder::new()
                .name(format!("worker-{id}"))
                .spawn(move || worker.run())
                .map_err(|e| StartError(format!("cannot start worker thread: {e}")))?;
            threads.push(thread);
        }
        info!(
            "cometbox {} listening for HTTP on {local} ({workers} workers), backend socket at {}",
            env!("CARGO_PKG_VERSION"),
            socket_path.display()
        );
        let acceptor = Acceptor {
            shared,
            next_backend_worker: 0,
            backend_stall: AcceptStall::default(),
            backend_tcp_stall: AcceptStall::default(),
        };
        let thread = std::thread::Builder::new()
            .name("acceptor".into())
            .spawn(move || {
                let listeners = Listeners {
                    backend,
                    backend_tcp,
                };
                acceptor.serve(poll, listeners, signals, threads, socket_file)
            })
            .map_err(|e| StartError(format!("cannot start acceptor thread: {e}")))?;
        Ok(Gateway {
            http_addr: local,
            stopper,
            acceptor: Some(thread),
        })
    }
}

struct Listeners {
    backend: UnixListener,
    backend_tcp: Option<TcpListener>,
}

struct Acceptor {
    shared: Arc<Shared>,
    next_backend_worker: usize,
    backend_stall: AcceptStall,
    backend_tcp_stall: AcceptStall,
}

/// A backend listener whose accepts failed with EMFILE/ENFILE: the rest wait
/// in the kernel's backlog and are retried every `BACKEND_ACCEPT_RETRY`
/// until it is drained. Logged once per such episode, not per retry.
#[derive(Default)]
struct AcceptStall {
    stalled: bool,
}

impl AcceptStall {
    fn failed(&mut self, e: &io::Error) {
        if !matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
            warn!("backend accept failed: {e}");
            return;
        }
        if !self.stalled {
            warn!(
                "backend accept failed: {e}; backends wait in the kernel's backlog, retrying every {} ms",
                BACKEND_ACCEPT_RETRY.as_millis()
            );
        }
        self.stalled = true;
    }

    /// The backlog is empty (accept would block): the episode is over.
    fn drained(&mut self) {
        if std::mem::take(&mut self.stalled) {
            info!("backend accepts caught up with the backlog");
        }
    }
}

impl Acceptor {
    /// Accepts until told to stop, then shuts the workers down.
    fn serve(
        mut self,
        mut poll: Poll,
        mut listeners: Listeners,
        mut signals: Option<mio::net::UnixStream>,
        threads: Vec<std::thread::JoinHandle<()>>,
        socket_file: SocketFile,
    ) {
        let mut events = Events::with_capacity(256);
        let mut last_sweep = Instant::now();
        'serve: loop {
            let stalled = self.backend_stall.stalled || self.backend_tcp_stall.stalled;
            let timeout = match stalled {
                true => BACKEND_ACCEPT_RETRY,
                false => SWEEP_EVERY,
            };
            if let Err(e) = poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                error!("acceptor: poll failed: {e}");
                break;
            }
            for event in events.iter() {
                match event.token() {
                    BACKEND_LISTENER => self.accept_backend(&mut listeners),
                    BACKEND_TCP_LISTENER => self.accept_backend_tcp(&mut listeners),
                    SIGNALS => {
                        if let Some(pipe) = signals.as_mut() {
                            let mut drain = [0u8; 64];
                            while matches!(io::Read::read(pipe, &mut drain), Ok(n) if n > 0) {}
                        }
                        break 'serve;
                    }
                    STOP => break 'serve,
                    _ => {}
                }
            }
            if self.backend_stall.stalled {
                self.accept_backend(&mut listeners);
            }
            if self.backend_tcp_stall.stalled {
                self.accept_backend_tcp(&mut listeners);
            }
            if last_sweep.elapsed() >= SWEEP_EVERY {
                self.shared.store.sweep(Instant::now());
                last_sweep = Instant::now();
            }
        }

        info!("shutting down: no longer accepting, answering waiting clients");
        // Closing the listeners first means new clients are refused at once
        // instead of queueing behind a gateway that is going away.
        drop(listeners);
        for peer in &self.shared.peers {
            peer.post(ToWorker::Shutdown);
        }
        for thread in threads {
            if thread.join().is_err() {
                error!("a worker thread panicked");
            }
        }
        drop(socket_file);
        info!("stopped");
    }

    /// Backends are few and long-lived: round-robin is placement enough.
    fn hand_backend(&mut self, sock: BackendStream) {
        let worker = self.next_backend_worker % self.shared.peers.len();
        self.next_backend_worker += 1;
        self.shared.peers[worker].post(ToWorker::Backend(sock));
    }

    fn accept_backend_tcp(&mut self, listeners: &mut Listeners) {
        let Some(listener) = listeners.backend_tcp.as_mut() else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((sock, _)) => {
                    let _ = sock.set_nodelay(true);
                    self.hand_backend(BackendStream::Tcp(sock));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return self.backend_tcp_stall.drained();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.backend_tcp_stall.failed(&e),
            }
        }
    }

    fn accept_backend(&mut self, listeners: &mut Listeners) {
        loop {
            match listeners.backend.accept() {
                Ok((sock, _)) => self.hand_backend(BackendStream::Unix(sock)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return self.backend_stall.drained();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.backend_stall.failed(&e),
            }
        }
    }
}

/// Answers 503 on a connection we will not serve, without waiting on it.
/// Applies the connection caps to a browser connection a worker just
/// accepted: true if it may stay (and is now counted as open); false if it
/// was answered 503 and is to be dropped. Never leaves a client hanging.
pub(crate) fn admit(shared: &Shared, sock: &mut mio::net::TcpStream, addr: SocketAddr) -> bool {
    let server = &shared.config.server;
    let metrics = &shared.metrics;
    metrics::inc(&metrics.connections_total);
    let open = metrics
        .connections_open
        .load(std::sync::atomic::Ordering::Relaxed);
    if open >= server.max_connections as u64 {
        metrics::inc(&metrics.connections_rejected);
        refuse(sock, "too many connections");
        return false;
    }
    if server.max_connections_per_ip > 0
        && !shared
            .ip_limiter
            .acquire(addr.ip(), server.max_connections_per_ip)
    {
        metrics::inc(&metrics.connections_rejected_per_ip);
        refuse(sock, "too many connections from your address");
        return false;
    }
    // Small writes (one message) must not wait for Nagle.
    let _ = sock.set_nodelay(true);
    metrics::inc(&metrics.connections_open);
    true
}

fn refuse(sock: &mut mio::net::TcpStream, why: &str) {
    let body = format!("{{\"error\":\"{why}\"}}\n");
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nServer: cometbox/{}\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    let _ = sock.write(response.as_bytes());
    let _ = sock.shutdown(std::net::Shutdown::Write);
}

/// Removes the backend socket file when the gateway stops, however it stops.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn bind_backend_socket(path: &Path, config: &Config) -> Result<UnixListener, StartError> {
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

fn unsafe_ignore_sigpipe() {
    // SAFETY: setting SIGPIPE to SIG_IGN is async-signal-safe and global;
    // Rust's runtime does the same for the main thread of binaries.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Raises the soft open-file limit to the hard limit and warns when
/// `server.max-connections` cannot be met.
fn raise_open_file_limit(max_connections: u64, workers: u64) {
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
