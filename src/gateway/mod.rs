//! Start-up and the gateway's threads.
//!
//! [`Gateway::launch`] binds the sockets, starts one worker thread per core
//! and a spawned acceptor thread, and returns. Browsers are accepted by the
//! workers themselves, each waiting on the shared listening socket (on Linux
//! with EPOLLEXCLUSIVE: one idle worker is woken per arrival), with the caps
//! of `reactor::admission`. The acceptor (`acceptor`) takes backend connections,
//! sweeps the store and runs shutdown; `files` holds what start-up does to
//! the file system and the process.

mod acceptor;
mod files;
mod reload;

pub use reload::apply_log_level;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use log::{error, info};
use mio::net::TcpListener;
use mio::{Interest, Poll};

use crate::config::{Config, StoreKind};
use crate::metrics::Metrics;
use crate::reactor::{WAKER, Worker};
use crate::session::Sessions;
use crate::shared::{IpLimiter, Peer, PeerOutlet, Shared};
use crate::store::{DiskStore, RedisStore, Store, StoreLimits};
use acceptor::{Acceptor, Listeners, Signals};
use reload::Reloader;

#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

fn start_error(what: &str) -> impl Fn(std::io::Error) -> StartError + '_ {
    move |e| StartError(format!("{what}: {e}"))
}

/// Runs the gateway until SIGTERM or SIGINT. SIGHUP has no file to
/// re-read: use [`run_loaded`] for that.
pub fn run(config: Config) -> Result<(), StartError> {
    let gateway = Gateway::launch(config, true, Reloader::none())?;
    gateway.wait();
    Ok(())
}

/// Runs the gateway from a loaded config file until SIGTERM or SIGINT;
/// SIGHUP re-reads that file (`reload`).
pub fn run_loaded(loaded: crate::config::Loaded) -> Result<(), StartError> {
    let reloader = Reloader {
        path: Some(loaded.path),
        settings: loaded.settings,
    };
    let gateway = Gateway::launch(loaded.config, true, reloader)?;
    gateway.wait();
    Ok(())
}

impl Reloader {
    fn none() -> Reloader {
        Reloader {
            path: None,
            settings: Vec::new(),
        }
    }
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
        Gateway::launch(config, false, Reloader::none())
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

    fn launch(
        config: Config,
        handle_signals: bool,
        reloader: Reloader,
    ) -> Result<Gateway, StartError> {
        files::raise_open_file_limit(
            config.server.max_connections as u64,
            config.worker_count() as u64,
        );
        let workers = config.worker_count();

        let (local, worker_listeners) = http_listeners(&config, workers)?;

        let auth = crate::auth::Auth::from_config(&config.auth).map_err(StartError)?;
        let socket_path = config.mailbox.backend_socket.clone();
        let mut backend = files::bind_backend_socket(&socket_path, &config)?;
        let socket_file = files::SocketFile(socket_path.clone());
        let mut backend_tcp = backend_tcp_listener(&config)?;

        let poll = Poll::new().map_err(start_error("cannot create poller"))?;
        let registry = poll.registry();
        let stopper = Arc::new(
            mio::Waker::new(registry, acceptor::STOP)
                .map_err(start_error("cannot create waker"))?,
        );
        let signals = if handle_signals {
            Some(watch_signals(registry)?)
        } else {
            None
        };
        // Writing to a closed socket must be an error on that socket, not a
        // process-killing signal.
        files::unsafe_ignore_sigpipe();
        registry
            .register(&mut backend, acceptor::BACKEND_LISTENER, Interest::READABLE)
            .and_then(|_| match backend_tcp.as_mut() {
                Some(tcp) => {
                    registry.register(tcp, acceptor::BACKEND_TCP_LISTENER, Interest::READABLE)
                }
                None => Ok(()),
            })
            .map_err(start_error("cannot register listeners"))?;

        let mut polls = Vec::with_capacity(workers);
        let mut peers = Vec::with_capacity(workers);
        let mut inboxes = Vec::with_capacity(workers);
        for _ in 0..workers {
            let worker_poll = Poll::new().map_err(start_error("cannot create poller"))?;
            let waker = mio::Waker::new(worker_poll.registry(), WAKER)
                .map_err(start_error("cannot create waker"))?;
            let (tx, rx) = crossbeam_channel::unbounded();
            peers.push(Peer::new(tx, waker));
            polls.push(worker_poll);
            inboxes.push(rx);
        }
        let peers: Arc<[Peer]> = peers.into();
        let sessions = crate::shared::sessions_for(&config);
        let store = open_store(&config, workers, &peers, &sessions)?;
        let (stopped, stopped_acks) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            config: arc_swap::ArcSwap::from_pointee(config),
            auth: arc_swap::ArcSwapOption::from(auth.map(Arc::new)),
            draining: std::sync::atomic::AtomicBool::new(false),
            event_listeners: std::sync::atomic::AtomicU64::new(0),
            store,
            peers,
            metrics: Metrics::default(),
            ip_limiter: IpLimiter::default(),
            backend_budget: crate::shared::Budget::new(crate::backend::MAX_COMMANDS_TOTAL),
            stopping: std::sync::atomic::AtomicBool::new(false),
            stopped,
            stop_deadline_ms: std::sync::atomic::AtomicU64::new(u64::MAX),
            started: Instant::now(),
            sessions,
        });
        let metrics_listen = shared.config().metrics.listen;
        let ops = crate::ops::spawn(shared.clone()).map_err(|e| {
            StartError(format!(
                "cannot listen for metrics on {}: {e}",
                metrics_listen.map_or("-".to_string(), |a| a.to_string())
            ))
        })?;
        let mut threads = Vec::with_capacity(workers);
        for (id, ((worker_poll, inbox), listener)) in polls
            .into_iter()
            .zip(inboxes)
            .zip(worker_listeners)
            .enumerate()
        {
            let worker = Worker::new(id, worker_poll, inbox, listener, shared.clone())
                .map_err(start_error("cannot register the HTTP listener"))?;
            let thread = std::thread::Builder::new()
                .name(format!("worker-{id}"))
                .spawn(move || worker.run())
                .map_err(start_error("cannot start worker thread"))?;
            threads.push(thread);
        }
        info!(
            "cometbox {} listening for HTTP on {local} ({workers} workers), backend socket at {}",
            env!("CARGO_PKG_VERSION"),
            socket_path.display()
        );
        let acceptor = Acceptor {
            shared,
            stopped_acks,
            next_backend_worker: 0,
            accept_blocked: false,
            blocked_logged: false,
            reloader,
            ops: Some(ops),
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
            .map_err(start_error("cannot start acceptor thread"))?;
        Ok(Gateway {
            http_addr: local,
            stopper,
            acceptor: Some(thread),
        })
    }
}

