//! The Redis threads. `Client` owns the command connection and is the one
//! writer of the node's cache: it pipelines what workers ask (publish,
//! attach, delete) and what the cache needs (catching a mailbox up after a
//! hole or a reconnect), and applies what the subscription hears, in the
//! order it arrives, and publishes the health probe every `PROBE_EVERY`.
//! `subscriber` owns the SUBSCRIBE connection (the mail's channel and the
//! probes'), and replaces it when it stops delivering acknowledged probes.
//!
//! Failure: a batch whose next reply does not come within `IO_TIMEOUT` drops the
//! connection and answers every waiting request `Unavailable`; requests
//! while Redis is down are answered at once. Reconnecting backs off from
//! `MIN_BACKOFF` to `MAX_BACKOFF`; the change of state is logged once each
//! way.

use std::collections::HashSet;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::{info, warn};

use super::script::{Note, parse_note};
use super::wire::{self, Conn, Reply};
use super::{Event, IO_TIMEOUT, Inner, Outlet, PROBE_EVERY, Target};
use crate::store::local::{Appended, Span};
use crate::store::{Attach, Cursor, Message, Register, StoreError, Ticket};

/// First wait before reconnecting, doubled per failure up to the most.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Redis back within this long is noticed within this long.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often the client thread looks up without work (reconnects, retries
/// of a catch-up that failed).
const TICK: Duration = Duration::from_millis(250);
/// Requests taken into one pipelined batch at most: bounds the replies one
/// timeout can fail and the memory one batch holds.
const MAX_BATCH: usize = 1024;
/// A quiet subscription is probed with PING after this long, and counts as
/// lost if the probe is not answered within as long again (a Redis that
/// stopped answering, or a connection a middlebox dropped silently).
const PROBE_AFTER: Duration = Duration::from_secs(3);

/// One request in a batch, with what its reply means.
enum Job {
    Publish {
        ticket: Ticket,
        worker: usize,
        name: String,
        payload: Vec<u8>,
    },
    Attach {
        ticket: Ticket,
        worker: usize,
        name: String,
        since: Option<Cursor>,
        register: Register,
    },
    Delete {
        ticket: Ticket,
        worker: usize,
        names: Vec<String>,
    },
    /// Bring the cache of `name` up to Redis (a hole, a reconnect).
    Fill { name: String, span: Option<Span> },
    /// Publish probe `seq` on the health channel (`probe`).
    Probe { seq: u64 },
}

pub(super) fn spawn(
    inner: Arc<Inner>,
    target: Target,
    library: String,
    rx: Receiver<Event>,
    tx: Sender<Event>,
    outlet: Arc<dyn Outlet>,
    workers: usize,
) -> io::Result<()> {
    let sub_target = target.clone();
    let sub_inner = inner.clone();
    std::thread::Builder::new()
        .name("redis-subscriber".into())
        .spawn(move || subscriber(sub_target, sub_inner, tx))?;
    let client = Client {
        inner,
        target,
        library,
        rx,
        outlet,
        conn: None,
        next_try: Instant::now(),
        backoff: MIN_BACKOFF,
        down_logged: false,
        connected_once: false,
        next_probe: Instant::now(),
        probe_seq: 0,
        catch_up: false,
        subscribed: false,
        fill_failed: false,
        deliveries: vec![Vec::new(); workers],
        completions: vec![Vec::new(); workers],
    };
    std::thread::Builder::new()
        .name("redis-client".into())
        .spawn(move || client.run())?;
    Ok(())
}

struct Client {
    inner: Arc<Inner>,
    target: Target,
    library: String,
    rx: Receiver<Event>,
    outlet: Arc<dyn Outlet>,
    conn: Option<Conn>,
    /// When Redis is down: not before this is it tried again.
    next_try: Instant,
    backoff: Duration,
    down_logged: bool,
    /// A connection was made before: the next one is a reconnect.
    connected_once: bool,
    /// When the next probe is due, and the last one's number.
    next_probe: Instant,
    probe_seq: u64,
    /// The subscription came (back): every cached mailbox must be caught up
    /// before the cache serves readers alone again.
    catch_up: bool,
    /// The subscription is in place (as last told).
    subscribed: bool,
    /// A catch-up read failed this turn.
    fill_failed: bool,
    /// Per worker, what to announce and answer at the end of this turn.
    deliveries: Vec<Vec<Arc<Message>>>,
    completions: Vec<Vec<(Ticket, Result<u64, StoreError>)>>,
}

fn unavailable(why: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(why.to_string())
}

