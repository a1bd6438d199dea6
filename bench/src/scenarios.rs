//! The subscriber-count scenarios: idle memory per subscriber and fan-out
//! of one mailbox to many, over SSE, WebSocket and long-poll, and (cometbox
//! only) Bayeux over WebSocket and long-polling.

use crate::Args;
use crate::clients::{
    Poll, SubStats, Transport, collect, open_subscribers, poller, shared, summarize, wait_until,
};
use crate::http::{now_ns, stamp};
use crate::procstat;
use crate::publish::Publisher;
use crate::target::Target;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::task::JoinHandle;

/// What idle subscribers wait with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Idle {
    /// SSE or WebSocket, one mailbox each.
    Stream(Transport),
    /// A held long-poll, one mailbox each.
    LongPoll,
    /// SSE, all of them on one mailbox (a single subscriber list).
    OneMailbox,
}

/// Opens `channels.len()` long-poll clients, 100 connecting at once at
/// most (as `open_subscribers` does), each expecting `expect` stamps.
async fn open_pollers(
    t: &Arc<Target>,
    channels: Vec<String>,
    expect: u64,
    shared: &Arc<crate::clients::Shared>,
    how: Poll,
) -> Vec<JoinHandle<SubStats>> {
    let n = channels.len();
    let mut tasks = Vec::with_capacity(n);
    for (i, channel) in channels.into_iter().enumerate() {
        wait_until(Duration::from_secs(10), || {
            shared.ready.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed) + 100 > i
        })
        .await;
        tasks.push(tokio::spawn(poller(
            t.clone(),
            channel,
            expect,
            shared.clone(),
            how,
        )));
    }
    wait_until(Duration::from_secs(60), || {
        shared.ready.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed) >= n
    })
    .await;
    tasks
}

pub async fn idle(t: Arc<Target>, a: &Args, how: Idle) -> Value {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = procstat::pss_bytes(t.pid);
    let (shared, stop) = shared(0);
    let channels: Vec<String> = match how {
        Idle::OneMailbox => vec!["one".to_string(); a.n],
        _ => (0..a.n).map(|i| format!("idle{i}")).collect(),
    };
    let tasks = match how {
        Idle::LongPoll => open_pollers(&t, channels, 1, &shared, Poll::Mailbox).await,
        Idle::Stream(transport) => open_subscribers(&t, channels, &shared, transport).await,
        Idle::OneMailbox => open_subscribers(&t, channels, &shared, Transport::Sse).await,
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

/// Publishes `a.messages` stamped messages to mailbox "fanout", one at a
/// time: each once every subscriber has the previous one and `ready_for`
/// says the subscribers are set for it (long-polls re-polled). Returns the
/// completion time of each message (publish to the last subscriber's
/// receipt, ms) and the server's and the load generator's CPU seconds.
async fn publish_rounds(
    t: &Arc<Target>,
    a: &Args,
    shared: &crate::clients::Shared,
    ready_for: impl Fn(usize) -> bool,
) -> (Vec<f64>, f64, f64) {
    let mut publisher = Publisher::connect(t).await.expect("publisher connects");
    let (cpu0, own0) = (t.cpu(), procstat::own_cpu_seconds());
    let mut completion_ms = Vec::new();
    for seq in 0..a.messages {
        wait_until(Duration::from_secs(10), || ready_for(seq)).await;
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
            let last = shared.last_receive.load(Ordering::Relaxed);
            completion_ms.push(last.saturating_sub(sent) as f64 / 1e6);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (cpu1, own1) = (t.cpu(), procstat::own_cpu_seconds());
    (completion_ms, cpu1 - cpu0, own1 - own0)
}

fn fanout_result(
    a: &Args,
    subscribers: usize,
    mut completion_ms: Vec<f64>,
    server_cpu: f64,
    client_cpu: f64,
    all: Vec<SubStats>,
) -> Value {
    // In publish order, rounded to 0.1 ms: which message was the slow one.
    let in_order: Vec<f64> = completion_ms
        .iter()
        .map(|ms| (ms * 10.0).round() / 10.0)
        .collect();
    completion_ms.sort_by(f64::total_cmp);
    let pick = |p: f64| {
        completion_ms
            .get(((completion_ms.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let deliveries = (a.n * a.messages) as f64;
    let mut result = json!({
        "subscribers": subscribers,
        "messages": a.messages,
        "completion_p50_ms": pick(0.5),
        "completion_p99_ms": pick(0.99),
        "completion_ms": in_order,
        "complete_messages": completion_ms.len(),
        "server_cpu_s": server_cpu,
        "client_cpu_s": client_cpu,
        "server_cpu_per_delivery_us": server_cpu / deliveries * 1e6,
    });
    summarize(all, deliveries as u64, &mut result);
    result
}

/// Fan-out to `a.n` SSE, WebSocket or Bayeux WebSocket subscribers of one
/// mailbox (Bayeux: of its channel, `/fanout`).
pub async fn fanout(t: Arc<Target>, a: &Args, transport: Transport) -> Value {
    let (shared, stop) = shared(a.messages);
    let channels = vec!["fanout".to_string(); a.n];
    let tasks = open_subscribers(&t, channels, &shared, transport).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (completion, server, client) = publish_rounds(&t, a, &shared, |_| true).await;
    let _ = stop.send(true);
    let all = collect(tasks).await;
    let subscribers = shared.ready.load(Ordering::Relaxed);
    fanout_result(a, subscribers, completion, server, client, all)
}

/// Fan-out to `a.n` waiting long-polls of one mailbox: each round every
/// client re-polls (with its cursor; a Bayeux client with its next
/// `/meta/connect`) before the next message is published, so completion
/// is publish to the last answer, as for a stream.
pub async fn fanout_longpoll(t: Arc<Target>, a: &Args, how: Poll) -> Value {
    let (shared, stop) = shared(a.messages);
    let channels = vec!["fanout".to_string(); a.n];
    let tasks = open_pollers(&t, channels, a.messages as u64, &shared, how).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n = a.n;
    // Before message `seq`, every client has sent its first poll and `seq`
    // re-polls.
    let polled = |seq: usize| shared.polls.load(Ordering::Relaxed) >= n * (seq + 1);
    let (completion, server, client) = publish_rounds(&t, a, &shared, polled).await;
    let _ = stop.send(true);
    let all = collect(tasks).await;
    fanout_result(
        a,
        n - shared.failed.load(Ordering::Relaxed),
        completion,
        server,
        client,
        all,
    )
}
