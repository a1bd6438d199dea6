//! The subscribers: SSE streams, WebSocket streams, long-poll clients and
//! (cometbox only) Bayeux clients over WebSocket or long-polling, each
//! recording the stamps it receives (latency, duplicates, order) into
//! its own `SubStats` and the run's counters into `Shared`.

use crate::http::{Dechunker, find_stamps, now_ns, parse_head};
use crate::target::{Kind, Target};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// How a streaming subscriber reads: SSE (chunked or not), WebSocket, or
/// a Bayeux client over WebSocket (cometbox's `bayeux.path`; deliveries
/// pushed as frames).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Transport {
    Sse,
    Ws,
    BayeuxWs,
}

/// How a long-poll client asks: the mailbox's own long-poll (a cursor per
/// re-poll), or a Bayeux long-polling client (one `/meta/connect` after
/// another, cometbox only).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Poll {
    Mailbox,
    Bayeux,
}

/// What every subscriber reports and the scenario waits on.
pub struct Shared {
    /// Subscribers whose response head arrived (or whose poll was sent).
    pub ready: AtomicUsize,
    /// Subscribers that could not open (refused, error status, reset).
    pub failed: AtomicUsize,
    /// Stamps received, all subscribers together (duplicates included).
    pub received: AtomicU64,
    /// For fan-out: how many subscribers have message `seq`.
    pub per_seq: Vec<AtomicUsize>,
    /// The newest receive time seen, ns.
    pub last_receive: AtomicU64,
    /// Long-poll requests written, first polls and re-polls together.
    pub polls: AtomicUsize,
    pub stop: watch::Receiver<bool>,
}

#[derive(Default)]
pub struct SubStats {
    pub latencies_ns: Vec<u64>,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub failed: bool,
}

impl SubStats {
    pub fn record(&mut self, shared: &Shared, last: &mut Option<u64>, seq: u64, sent: u64) {
        let now = now_ns();
        match *last {
            Some(l) if seq == l => self.duplicates += 1,
            Some(l) if seq < l => self.out_of_order += 1,
            _ => {}
        }
        *last = Some(last.map_or(seq, |l| l.max(seq)));
        self.latencies_ns.push(now.saturating_sub(sent));
        shared.received.fetch_add(1, Ordering::Relaxed);
        shared.last_receive.fetch_max(now, Ordering::Relaxed);
        if let Some(c) = shared.per_seq.get(seq as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One streaming subscriber: opens the stream, counts itself ready at the
/// head, records every stamp until told to stop.
pub async fn subscriber(
    t: Arc<Target>,
    channel: String,
    shared: Arc<Shared>,
    transport: Transport,
) -> SubStats {
    let stats = match transport {
        Transport::Sse => sse_stream(t, channel, &shared).await,
        Transport::Ws => crate::ws::ws_stream(t, channel, &shared).await,
        Transport::BayeuxWs => {
            crate::bayeux::websocket_subscriber(t, channel, shared.clone()).await
        }
    };
    if stats.failed {
        shared.failed.fetch_add(1, Ordering::Relaxed);
    }
    stats
}

/// One long-poll client until `expect` stamps or stop, counted in
/// `shared.failed` when it could not poll to the end.
pub async fn poller(
    t: Arc<Target>,
    channel: String,
    expect: u64,
    shared: Arc<Shared>,
    how: Poll,
) -> SubStats {
    let stats = match how {
        Poll::Mailbox => poll_client(t, channel, expect, shared.clone()).await,
        Poll::Bayeux => {
            crate::bayeux::longpoll_subscriber(t, channel, expect, shared.clone()).await
        }
    };
    if stats.failed {
        shared.failed.fetch_add(1, Ordering::Relaxed);
    }
    stats
}

async fn sse_stream(t: Arc<Target>, channel: String, shared: &Arc<Shared>) -> SubStats {
    let shared = shared.clone();
    let mut stats = SubStats::default();
    let mut stop = shared.stop.clone();
    let Ok(mut s) = TcpStream::connect(t.pick_http()).await else {
        stats.failed = true;
        return stats;
    };
    if s.write_all(t.sse_request(&channel).as_bytes())
        .await
        .is_err()
    {
        stats.failed = true;
        return stats;
    }
    let mut buf = vec![0u8; 8192];
    let mut raw = Vec::new();
    let mut dechunk: Option<Dechunker> = None;
    let mut text = Vec::new();
    let mut last = None;
    loop {
        let n = tokio::select! {
            r = s.read(&mut buf) => match r { Ok(0) | Err(_) => break, Ok(n) => n },
            _ = stop.changed() => break,
        };
        match &mut dechunk {
            Some(d) => d.feed(&buf[..n], &mut text),
            None => {
                raw.extend_from_slice(&buf[..n]);
                if let Some((head, len)) = parse_head(&raw) {
                    if head.status != 200 {
                        stats.failed = true;
                        break;
                    }
                    shared.ready.fetch_add(1, Ordering::Relaxed);
                    let mut d = Dechunker::new(&head);
                    d.feed(&raw[len..], &mut text);
                    dechunk = Some(d);
                    raw = Vec::new();
                }
            }
        }
        let end = find_stamps(&text, |seq, sent| {
            stats.record(&shared, &mut last, seq, sent)
        });
        // Keep only a possibly cut stamp at the end.
        let keep_from = end.max(text.len().saturating_sub(48));
        text.drain(..keep_from);
    }
    stats
}

/// One long-poll client: polls, records the stamps of each answer, polls
/// again with what the answer said, until `expect` stamps or stop.
pub async fn poll_client(
    t: Arc<Target>,
    channel: String,
    expect: u64,
    shared: Arc<Shared>,
) -> SubStats {
    let mut stats = SubStats::default();
    let mut stop = shared.stop.clone();
    let Ok(mut s) = TcpStream::connect(t.http).await else {
        stats.failed = true;
        return stats;
    };
    let mut resume: Option<(String, String)> = None;
    let mut last = None;
    let mut got = 0u64;
    let mut first = true;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    while got < expect {
        if s.write_all(t.poll_request(&channel, &resume).as_bytes())
            .await
            .is_err()
        {
            stats.failed = true;
            break;
        }
        shared.polls.fetch_add(1, Ordering::Relaxed);
        if first {
            shared.ready.fetch_add(1, Ordering::Relaxed);
            first = false;
        }
        // Read one response with a Content-Length body.
        let (head, body) = loop {
            if let Some((head, len)) = parse_head(&buf) {
                let body_len: usize = head
                    .get("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if buf.len() >= len + body_len {
                    let body = buf[len..len + body_len].to_vec();
                    buf.drain(..len + body_len);
                    break (head, body);
                }
            }
            let n = tokio::select! {
                r = s.read(&mut chunk) => match r { Ok(0) | Err(_) => { stats.failed = true; return stats }, Ok(n) => n },
                _ = stop.changed() => return stats,
            };
            buf.extend_from_slice(&chunk[..n]);
        };
        find_stamps(&body, |seq, sent| {
            got += 1;
            stats.record(&shared, &mut last, seq, sent)
        });
        resume = match t.kind {
            Kind::Cometbox => serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["cursor"].as_str().map(|c| (c.to_string(), String::new()))),
            _ => match (head.get("last-modified"), head.get("etag")) {
                (Some(m), Some(e)) => Some((m.to_string(), e.to_string())),
                _ => resume,
            },
        };
    }
    stats
}

pub fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1e6
}

pub async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}