impl Client {
    fn run(mut self) {
        loop {
            let first = match self.rx.recv_timeout(TICK) {
                Ok(event) => Some(event),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut jobs = Vec::new();
            let mut holes = HashSet::new();
            let events: Vec<Event> = first
                .into_iter()
                .chain(self.rx.try_iter().take(MAX_BATCH))
                .collect();
            for event in events {
                self.take(event, &mut jobs, &mut holes);
            }
            for name in holes {
                let span = self.inner.local.span(&name);
                jobs.push(Job::Fill { name, span });
            }
            let now = Instant::now();
            if now >= self.next_probe {
                self.next_probe = now + PROBE_EVERY;
                self.probe_seq += 1;
                jobs.push(Job::Probe {
                    seq: self.probe_seq,
                });
            }
            let catching_up = self.catch_up;
            self.fill_failed = false;
            if catching_up {
                jobs.extend(
                    self.inner
                        .local
                        .spans()
                        .into_iter()
                        .map(|(name, span)| Job::Fill {
                            name: name.to_string(),
                            span: Some(span),
                        }),
                );
            }
            if jobs.is_empty() {
                if self.conn.is_none() && Instant::now() >= self.next_try {
                    self.connect();
                }
                if catching_up && self.conn.is_some() {
                    self.caught_up();
                }
            } else if self.run_jobs(jobs) && catching_up && !self.fill_failed {
                self.caught_up();
            }
            self.post();
        }
    }

    fn caught_up(&mut self) {
        self.catch_up = false;
        if self.subscribed {
            self.inner.synced.store(true, Ordering::Release);
        }
    }

    fn take(&mut self, event: Event, jobs: &mut Vec<Job>, holes: &mut HashSet<String>) {
        match event {
            Event::Publish {
                ticket,
                worker,
                name,
                payload,
            } => jobs.push(Job::Publish {
                ticket,
                worker,
                name,
                payload,
            }),
            Event::Attach {
                ticket,
                worker,
                name,
                since,
                register,
            } => jobs.push(Job::Attach {
                ticket,
                worker,
                name,
                since,
                register,
            }),
            Event::Delete {
                ticket,
                worker,
                names,
            } => jobs.push(Job::Delete {
                ticket,
                worker,
                names,
            }),
            Event::Note(note) => self.hear(note, holes),
            Event::SubscribedAgain => {
                self.subscribed = true;
                self.catch_up = true;
                // Confirm the new subscription at once, not a period later.
                self.next_probe = Instant::now();
            }
            Event::Unsubscribed => {
                self.subscribed = false;
                self.catch_up = false;
                self.inner.synced.store(false, Ordering::Release);
            }
        }
    }

    /// A notification: the next message of a cached mailbox goes in and
    /// out; a hole or a new incarnation is read from Redis; mailboxes this
    /// node does not cache are none of its business.
    fn hear(&mut self, note: Note, holes: &mut HashSet<String>) {
        let now = Instant::now();
        let local = &self.inner.local;
        match note {
            Note::Message {
                name,
                epoch,
                seq,
                payload,
            } => {
                let cursor = Cursor {
                    store: self.store_id(),
                    generation: epoch,
                    seq,
                };
                self.outlet.heard(&name, cursor);
                let Some(span) = local.span(&name) else {
                    return;
                };
                if span.generation == epoch && seq <= span.last {
                    return; // already read with a catch-up
                }
                if epoch < span.generation {
                    return; // an older incarnation, heard late
                }
                if epoch > span.generation && seq == 1 {
                    // A new incarnation from its start (after a DEL, or
                    // Redis came back empty): nothing to read.
                    let appended = local.ingest(&name, epoch, 1, vec![(1, payload)], now);
                    return self.announce(appended);
                }
                match local.append_next(&name, epoch, seq, payload, now) {
                    Some(appended) => self.announce(appended),
                    None => {
                        holes.insert(name);
                    }
                }
            }
            Note::Deleted { name } => {
                let marker = local.unbirth(&name, now);
                self.announce(marker);
            }
        }
    }

    fn announce(&mut self, appended: Appended) {
        if appended.messages.is_empty() {
            return;
        }
        let mut mask = appended.workers;
        while mask != 0 {
            let worker = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            if let Some(queue) = self.deliveries.get_mut(worker) {
                queue.extend(appended.messages.iter().cloned());
            }
        }
    }

    fn post(&mut self) {
        for (worker, queue) in self.deliveries.iter_mut().enumerate() {
            if !queue.is_empty() {
                self.outlet.deliver(worker, std::mem::take(queue));
            }
        }
        for (worker, done) in self.completions.iter_mut().enumerate() {
            if !done.is_empty() {
                self.outlet.completed(worker, std::mem::take(done));
            }
        }
    }

    /// (Re)connects and loads the library; logs the change of state once.
    fn connect(&mut self) -> bool {
        let attempt = Conn::open(&self.target.addr, IO_TIMEOUT).and_then(|mut conn| {
            conn.handshake(self.target.password.as_deref(), self.target.addr.db())?;
            conn.call(&[b"FUNCTION", b"LOAD", b"REPLACE", self.library.as_bytes()])?;
            Ok(conn)
        });
        match attempt {
            Ok(conn) => {
                self.conn = Some(conn);
                self.backoff = MIN_BACKOFF;
                let probe = &self.inner.probe;
                probe.command_up.store(true, Ordering::Relaxed);
                if self.connected_once {
                    probe.reconnects_command.fetch_add(1, Ordering::Relaxed);
                }
                self.connected_once = true;
                if self.down_logged {
                    info!("redis at {} is reachable again", self.target.addr);
                    self.down_logged = false;
                }
                true
            }
            Err(e) => {
                self.went_down(&e);
                false
            }
        }
    }

    fn went_down(&mut self, e: &io::Error) {
        self.conn = None;
        self.inner.probe.command_up.store(false, Ordering::Relaxed);
        self.next_try = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        if !self.down_logged {
            warn!(
                "redis at {} is unavailable ({e}); publishes answer TRYAGAIN and cache misses \
                 503 until it is back",
                self.target.addr
            );
            self.down_logged = true;
        }
    }

    /// Sends the batch as one pipeline and applies the replies in order.
    /// False if Redis failed it (each request is then answered
    /// `Unavailable`).
    fn run_jobs(&mut self, jobs: Vec<Job>) -> bool {
        if self.conn.is_none() && (Instant::now() < self.next_try || !self.connect()) {
            let why = unavailable(format!("redis at {} is down", self.target.addr));
            for job in jobs {
                self.fail(job, why.clone());
            }
            return false;
        }
        let mut out = Vec::new();
        for job in &jobs {
            self.encode(job, &mut out);
        }
        let conn = self.conn.as_mut().expect("connected above");
        let mut result = conn.send(&out);
        let mut jobs = jobs.into_iter();
        while result.is_ok() {
            let Some(job) = jobs.next() else {
                break;
            };
            let conn = self.conn.as_mut().expect("connected above");
            match conn.read() {
                Ok(reply) => self.apply(job, reply),
                Err(e) => {
                    self.fail(job, unavailable(&e));
                    result = Err(e);
                }
            }
        }
        if let Err(e) = result {
            let why = unavailable(&e);
            for job in jobs {
                self.fail(job, why.clone());
            }
            self.went_down(&e);
            return false;
        }
        true
    }

    fn encode(&self, job: &Job, out: &mut Vec<u8>) {
        let names = &self.target.names;
        match job {
            Job::Publish { name, payload, .. } => {
                let f = names.function("publish");
                wire::command(
                    out,
                    &[b"FCALL", f.as_bytes(), b"1", name.as_bytes(), payload],
                );
            }
            Job::Attach { name, since, .. } => {
                let (epoch, seq) = match since {
                    Some(c) if c.store == self.store_id() && c.generation != 0 => {
                        (c.generation.to_string(), c.seq.to_string())
                    }
                    _ => (String::new(), "0".to_string()),
                };
                let f = names.function("read");
                let words: [&[u8]; 6] = [
                    b"FCALL",
                    f.as_bytes(),
                    b"1",
                    name.as_bytes(),
                    epoch.as_bytes(),
                    seq.as_bytes(),
                ];
                wire::command(out, &words);
            }
            Job::Fill { name, span } => {
                let (epoch, seq) = match span {
                    Some(s) if s.generation != 0 => (s.generation.to_string(), s.last.to_string()),
                    _ => (String::new(), "0".to_string()),
                };
                let f = names.function("read");
                let words: [&[u8]; 6] = [
                    b"FCALL",
                    f.as_bytes(),
                    b"1",
                    name.as_bytes(),
                    epoch.as_bytes(),
                    seq.as_bytes(),
                ];
                wire::command(out, &words);
            }
            Job::Probe { seq } => {
                let payload = self.inner.probe.payload(*seq);
                let channel = names.health_channel();
                wire::command(out, &[b"PUBLISH", channel.as_bytes(), payload.as_bytes()]);
            }
            Job::Delete { names: list, .. } => {
                let f = names.function("delete");
                let n = list.len().to_string();
                let mut words: Vec<&[u8]> = vec![b"FCALL", f.as_bytes(), n.as_bytes()];
                words.extend(list.iter().map(|s| s.as_bytes()));
                wire::command(out, &words);
            }
        }
    }

    fn store_id(&self) -> u64 {
        super::store_id(&self.target.names.prefix)
    }

    fn fail(&mut self, job: Job, why: StoreError) {
        match job {
            Job::Publish { ticket, worker, .. } | Job::Delete { ticket, worker, .. } => {
                self.complete(worker, ticket, Err(why))
            }
            Job::Attach { ticket, worker, .. } => self.attached(worker, ticket, Err(why)),
            // Not acknowledged: the probe's age says so.
            Job::Probe { .. } => {}
            Job::Fill { .. } => {
                // The cache may be behind: serve nobody from it alone until
                // a catch-up of every cached mailbox succeeds.
                self.fill_failed = true;
                self.catch_up = self.subscribed;
                self.inner.synced.store(false, Ordering::Release);
            }
        }
    }

    /// A worker's publish or delete is answered (posted with the turn's).
    fn complete(&mut self, worker: usize, ticket: Ticket, answer: Result<u64, StoreError>) {
        self.inner.probe.pending.fetch_sub(1, Ordering::Relaxed);
        if let Some(done) = self.completions.get_mut(worker) {
            done.push((ticket, answer));
        }
    }

    /// A worker's attach is answered.
    fn attached(&self, worker: usize, ticket: Ticket, result: Result<Attach, StoreError>) {
        self.inner.probe.pending.fetch_sub(1, Ordering::Relaxed);
        self.outlet.attached(worker, ticket, result);
    }

    fn apply(&mut self, job: Job, reply: Reply) {
        let now = Instant::now();
        if let Reply::Error(e) = &reply {
            if e.contains("Function not found") {
                // Someone flushed the functions: load them again.
                self.conn = None;
                self.next_try = now;
            }
            let why = unavailable(format!("redis: {e}"));
            return self.fail(job, why);
        }
        match job {
            Job::Publish {
                ticket,
                worker,
                name,
                ..
            } => {
                let receivers = self.inner.local.subscriber_count(name.as_bytes());
                self.complete(worker, ticket, Ok(receivers));
            }
            Job::Delete {
                ticket,
                worker,
                names,
            } => {
                for name in &names {
                    let marker = self.inner.local.unbirth(name, now);
                    self.announce(marker);
                }
                let n = reply.as_int().unwrap_or(0).max(0) as u64;
                self.complete(worker, ticket, Ok(n));
            }
            Job::Fill { name, .. } => self.take_read(&name, reply, now),
            Job::Attach {
                ticket,
                worker,
                name,
                since,
                register,
            } => {
                self.take_read(&name, reply, now);
                let result = self
                    .inner
                    .local
                    .attach(&name, since.as_ref(), worker, register, now);
                self.attached(worker, ticket, result);
            }
            Job::Probe { seq } => self.inner.probe.acked(seq),
        }
    }

    /// A read function's reply into the cache (and out to subscribers).
    fn take_read(&mut self, name: &str, reply: Reply, now: Instant) {
        let local = &self.inner.local;
        let Some(read) = parse_read(reply) else {
            // The mailbox does not exist in Redis (deleted, lost, never).
            if local.span(name).is_some_and(|s| s.generation != 0) {
                let marker = local.unbirth(name, now);
                self.announce(marker);
            }
            return;
        };
        let appended = local.ingest(name, read.epoch, read.last, read.entries, now);
        self.announce(appended);
    }
}

/// What a read function returned.
struct Read {
    epoch: u64,
    last: u64,
    entries: Vec<(u64, Vec<u8>)>,
}

/// `{}` (no such mailbox) gives None; `{epoch, last, entries}` a Read.
fn parse_read(reply: Reply) -> Option<Read> {
    let mut parts = reply.into_array()?.into_iter();
    let epoch = parts.next()?.as_int()? as u64;
    let last = parts.next()?.as_int()?.max(0) as u64;
    let mut entries = Vec::new();
    for entry in parts.next()?.into_array()? {
        let mut entry = entry.into_array()?.into_iter();
        let id = entry.next()?.into_bytes()?;
        let seq = std::str::from_utf8(&id)
            .ok()?
            .split('-')
            .next()?
            .parse()
            .ok()?;
        let mut fields = entry.next()?.into_array()?.into_iter();
        let mut payload = Vec::new();
        while let (Some(field), Some(value)) = (fields.next(), fields.next()) {
            if field.into_bytes().as_deref() == Some(b"d") {
                payload = value.into_bytes().unwrap_or_default();
            }
        }
        entries.push((seq, payload));
    }
    Some(Read {
        epoch,
        last,
        entries,
    })
}

/// The subscription: one connection per node, one channel for all
/// mailboxes and one for the probes. Tells the client when it is in place
/// and when it is lost.
fn subscriber(target: Target, inner: Arc<Inner>, tx: Sender<Event>) {
    let mut backoff = MIN_BACKOFF;
    let mut subscribed_once = false;
    loop {
        let subscribed = subscribe_once(&target, &inner, &tx, &mut backoff, &mut subscribed_once);
        inner.probe.subscription_up.store(false, Ordering::Relaxed);
        if tx.send(Event::Unsubscribed).is_err() {
            return;
        }
        if let Err(e) = subscribed {
            log::debug!("redis subscription lost: {e}");
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn subscribe_once(
    target: &Target,
    inner: &Inner,
    tx: &Sender<Event>,
    backoff: &mut Duration,
    subscribed_once: &mut bool,
) -> io::Result<()> {
    let mut conn = Conn::open(&target.addr, IO_TIMEOUT)?;
    conn.handshake(target.password.as_deref(), 0)?;
    let channel = target.names.channel();
    let health = target.names.health_channel();
    let mut out = Vec::new();
    wire::command(
        &mut out,
        &[b"SUBSCRIBE", channel.as_bytes(), health.as_bytes()],
    );
    conn.send(&out)?;
    conn.read()?; // ["subscribe", channel, 1]
    conn.read()?; // ["subscribe", health, 2]
    *backoff = MIN_BACKOFF;
    let probe = &inner.probe;
    probe.subscription_up.store(true, Ordering::Relaxed);
    if *subscribed_once {
        probe
            .reconnects_subscription
            .fetch_add(1, Ordering::Relaxed);
    }
    *subscribed_once = true;
    tx.send(Event::SubscribedAgain)
        .map_err(|_| io::Error::other("client gone"))?;
    let since = Instant::now();
    let mut heard = Instant::now();
    let mut probed = false;
    loop {
        match conn.read() {
            Ok(reply) => {
                heard = Instant::now();
                probed = false;
                let Some(mut parts) = reply.into_array() else {
                    continue;
                };
                if parts.len() == 3 && parts[0] == Reply::Bulk(Some(b"message".to_vec())) {
                    let frame = parts.pop().and_then(Reply::into_bytes).unwrap_or_default();
                    if parts[1] == Reply::Bulk(Some(health.as_bytes().to_vec())) {
                        probe.heard(&frame);
                    } else if let Some(note) = parse_note(&frame)
                        && tx.send(Event::Note(note)).is_err()
                    {
                        return Ok(());
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                let snapshot = probe.snapshot();
                if snapshot.subscription_is_deaf(since.elapsed()) {
                    warn!(
                        "redis subscription at {} delivers nothing: {} probes acknowledged by \
                         redis did not come back; subscribing again",
                        target.addr, snapshot.missing
                    );
                    return Err(io::Error::other("deaf subscription replaced"));
                }
                let quiet = heard.elapsed();
                if probed && quiet > PROBE_AFTER * 2 {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer to PING"));
                }
                if !probed && quiet > PROBE_AFTER {
                    let mut ping = Vec::new();
                    wire::command(&mut ping, &[b"PING"]);
                    conn.send(&ping)?;
                    probed = true;
                }
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(b: &[u8]) -> Reply {
        Reply::Bulk(Some(b.to_vec()))
    }

    #[test]
    fn read_replies_give_the_epoch_the_counter_and_the_entries() {
        let entry = |id: &[u8], payload: &[u8]| {
            Reply::Array(Some(vec![
                bulk(id),
                Reply::Array(Some(vec![bulk(b"d"), bulk(payload)])),
            ]))
        };
        let reply = Reply::Array(Some(vec![
            bulk(b"1700000000000001"),
            Reply::Int(9),
            Reply::Array(Some(vec![entry(b"8-0", b"a b"), entry(b"9-0", b"")])),
        ]));
        let read = parse_read(reply).unwrap();
        assert_eq!((read.epoch, read.last), (1_700_000_000_000_001, 9));
        assert_eq!(read.entries, vec![(8, b"a b".to_vec()), (9, Vec::new())]);
        assert!(
            parse_read(Reply::Array(Some(Vec::new()))).is_none(),
            "no mailbox"
        );
        assert!(parse_read(Reply::Int(1)).is_none());
    }
}
