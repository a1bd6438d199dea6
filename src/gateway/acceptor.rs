//! The acceptor thread: accepts backend connections and hands them out
//! round-robin, sweeps the store once a second, reloads the config on
//! SIGHUP (`reload`), and on
//! SIGTERM/SIGINT (or [`super::Gateway::stop`]) shuts the gateway down in
//! two steps: first every worker stops taking publishes and posts what it
//! announced; then every worker answers its polls, ends its streams and
//! drains. A `PUBLISH` reply's count is therefore true: no announcement
//! it counted is dropped by a shutdown.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use mio::net::{TcpListener, UnixListener};
use mio::{Events, Poll, Token};

use super::files::SocketFile;
use crate::net::BackendStream;
use crate::shared::{Shared, ToWorker};

pub const BACKEND_LISTENER: Token = Token(1);
pub const SIGNALS: Token = Token(2);
pub const STOP: Token = Token(3);
pub const BACKEND_TCP_LISTENER: Token = Token(4);
pub const RELOAD: Token = Token(5);

/// How often the acceptor expires messages and forgets idle mailboxes.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// While accept() fails for lack of file descriptors, how soon to retry:
/// the edge-triggered listener will not report the waiting backends again.
const ACCEPT_RETRY: Duration = Duration::from_millis(250);

pub struct Listeners {
    pub backend: UnixListener,
    pub backend_tcp: Option<TcpListener>,
}

/// The signal pipes (when the gateway handles signals itself).
pub struct Signals {
    pub stop: mio::net::UnixStream,
    pub reload: mio::net::UnixStream,
}

pub struct Acceptor {
    pub shared: Arc<Shared>,
    /// Workers' ids, as each has stopped publishing (`Shared::stopping`).
    pub stopped_acks: crossbeam_channel::Receiver<usize>,
    pub next_backend_worker: usize,
    /// accept() on a backend listener failed with EMFILE/ENFILE: retry
    /// soon.
    pub accept_blocked: bool,
    /// That was logged; said again only after an accept has worked.
    pub blocked_logged: bool,
    /// SIGHUP's config reload.
    pub reloader: super::reload::Reloader,
    /// The metrics listener's thread, stopped last.
    pub ops: Option<crate::ops::OpsHandle>,
}

impl Acceptor {
    /// Accepts until told to stop, then shuts the workers down.
    pub fn serve(
        mut self,
        mut poll: Poll,
        mut listeners: Listeners,
        mut signals: Option<Signals>,
        threads: Vec<std::thread::JoinHandle<()>>,
        socket_file: SocketFile,
    ) {
        let mut events = Events::with_capacity(256);
        let mut last_sweep = Instant::now();
        let mut trimmer = super::files::Trimmer::new();
        'serve: loop {
            let wait = if self.accept_blocked {
                ACCEPT_RETRY
            } else {
                SWEEP_EVERY
            };
            if let Err(e) = poll.poll(&mut events, Some(wait))
                && e.kind() != io::ErrorKind::Interrupted
            {
                error!("acceptor: poll failed: {e}");
                break;
            }
            if self.accept_blocked {
                self.accept_blocked = false;
                self.accept_backends(&mut listeners);
            }
            for event in events.iter() {
                match event.token() {
                    BACKEND_LISTENER | BACKEND_TCP_LISTENER => self.accept_backends(&mut listeners),
                    SIGNALS => {
                        if let Some(signals) = signals.as_mut() {
                            drain(&mut signals.stop);
                        }
                        break 'serve;
                    }
                    RELOAD => {
                        if let Some(signals) = signals.as_mut() {
                            drain(&mut signals.reload);
                        }
                        info!("SIGHUP received: reloading the config");
                        self.reloader.reload(&self.shared);
                    }
                    STOP => break 'serve,
                    _ => {}
                }
            }
            if last_sweep.elapsed() >= SWEEP_EVERY {
                self.shared.store.sweep(Instant::now());
                trimmer.observe(self.shared.store.memory_used());
                self.shared.sessions.sweep(Instant::now());
                last_sweep = Instant::now();
            }
        }

        info!("shutting down: no longer accepting, answering waiting clients");
        self.shared
            .draining
            .store(true, std::sync::atomic::Ordering::Release);
        // Closing the listeners first means new clients are refused at once
        // instead of queueing behind a gateway that is going away.
        drop(listeners);
        self.stop_publishing();
        for peer in self.shared.peers.iter() {
            peer.post(ToWorker::Shutdown);
        }
        for thread in threads {
            if thread.join().is_err() {
                error!("a worker thread panicked");
            }
        }
        // Last, once no worker can publish or wait for a reply any more:
        // the disk store writes what is left and marks itself clean.
        self.shared.store.close();
        drop(socket_file);
        if let Some(ops) = self.ops.take() {
            ops.stop();
        }
        info!("stopped");
    }

    /// Shutdown's first step, on every worker, and wait until each has
    /// posted the announcements of the publishes it acknowledged.
    fn stop_publishing(&self) {
        let shared = &self.shared;
        let deadline = Instant::now() + shared.config().server.shutdown_timeout;
        let deadline_ms = deadline.duration_since(shared.started).as_millis() as u64;
        shared
            .stop_deadline_ms
            .store(deadline_ms, std::sync::atomic::Ordering::Release);
        shared
            .stopping
            .store(true, std::sync::atomic::Ordering::Release);
        for peer in self.shared.peers.iter() {
            peer.wake();
        }
        for _ in self.shared.peers.iter() {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.stopped_acks.recv_timeout(left).is_err() {
                warn!("a worker did not stop publishing in time; shutting down anyway");
                return;
            }
        }
    }

    /// Backends are few and long-lived: round-robin is placement enough.
    fn hand_backend(&mut self, sock: BackendStream) {
        let worker = self.next_backend_worker % self.shared.peers.len();
        self.next_backend_worker += 1;
        self.shared.peers[worker].post(ToWorker::Backend(sock));
    }

    fn accept_backends(&mut self, listeners: &mut Listeners) {
        loop {
            let accepted = match listeners.backend.accept() {
                Ok((sock, _)) => Ok(BackendStream::Unix(sock)),
                Err(e) => Err(e),
            };
            if !self.take(accepted) {
                break;
            }
        }
        let Some(tcp) = listeners.backend_tcp.as_mut() else {
            return;
        };
        loop {
            let accepted = match tcp.accept() {
                Ok((sock, _)) => {
                    let _ = sock.set_nodelay(true);
                    Ok(BackendStream::Tcp(sock))
                }
                Err(e) => Err(e),
            };
            if !self.take(accepted) {
                break;
            }
        }
    }

    /// Hands out one accepted backend; false when the listener is drained
    /// or blocked.
    fn take(&mut self, accepted: io::Result<BackendStream>) -> bool {
        match accepted {
            Ok(sock) => {
                self.blocked_logged = false;
                self.hand_backend(sock);
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => true,
            Err(e) => {
                // EMFILE/ENFILE: the backends wait in the backlog; retry.
                if !self.blocked_logged {
                    warn!(
                        "backend accept failed: {e}; retrying every {ACCEPT_RETRY:?} until it works"
                    );
                    self.blocked_logged = true;
                }
                self.accept_blocked = true;
                false
            }
        }
    }
}

fn drain(pipe: &mut mio::net::UnixStream) {
    let mut buf = [0u8; 64];
    while matches!(io::Read::read(pipe, &mut buf), Ok(n) if n > 0) {}
}