/// The HTTP listening socket, one handle on it per worker. Workers accept
/// browsers themselves, each with its own handle on the one listening
/// socket: no hand-off between threads per connection. The socket closes
/// when the last worker lets go of it.
fn http_listeners(
    config: &Config,
    workers: usize,
) -> Result<(SocketAddr, Vec<TcpListener>), StartError> {
    let addr = SocketAddr::new(config.server.bind, config.server.port);
    let std_listener = crate::net::listen(addr, config.server.listen_backlog)
        .map_err(|e| StartError(format!("cannot listen for HTTP on {addr}: {e}")))?;
    let local = std_listener.local_addr().unwrap_or(addr);
    let mut worker_listeners = Vec::with_capacity(workers);
    for _ in 0..workers {
        let handle = std_listener
            .try_clone()
            .map_err(start_error(&format!("cannot share the listener on {addr}")))?;
        worker_listeners.push(TcpListener::from_std(handle));
    }
    drop(std_listener);
    Ok((local, worker_listeners))
}

/// `mailbox.backend-port`'s TCP listener for backends, if configured.
fn backend_tcp_listener(config: &Config) -> Result<Option<TcpListener>, StartError> {
    Ok(match config.mailbox.backend_port {
        0 => None,
        port => {
            // The config loader refuses a non-loopback bind without a password.
            let addr = SocketAddr::new(config.mailbox.backend_bind, port);
            let listener = crate::net::listen(addr, config.server.listen_backlog).map_err(
                start_error(&format!("cannot listen for backends on {addr}")),
            )?;
            info!(
                "backend TCP listener on {}",
                listener.local_addr().unwrap_or(addr)
            );
            Some(TcpListener::from_std(listener))
        }
    })
}

/// The store the config names: with `cluster.redis` the Redis-backed one
/// (its threads start here; Redis need not be up yet), else per
/// `mailbox.store` in memory or on disk (its log is replayed here, before
/// the gateway says it listens). The two are not combined (config check).
fn open_store(
    config: &Config,
    workers: usize,
    peers: &Arc<[Peer]>,
    sessions: &Arc<Sessions>,
) -> Result<Store, StartError> {
    let limits = StoreLimits::from_config(&config.mailbox);
    let outlet = Arc::new(PeerOutlet {
        peers: peers.clone(),
        sessions: sessions.clone(),
    });
    let m = &config.mailbox;
    if let Some(addr) = &config.cluster.redis {
        let store =
            RedisStore::start(&config.cluster, limits, workers, outlet).map_err(StartError)?;
        info!(
            "cluster mode: mailboxes shared through redis at {addr}, key prefix {:?}",
            config.cluster.key_prefix
        );
        return Ok(Store::Redis(store));
    }
    Ok(match m.store {
        StoreKind::Memory => Store::local(limits, workers),
        StoreKind::Disk => Store::Disk(
            DiskStore::open(&m.store_dir, limits, workers, m.store_fsync, outlet)
                .map_err(StartError)?,
        ),
    })
}

/// SIGTERM and SIGINT stop the gateway; SIGHUP is noted (and must not kill
/// it, as its default action would). Each reaches the acceptor's poll
/// through a socket pair, written by signal-hook's async-signal-safe handler.
fn watch_signals(registry: &mio::Registry) -> Result<Signals, StartError> {
    let pipe = |signals: &[i32]| -> Result<mio::net::UnixStream, StartError> {
        let what = "cannot set up signal handling";
        let (rx, tx) = std::os::unix::net::UnixStream::pair().map_err(start_error(what))?;
        rx.set_nonblocking(true).map_err(start_error(what))?;
        for &signal in signals {
            let tx = tx.try_clone().map_err(start_error(what))?;
            signal_hook::low_level::pipe::register(signal, tx)
                .map_err(|e| StartError(format!("cannot handle signal {signal}: {e}")))?;
        }
        Ok(mio::net::UnixStream::from_std(rx))
    };
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut stop = pipe(&[SIGTERM, SIGINT])?;
    let mut reload = pipe(&[SIGHUP])?;
    registry
        .register(&mut stop, acceptor::SIGNALS, Interest::READABLE)
        .and_then(|_| registry.register(&mut reload, acceptor::RELOAD, Interest::READABLE))
        .map_err(start_error("cannot register signal pipes"))?;
    Ok(Signals { stop, reload })
}
