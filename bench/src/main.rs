//! cometbox-bench: the load generator behind docs/BENCHMARKS.md.
//!
//! It drives cometbox, nchan and Pushpin (and a write-only "floor" server)
//! through the same scenarios over loopback and prints one JSON line per
//! run: idle memory per subscriber, fan-out completion, throughput,
//! long-poll rate, connection setup rate, with server PSS and CPU read from
//! /proc and lost / duplicated / out-of-order counts from payload stamps.
//! `bench/run.sh` starts the servers and runs everything; `report` turns the
//! JSON lines into the markdown table.

mod acks;
mod bayeux;
mod http;
mod procstat;
mod servers;

use http::{Dechunker, find_stamps, now_ns, parse_head, stamp};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{Semaphore, watch};

const USAGE: &str = "usage:
  cometbox-bench SCENARIO --target cometbox|nchan|pushpin|floor --http ADDR --publish SPEC --pid PID
        [--n N] [--messages M] [--batch B (publishes in flight)] [--rate MSGS_PER_S]
        [--http2 ADDR --pid2 PID (a second gateway of a cluster: SSE subscribers alternate)]
        [--size BYTES] [--connections C]   (publish: payload size, publishing connections)
      SCENARIO: idle-sse | idle-longpoll | fanout | throughput | throughput-paced | longpoll | connect
              | fanout-longpoll | fanout-bayeux-longpoll | fanout-bayeux-websocket (cometbox only)
              | publish (no subscribers: acknowledged publishes/s and reply latency)
      SPEC: a Unix socket path (cometbox's RESP socket, the floor's control socket)
            or host:port (nchan's HTTP publisher, Pushpin's publish endpoint)
  cometbox-bench floor --port P --control PATH     a server that only writes (the fan-out floor)
  cometbox-bench origin --port P                   a GRIP origin for Pushpin (holds every GET as a stream)
  cometbox-bench report RESULTS.jsonl              the markdown table, ratios against nchan
  cometbox-bench report-cluster RESULTS.jsonl      bench/cluster.sh's table: single node beside cluster";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Cometbox,
    Nchan,
    Pushpin,
    Floor,
}

struct Target {
    kind: Kind,
    http: SocketAddr,
    publish: String,
    pid: u32,
    /// More gateways of one cluster (`--http2`, `--pid2`): SSE subscribers
    /// are spread over all, publishes go to the first, CPU is summed.
    more_http: Vec<SocketAddr>,
    more_pids: Vec<u32>,
    next_http: AtomicUsize,
}

impl Target {
    /// Where the next subscriber connects: round robin over the nodes.
    fn pick_http(&self) -> SocketAddr {
        let i = self.next_http.fetch_add(1, Ordering::Relaxed) % (1 + self.more_http.len());
        if i == 0 {
            self.http
        } else {
            self.more_http[i - 1]
        }
    }

    /// Server CPU seconds, all nodes together.
    fn cpu(&self) -> f64 {
        std::iter::once(self.pid)
            .chain(self.more_pids.iter().copied())
            .map(procstat::cpu_seconds)
            .sum()
    }

    fn name(&self) -> &'static str {
        if self.kind == Kind::Cometbox && !self.more_http.is_empty() {
            return "cometbox-cluster";
        }
        match self.kind {
            Kind::Cometbox => "cometbox",
            Kind::Nchan => "nchan",
            Kind::Pushpin => "pushpin",
            Kind::Floor => "floor",
        }
    }

    /// The request that opens an SSE subscription to `channel`.
    fn sse_request(&self, channel: &str) -> String {
        let path = match self.kind {
            Kind::Cometbox => format!("/mailbox/{channel}"),
            Kind::Nchan => format!("/sub/{channel}"),
            Kind::Pushpin => format!("/sse/{channel}"),
            Kind::Floor => format!("/{channel}"),
        };
        format!("GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n")
    }

    /// A long-poll request; `resume` is what the previous answer said to
    /// come back with (cometbox: the cursor; nchan: Last-Modified and Etag).
    fn poll_request(&self, channel: &str, resume: &Option<(String, String)>) -> String {
        match (self.kind, resume) {
            (Kind::Cometbox, None) => {
                format!("GET /mailbox/{channel} HTTP/1.1\r\nHost: bench\r\n\r\n")
            }
            (Kind::Cometbox, Some((cursor, _))) => {
                format!("GET /mailbox/{channel}?since={cursor} HTTP/1.1\r\nHost: bench\r\n\r\n")
            }
            (_, None) => {
                format!("GET /sub/{channel} HTTP/1.1\r\nHost: bench\r\nAccept: */*\r\n\r\n")
            }
            (_, Some((modified, etag))) => format!(
                "GET /sub/{channel} HTTP/1.1\r\nHost: bench\r\nAccept: */*\r\nIf-Modified-Since: {modified}\r\nIf-None-Match: {etag}\r\n\r\n"
            ),
        }
    }
}

