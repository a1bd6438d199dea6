//! The operations listener (`metrics.listen`): `GET /metrics` in the
//! Prometheus text format and `GET /health`, on a thread and a mio `Poll`
//! of its own, so a scrape never costs a worker a turn and the public port
//! never exposes either. Each request is answered and the connection
//! closed: scrapers are few and reconnecting is cheap.
//!
//! The listener follows the config: a reload that changes or clears
//! `metrics.listen` rebinds or closes it within a poll interval.

mod health;

pub use health::{Health, health};

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::http::{self, Method, Parsed, Status};
use crate::metrics::prometheus::{self, DiskNumbers, ProcessNumbers, RedisNumbers, StoreNumbers};
use crate::shared::Shared;
use crate::store::redis::Snapshot;
use crate::store::{LogSnapshot, Store};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX);

/// Scrapers and probes are a handful; more at once is a misconfigured
/// load balancer, and they wait in the backlog.
const MAX_CONNECTIONS: usize = 64;

/// A request head is one line and a few headers; Prometheus sends ~200 bytes.
const MAX_HEAD: usize = 4096;

/// A client that has not sent a whole request (or read its answer) by then
/// is dropped.
const IDLE_LIMIT: Duration = Duration::from_secs(10);

/// How often the loop looks at the config (a reload may move the listener)
/// and at idle connections.
const TURN: Duration = Duration::from_millis(250);

struct OpsConn {
    sock: TcpStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    written: usize,
    since: Instant,
}

/// The running thread; [`OpsHandle::stop`] ends it.
pub struct OpsHandle {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OpsHandle {
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            log::error!("the metrics thread panicked");
        }
    }
}

/// Binds `metrics.listen` now (so a start with a taken port fails loudly)
/// and starts the thread.
pub fn spawn(shared: Arc<Shared>) -> io::Result<OpsHandle> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let mut ops = Ops {
        shared,
        poll,
        listener: None,
        bound: None,
        conns: Slab::new(),
    };
    ops.follow_config()?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || ops.serve(&flag))?;
    Ok(OpsHandle {
        stop,
        waker,
        thread: Some(thread),
    })
}

struct Ops {
    shared: Arc<Shared>,
    poll: Poll,
    listener: Option<TcpListener>,
    /// What `listener` was bound for (`metrics.listen` as configured).
    bound: Option<SocketAddr>,
    conns: Slab<OpsConn>,
}