pub fn shared(per_seq: usize) -> (Arc<Shared>, watch::Sender<bool>) {
    let (tx, rx) = watch::channel(false);
    let shared = Shared {
        ready: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        received: AtomicU64::new(0),
        per_seq: (0..per_seq).map(|_| AtomicUsize::new(0)).collect(),
        last_receive: AtomicU64::new(0),
        polls: AtomicUsize::new(0),
        stop: rx,
    };
    (Arc::new(shared), tx)
}

/// Totals over subscribers: lost is what never arrived at all.
pub fn summarize(all: Vec<SubStats>, expected: u64, result: &mut Value) {
    let failed = all.iter().filter(|s| s.failed).count();
    let duplicates: u64 = all.iter().map(|s| s.duplicates).sum();
    let out_of_order: u64 = all.iter().map(|s| s.out_of_order).sum();
    let mut lat: Vec<u64> = all.into_iter().flat_map(|s| s.latencies_ns).collect();
    lat.sort_unstable();
    let delivered = lat.len() as u64 - duplicates;
    result["delivered"] = json!(delivered);
    result["lost"] = json!(expected.saturating_sub(delivered));
    result["duplicated"] = json!(duplicates);
    result["out_of_order"] = json!(out_of_order);
    result["failed_subscribers"] = json!(failed);
    result["latency_p50_ms"] = json!(percentile(&lat, 0.5));
    result["latency_p99_ms"] = json!(percentile(&lat, 0.99));
}

pub async fn open_subscribers(
    t: &Arc<Target>,
    channels: Vec<String>,
    shared: &Arc<Shared>,
    transport: Transport,
) -> Vec<tokio::task::JoinHandle<SubStats>> {
    let n = channels.len();
    let mut tasks = Vec::with_capacity(n);
    for (i, channel) in channels.into_iter().enumerate() {
        // At most 100 subscriptions being set up at once, as in `connect`,
        // so no server's accept backlog overflows.
        wait_until(Duration::from_secs(10), || {
            shared.ready.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed) + 100 > i
        })
        .await;
        tasks.push(tokio::spawn(subscriber(
            t.clone(),
            channel,
            shared.clone(),
            transport,
        )));
    }
    let ok = wait_until(Duration::from_secs(60), || {
        shared.ready.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed) >= n
    })
    .await;
    if !ok {
        eprintln!(
            "only {} of {n} subscribers opened",
            shared.ready.load(Ordering::Relaxed)
        );
    }
    tasks
}

pub async fn collect(tasks: Vec<tokio::task::JoinHandle<SubStats>>) -> Vec<SubStats> {
    let mut all = Vec::with_capacity(tasks.len());
    for t in tasks {
        all.push(t.await.unwrap_or_default());
    }
    all
}