/// Publishes batches of (channel, payload), pipelined, each server its way.
enum Publisher {
    /// cometbox: PUBLISH over the RESP socket; the floor: one line each.
    Unix(UnixStream, Kind),
    /// nchan: POST /pub/CHANNEL on keep-alive connections, pipelined.
    Nchan(Vec<TcpStream>),
    /// Pushpin: POST /publish/ with a JSON batch; its publish endpoint
    /// closes the connection after each answer, so one connection a batch.
    Pushpin(String),
}

impl Publisher {
    async fn connect(t: &Target) -> std::io::Result<Publisher> {
        Ok(match t.kind {
            Kind::Cometbox | Kind::Floor => {
                Publisher::Unix(UnixStream::connect(&t.publish).await?, t.kind)
            }
            Kind::Nchan => {
                let mut conns = Vec::new();
                for _ in 0..4 {
                    let s = TcpStream::connect(&t.publish).await?;
                    s.set_nodelay(true)?;
                    conns.push(s);
                }
                Publisher::Nchan(conns)
            }
            Kind::Pushpin => Publisher::Pushpin(t.publish.clone()),
        })
    }

    /// Sends the batch and waits for every reply; returns how many failed.
    async fn publish(&mut self, batch: &[(String, String)]) -> std::io::Result<usize> {
        match self {
            Publisher::Unix(s, Kind::Floor) => {
                let mut out = Vec::new();
                for (_, p) in batch {
                    out.extend_from_slice(p.as_bytes());
                    out.push(b'\n');
                }
                s.write_all(&out).await?;
                Ok(0)
            }
            Publisher::Unix(s, _) => {
                let mut out = Vec::new();
                for (c, p) in batch {
                    out.extend_from_slice(
                        format!(
                            "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{c}\r\n${}\r\n{p}\r\n",
                            c.len(),
                            p.len()
                        )
                        .as_bytes(),
                    );
                }
                s.write_all(&out).await?;
                // Replies are one line each: ":N\r\n" or "-ERR …\r\n".
                let (mut lines, mut failed, mut buf) = (0, 0, vec![0u8; 64 * 1024]);
                let mut partial_is_error = None;
                while lines < batch.len() {
                    let n = s.read(&mut buf).await?;
                    if n == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    for &b in &buf[..n] {
                        if partial_is_error.is_none() {
                            partial_is_error = Some(b == b'-');
                        }
                        if b == b'\n' {
                            lines += 1;
                            failed += usize::from(partial_is_error == Some(true));
                            partial_is_error = None;
                        }
                    }
                }
                Ok(failed)
            }
            Publisher::Nchan(conns) => {
                let per_conn: Vec<Vec<&(String, String)>> = (0..conns.len())
                    .map(|i| batch.iter().skip(i).step_by(conns.len()).collect())
                    .collect();
                for (conn, items) in conns.iter_mut().zip(&per_conn) {
                    let mut out = Vec::new();
                    for (c, p) in items {
                        out.extend_from_slice(
                            format!("POST /pub/{c} HTTP/1.1\r\nHost: bench\r\nContent-Length: {}\r\n\r\n{p}", p.len())
                                .as_bytes(),
                        );
                    }
                    conn.write_all(&out).await?;
                }
                let mut failed = 0;
                for (conn, items) in conns.iter_mut().zip(&per_conn) {
                    failed += read_responses(conn, items.len()).await?;
                }
                Ok(failed)
            }
            Publisher::Pushpin(addr) => {
                let list: Vec<Value> = batch
                    .iter()
                    .map(|(c, p)| json!({"channel": c, "formats": {"http-stream": {"content": format!("data: {p}\n\n")}}}))
                    .collect();
                let body = json!({ "items": list }).to_string();
                let mut conn = TcpStream::connect(addr.as_str()).await?;
                conn.write_all(
                    format!(
                        "POST /publish/ HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await?;
                read_responses(&mut conn, 1).await
            }
        }
    }
}

/// Reads `count` pipelined responses with Content-Length bodies; returns
/// how many were not 2xx.
async fn read_responses(conn: &mut TcpStream, count: usize) -> std::io::Result<usize> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let (mut done, mut failed) = (0, 0);
    while done < count {
        if let Some((head, len)) = parse_head(&buf) {
            let body: usize = head
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if buf.len() >= len + body {
                failed += usize::from(!(200..300).contains(&head.status));
                buf.drain(..len + body);
                done += 1;
                continue;
            }
        }
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(failed)
}

/// What every subscriber reports and the scenario waits on.
struct Shared {
    /// Subscribers whose response head arrived (or whose poll was sent).
    ready: AtomicUsize,
    /// Subscribers that could not open (refused, error status, reset).
    failed: AtomicUsize,
    /// Stamps received, all subscribers together (duplicates included).
    received: AtomicU64,
    /// For fan-out: how many subscribers have message `seq`.
    per_seq: Vec<AtomicUsize>,
    /// The newest receive time seen, ns.
    last_receive: AtomicU64,
    stop: watch::Receiver<bool>,
}

#[derive(Default)]
struct SubStats {
    latencies_ns: Vec<u64>,
    duplicates: u64,
    out_of_order: u64,
    failed: bool,
}

impl SubStats {
    fn record(&mut self, shared: &Shared, last: &mut Option<u64>, seq: u64, sent: u64) {
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

/// One SSE subscriber: opens the stream, counts itself ready at the head,
/// records every stamp until told to stop.
async fn sse_subscriber(t: Arc<Target>, channel: String, shared: Arc<Shared>) -> SubStats {
    let stats = sse_stream(t, channel, &shared).await;
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
async fn poll_client(
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

struct Args {
    n: usize,
    messages: usize,
    /// Publishes per pipelined batch: the next batch goes out when this
    /// one is acknowledged, so it bounds what is in flight.
    batch: usize,
    /// Publishes per second, for a latency figure at a load every server
    /// sustains; None = as fast as the server acknowledges.
    rate: Option<f64>,
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1e6
}

async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}

fn shared(per_seq: usize) -> (Arc<Shared>, watch::Sender<bool>) {
    let (tx, rx) = watch::channel(false);
    let shared = Shared {
        ready: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        received: AtomicU64::new(0),
        per_seq: (0..per_seq).map(|_| AtomicUsize::new(0)).collect(),
        last_receive: AtomicU64::new(0),
        stop: rx,
    };
    (Arc::new(shared), tx)
}

/// Totals over subscribers: lost is what never arrived at all.
fn summarize(all: Vec<SubStats>, expected: u64, result: &mut Value) {
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

/// How a fan-out subscriber reads: SSE, or a Bayeux client.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sub {
    Sse,
    /// Plain long-poll of the mailbox: the same request cycle per delivery
    /// as Bayeux long-polling, without Bayeux.
    LongPoll,
    BayeuxPoll,
    BayeuxWs,
}

async fn open_subscribers(
    t: &Arc<Target>,
    channels: Vec<String>,
    shared: &Arc<Shared>,
) -> Vec<tokio::task::JoinHandle<SubStats>> {
    open_subscribers_of(t, channels, shared, Sub::Sse).await
}

async fn open_subscribers_of(
    t: &Arc<Target>,
    channels: Vec<String>,
    shared: &Arc<Shared>,
    sub: Sub,
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
        let (t, shared) = (t.clone(), shared.clone());
        tasks.push(match sub {
            Sub::Sse => tokio::spawn(sse_subscriber(t, channel, shared)),
            Sub::LongPoll => tokio::spawn(poll_client(t, channel, u64::MAX, shared)),
            Sub::BayeuxPoll => tokio::spawn(bayeux::longpoll_subscriber(t, channel, shared)),
            Sub::BayeuxWs => tokio::spawn(bayeux::websocket_subscriber(t, channel, shared)),
        });
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

async fn collect(tasks: Vec<tokio::task::JoinHandle<SubStats>>) -> Vec<SubStats> {
    let mut all = Vec::with_capacity(tasks.len());
    for t in tasks {
        all.push(t.await.unwrap_or_default());
    }
    all
}

async fn idle(t: Arc<Target>, a: &Args, longpoll: bool) -> Value {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = procstat::pss_bytes(t.pid);
    let (shared, stop) = shared(0);
    let channels: Vec<String> = (0..a.n).map(|i| format!("idle{i}")).collect();
    let tasks = if longpoll {
        let mut tasks = Vec::new();
        for c in channels {
            tasks.push(tokio::spawn(poll_client(t.clone(), c, 1, shared.clone())));
        }
        wait_until(Duration::from_secs(60), || {
            shared.ready.load(Ordering::Relaxed) >= a.n
        })
        .await;
        tasks
    } else {
        open_subscribers(&t, channels, &shared).await
    };
    // Let the servers settle their per-connection state.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = procstat::pss_bytes(t.pid);
    let opened = shared.ready.load(Ordering::Relaxed);
    let _ = stop.send(true);
    collect(tasks).await;
    json!({
        "subscribers": opened,
        "server_pss_before_kb": before / 1024,
        "server_pss_after_kb": after / 1024,
        "bytes_per_subscriber": (after.saturating_sub(before)) as f64 / opened.max(1) as f64,
    })
}

async fn fanout(t: Arc<Target>, a: &Args, sub: Sub) -> Value {
    let (shared, stop) = shared(a.messages);
    let tasks = open_subscribers_of(&t, vec!["fanout".to_string(); a.n], &shared, sub).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut publisher = Publisher::connect(&t).await.expect("publisher connects");
    let (cpu0, own0) = (t.cpu(), procstat::own_cpu_seconds());
    let mut completion_ms = Vec::new();
    for seq in 0..a.messages {
        let sent = now_ns();
        let payload = stamp(seq as u64, sent);
        publisher
            .publish(&[("fanout".to_string(), payload)])
            .await
            .expect("publish");
        let all = wait_until(Duration::from_secs(10), || {
            shared.per_seq[seq].load(Ordering::Relaxed) >= a.n
        })
        .await;
        if all {
            completion_ms.push(
                (shared
                    .last_receive
                    .load(Ordering::Relaxed)
                    .saturating_sub(sent)) as f64
                    / 1e6,
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (cpu1, own1) = (t.cpu(), procstat::own_cpu_seconds());
    let _ = stop.send(true);
    let all = collect(tasks).await;
    completion_ms.sort_by(f64::total_cmp);
    let pick = |p: f64| {
        completion_ms
            .get(((completion_ms.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let deliveries = (a.n * a.messages) as f64;
    let mut result = json!({
        "subscribers": shared.ready.load(Ordering::Relaxed),
        "messages": a.messages,
        "completion_p50_ms": pick(0.5),
        "completion_p99_ms": pick(0.99),
        "complete_messages": completion_ms.len(),
        "server_cpu_s": cpu1 - cpu0,
        "client_cpu_s": own1 - own0,
        "server_cpu_per_delivery_us": (cpu1 - cpu0) / deliveries * 1e6,
    });
    summarize(all, deliveries as u64, &mut result);
    result
}

/// Publishes `total` stamped messages round-robin over `channels`, in
/// pipelined batches, and waits for them to arrive. The publisher runs on a
/// thread of its own: on the subscribers' single-threaded runtime a
/// publisher whose socket is always ready would starve their reads and the
/// latencies would measure the load generator, not the server.
async fn publish_all(
    t: &Arc<Target>,
    channels: usize,
    total: usize,
    batch_size: usize,
    rate: Option<f64>,
    shared: &Shared,
) -> (f64, usize) {
    let target = t.clone();
    let publisher = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut publisher = Publisher::connect(&target)
                .await
                .expect("publisher connects");
            let started = now_ns();
            let mut failed = 0;
            let mut seq = 0;
            while seq < total {
                let batch: Vec<(String, String)> = (seq..(seq + batch_size).min(total))
                    .map(|i| (format!("ch{}", i % channels), stamp(i as u64, now_ns())))
                    .collect();
                seq += batch.len();
                failed += publisher.publish(&batch).await.expect("publish");
                if let Some(rate) = rate {
                    let due = started + (seq as f64 / rate * 1e9) as u64;
                    let now = now_ns();
                    if due > now {
                        tokio::time::sleep(Duration::from_nanos(due - now)).await;
                    }
                }
            }
            (started, failed)
        })
    });
    while !publisher.is_finished() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (started, failed) = publisher.join().expect("the publisher thread");
    wait_until(Duration::from_secs(30), || {
        shared.received.load(Ordering::Relaxed) >= total as u64
    })
    .await;
    let end = shared.last_receive.load(Ordering::Relaxed);
    ((end.saturating_sub(started)) as f64 / 1e9, failed)
}

/// Publishes `a.messages` over `a.n` channels to subscribers already
/// waiting, then collects them: what throughput and longpoll share.
async fn publish_and_collect(
    t: &Arc<Target>,
    a: &Args,
    shared: &Shared,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<SubStats>>,
) -> Value {
    let (cpu0, own0) = (t.cpu(), procstat::own_cpu_seconds());
    let (secs, failed) = publish_all(t, a.n, a.messages, a.batch, a.rate, shared).await;
    let (cpu1, own1) = (t.cpu(), procstat::own_cpu_seconds());
    let _ = stop.send(true);
    let all = collect(tasks).await;
    let mut result = json!({
        "batch": a.batch, "rate": a.rate, "channels": a.n, "published": a.messages,
        "publish_errors": failed, "seconds": secs,
        "server_cpu_s": cpu1 - cpu0, "client_cpu_s": own1 - own0,
    });
    summarize(all, a.messages as u64, &mut result);
    result["msgs_per_s"] = json!(result["delivered"].as_u64().unwrap_or(0) as f64 / secs);
    result
}

async fn throughput(t: Arc<Target>, a: &Args) -> Value {
    let (shared, stop) = shared(0);
    let tasks = open_subscribers(&t, (0..a.n).map(|i| format!("ch{i}")).collect(), &shared).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    publish_and_collect(&t, a, &shared, stop, tasks).await
}

async fn longpoll(t: Arc<Target>, a: &Args) -> Value {
    let (shared, stop) = shared(0);
    let per_client = (a.messages / a.n) as u64;
    let mut tasks = Vec::new();
    for i in 0..a.n {
        tasks.push(tokio::spawn(poll_client(
            t.clone(),
            format!("ch{i}"),
            per_client,
            shared.clone(),
        )));
    }
    wait_until(Duration::from_secs(30), || {
        shared.ready.load(Ordering::Relaxed) >= a.n
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    publish_and_collect(&t, a, &shared, stop, tasks).await
}

/// Opens one SSE subscription and returns the socket once its head arrived.
async fn open_one(t: Arc<Target>, channel: String) -> Option<TcpStream> {
    let mut s = TcpStream::connect(t.http).await.ok()?;
    s.write_all(t.sse_request(&channel).as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some((head, _)) = parse_head(&buf) {
            return (head.status == 200).then_some(s);
        }
    }
}

/// One round of `connect`: opens `n` subscriptions, 100 being set up at any
/// moment (as many browsers would), and returns those that opened.
async fn connect_round(t: &Arc<Target>, n: usize, round: usize) -> Vec<TcpStream> {
    let limit = Arc::new(Semaphore::new(100));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let permit = limit.clone().acquire_owned().await.unwrap();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let s = open_one(t, format!("conn{round}-{i}")).await;
            drop(permit);
            s
        }));
    }
    let mut open = Vec::with_capacity(n);
    for task in tasks {
        if let Ok(Some(s)) = task.await {
            open.push(s);
        }
    }
    open
}

/// Connection setup rate: the median of five rounds, since one round of a
/// few thousand loopback connections swings by 2x with the kernel's timing.
async fn connect(t: Arc<Target>, a: &Args) -> Value {
    let (cpu0, own0) = (procstat::cpu_seconds(t.pid), procstat::own_cpu_seconds());
    let mut rates = Vec::new();
    let mut failed = 0;
    for round in 0..5 {
        let start = Instant::now();
        let open = connect_round(&t, a.n, round).await;
        rates.push(open.len() as f64 / start.elapsed().as_secs_f64());
        failed += a.n - open.len();
        drop(open);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (cpu1, own1) = (procstat::cpu_seconds(t.pid), procstat::own_cpu_seconds());
    let mut sorted = rates.clone();
    sorted.sort_by(f64::total_cmp);
    json!({
        "connections": a.n * 5 - failed, "failed": failed, "rounds_per_s": rates,
        "connections_per_s": sorted[2],
        "server_cpu_s": cpu1 - cpu0, "client_cpu_s": own1 - own0,
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(scenario) = args.first().cloned() else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    procstat::raise_nofile();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match scenario.as_str() {
        "floor" => servers::floor(
            arg(&args, "--port")
                .and_then(|p| p.parse().ok())
                .unwrap_or(0),
            &arg(&args, "--control").expect("--control PATH"),
        ),
        "origin" => rt.block_on(servers::grip_origin(
            arg(&args, "--port")
                .and_then(|p| p.parse().ok())
                .unwrap_or(0),
        )),
        "report-cluster" => servers::report_cluster(&args.get(1).cloned().expect("RESULTS.jsonl")),
        "report" => servers::report(
            &arg(&args, "report")
                .or_else(|| args.get(1).cloned())
                .expect("RESULTS.jsonl"),
        ),
        "idle-sse"
        | "idle-longpoll"
        | "fanout"
        | "throughput"
        | "throughput-paced"
        | "longpoll"
        | "connect"
        | "publish"
        | "fanout-longpoll"
        | "fanout-bayeux-longpoll"
        | "fanout-bayeux-websocket" => {
            let kind = match arg(&args, "--target").as_deref() {
                Some("cometbox") => Kind::Cometbox,
                Some("nchan") => Kind::Nchan,
                Some("pushpin") => Kind::Pushpin,
                Some("floor") => Kind::Floor,
                _ => {
                    eprintln!("{USAGE}");
                    std::process::exit(2);
                }
            };
            let t = Arc::new(Target {
                kind,
                http: arg(&args, "--http")
                    .and_then(|a| a.parse().ok())
                    .expect("--http ADDR"),
                publish: arg(&args, "--publish").unwrap_or_default(),
                pid: arg(&args, "--pid")
                    .and_then(|p| p.parse().ok())
                    .expect("--pid PID"),
                more_http: arg(&args, "--http2")
                    .and_then(|a| a.parse().ok())
                    .into_iter()
                    .collect(),
                more_pids: arg(&args, "--pid2")
                    .and_then(|p| p.parse().ok())
                    .into_iter()
                    .collect(),
                next_http: AtomicUsize::new(0),
            });
            let a = Args {
                n: arg(&args, "--n")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1000),
                messages: arg(&args, "--messages")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(20),
                batch: arg(&args, "--batch")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(500),
                rate: arg(&args, "--rate").and_then(|v| v.parse().ok()),
            };
            let started = Instant::now();
            let mut result = rt.block_on(async {
                match scenario.as_str() {
                    "idle-sse" => idle(t.clone(), &a, false).await,
                    "idle-longpoll" => idle(t.clone(), &a, true).await,
                    "fanout" => fanout(t.clone(), &a, Sub::Sse).await,
                    "fanout-longpoll" => fanout(t.clone(), &a, Sub::LongPoll).await,
                    "fanout-bayeux-longpoll" => fanout(t.clone(), &a, Sub::BayeuxPoll).await,
                    "fanout-bayeux-websocket" => fanout(t.clone(), &a, Sub::BayeuxWs).await,
                    "throughput" | "throughput-paced" => throughput(t.clone(), &a).await,
                    "longpoll" => longpoll(t.clone(), &a).await,
                    "publish" => {
                        let num = |name| arg(&args, name).and_then(|v| v.parse().ok());
                        let (size, conns) = (num("--size").unwrap_or(0), num("--connections"));
                        let t = t.clone();
                        let a = Args { ..a };
                        tokio::task::spawn_blocking(move || {
                            acks::publish_only(t, &a, size, conns.unwrap_or(1))
                        })
                        .await
                        .expect("the publish scenario")
                    }
                    _ => connect(t.clone(), &a).await,
                }
            });
            result["scenario"] = json!(scenario);
            result["target"] = json!(t.name());
            result["wall_s"] = json!(started.elapsed().as_secs_f64());
            println!("{result}");
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}