impl Ops {
    fn serve(mut self, stop: &AtomicBool) {
        let mut events = Events::with_capacity(64);
        while !stop.load(Ordering::Acquire) {
            if let Err(e) = self.poll.poll(&mut events, Some(TURN))
                && e.kind() != io::ErrorKind::Interrupted
            {
                log::error!("metrics: poll failed: {e}");
                return;
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    Token(key) => self.io(key),
                }
            }
            let now = Instant::now();
            self.conns
                .retain(|_, c| now.duration_since(c.since) < IDLE_LIMIT);
            if let Err(e) = self.follow_config() {
                warn!("metrics: cannot listen on the reloaded metrics.listen: {e}");
            }
        }
    }

    /// Binds, rebinds or closes the listener to match `metrics.listen`.
    fn follow_config(&mut self) -> io::Result<()> {
        let want = self.shared.config().metrics.listen;
        if want == self.bound {
            return Ok(());
        }
        if let Some(mut old) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut old);
            info!("metrics listener on {:?} closed", self.bound);
        }
        self.bound = None;
        let Some(addr) = want else {
            return Ok(());
        };
        // Tried once per configured value: a port that is taken is logged
        // once, not every turn; the next reload tries again.
        self.bound = want;
        let std_listener = crate::net::listen(addr, 128)?;
        let local = std_listener.local_addr().unwrap_or(addr);
        let mut listener = TcpListener::from_std(std_listener);
        self.poll
            .registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        info!("metrics listener on {local}: GET /metrics, GET /health");
        self.listener = Some(listener);
        Ok(())
    }

    fn accept(&mut self) {
        let Some(listener) = self.listener.as_ref() else {
            return;
        };
        while self.conns.len() < MAX_CONNECTIONS {
            match listener.accept() {
                Ok((mut sock, _)) => {
                    let entry = self.conns.vacant_entry();
                    let token = Token(entry.key());
                    if self
                        .poll
                        .registry()
                        .register(&mut sock, token, Interest::READABLE | Interest::WRITABLE)
                        .is_ok()
                    {
                        entry.insert(OpsConn {
                            sock,
                            inbuf: Vec::new(),
                            out: Vec::new(),
                            written: 0,
                            since: Instant::now(),
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return, // WouldBlock, or out of descriptors: later
            }
        }
    }

    fn io(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.out.is_empty() {
            let mut buf = [0u8; 1024];
            loop {
                match conn.sock.read(&mut buf) {
                    Ok(0) => {
                        self.conns.remove(key);
                        return;
                    }
                    Ok(n) if conn.inbuf.len() + n <= MAX_HEAD => {
                        conn.inbuf.extend_from_slice(&buf[..n])
                    }
                    Ok(_) => {
                        let body = b"{\"error\":\"request header too large\"}\n".to_vec();
                        conn.out =
                            response(Status::HeaderFieldsTooLarge, "application/json", &body);
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        self.conns.remove(key);
                        return;
                    }
                }
            }
            if conn.out.is_empty() {
                match http::parse_request(&conn.inbuf, MAX_HEAD) {
                    Parsed::Partial => return,
                    Parsed::Invalid(status, why) => {
                        let body = format!("{{\"error\":\"{why}\"}}\n");
                        conn.out = response(status, "application/json", body.as_bytes());
                    }
                    Parsed::Complete(req, _) => {
                        let head_only = req.method() == Method::Head;
                        conn.out = answer(&self.shared, req.method(), req.path, head_only);
                    }
                }
            }
        }
        while conn.written < conn.out.len() {
            match conn.sock.write(&conn.out[conn.written..]) {
                Ok(0) => break,
                Ok(n) => conn.written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => break,
            }
        }
        // Answered (or failed): close. Dropping the socket deregisters it.
        self.conns.remove(key);
    }
}

/// The whole response to one request.
fn answer(shared: &Shared, method: Method, path: &[u8], head_only: bool) -> Vec<u8> {
    if !matches!(method, Method::Get | Method::Head) {
        let body = b"{\"error\":\"only GET and HEAD\"}\n";
        return response(Status::MethodNotAllowed, "application/json", body);
    }
    let (status, kind, body) = match path {
        b"/metrics" => {
            let mut text = String::with_capacity(16 * 1024);
            render_metrics(shared, &mut text);
            (Status::Ok, prometheus::CONTENT_TYPE, text.into_bytes())
        }
        b"/health" => match health(shared) {
            Health::Serving(line) => (Status::Ok, "application/json", line.into_bytes()),
            Health::Unavailable(line) => (
                Status::ServiceUnavailable,
                "application/json",
                line.into_bytes(),
            ),
        },
        _ => (
            Status::NotFound,
            "application/json",
            b"{\"error\":\"not found: try /metrics or /health\"}\n".to_vec(),
        ),
    };
    let mut out = response(status, kind, &body);
    if head_only {
        out.truncate(out.len() - body.len());
    }
    out
}

fn response(status: Status, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 256);
    let date = httpdate::fmt_http_date(SystemTime::now());
    http::write_head(&mut out, status, true, date.as_bytes());
    http::write_header(&mut out, "Content-Type", content_type.as_bytes());
    http::write_header(&mut out, "Cache-Control", b"no-store");
    http::write_connection(&mut out, true, false);
    http::write_content_length(&mut out, body.len());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// The store's numbers, gathered for the text format.
pub fn store_numbers(shared: &Shared) -> StoreNumbers {
    let store = &shared.store;
    let stats = store.stats();
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    StoreNumbers {
        mailboxes: store.mailbox_count() as u64,
        retained_messages: store.retained_messages() as u64,
        retained_bytes: store.retained_bytes() as u64,
        memory_bytes: store.memory_used() as u64,
        published: get(&stats.published),
        evicted_by_count: get(&stats.evicted_by_count),
        evicted_by_memory: get(&stats.evicted_by_memory),
        expired: get(&stats.evicted_by_ttl),
        rejected: vec![
            ("max_message_size", get(&stats.rejected_too_large)),
            ("max_mailboxes", get(&stats.rejected_mailbox_limit)),
            ("max_subscribers", get(&stats.rejected_subscriber_limit)),
            ("max_memory", get(&stats.rejected_out_of_memory)),
        ],
        redis: match store {
            Store::Redis(redis) => Some(redis_numbers(&redis.snapshot())),
            Store::Local(_) | Store::Disk(_) => None,
        },
        disk: match store {
            Store::Disk(disk) => Some(disk_numbers(&disk.snapshot())),
            Store::Local(_) | Store::Redis(_) => None,
        },
    }
}

fn disk_numbers(s: &LogSnapshot) -> DiskNumbers {
    DiskNumbers {
        log_bytes: s.log_bytes,
        writes: s.writes,
        fsyncs: s.fsyncs,
        compactions: s.compactions,
        write_errors: s.write_errors,
        queued: s.queued,
        failing: s.failing,
    }
}

fn redis_numbers(s: &Snapshot) -> RedisNumbers {
    RedisNumbers {
        command_up: s.command_up,
        subscription_up: s.subscription_up,
        reconnects_command: s.reconnects_command,
        reconnects_subscription: s.reconnects_subscription,
        pending_commands: s.pending,
        probe_age_seconds: s.seen_ago.unwrap_or(s.uptime).as_secs_f64(),
        healthy: s.unavailable_because().is_none(),
    }
}

pub fn render_metrics(shared: &Shared, out: &mut String) {
    let started = SystemTime::now()
        .checked_sub(shared.started.elapsed())
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64());
    let process = ProcessNumbers {
        start_time_seconds: started,
        workers: shared.peers.len() as u64,
    };
    prometheus::render(&shared.metrics, &store_numbers(shared), &process, out);
}
