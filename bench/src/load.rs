//! The rate scenarios: throughput over many mailboxes (flat out or at a
//! fixed rate), long-poll re-polling, and connection setup.

use crate::Args;
use crate::clients::{
    Shared, SubStats, Transport, collect, open_subscribers, poll_client, shared, summarize,
    wait_until,
};
use crate::http::{now_ns, parse_head, stamp};
use crate::procstat;
use crate::publish::Publisher;
use crate::target::Target;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};

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
    // The load generator is near its own ceiling here, so msg/s alone
    // understates a server with cores to spare: its CPU per message is the
    // figure to compare.
    let delivered = result["delivered"].as_u64().unwrap_or(0).max(1) as f64;
    result["server_cpu_per_msg_us"] = json!((cpu1 - cpu0) / delivered * 1e6);
    result
}

pub async fn throughput(t: Arc<Target>, a: &Args) -> Value {
    let (shared, stop) = shared(0);
    let tasks = open_subscribers(
        &t,
        (0..a.n).map(|i| format!("ch{i}")).collect(),
        &shared,
        Transport::Sse,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    publish_and_collect(&t, a, &shared, stop, tasks).await
}

pub async fn longpoll(t: Arc<Target>, a: &Args) -> Value {
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
pub async fn connect(t: Arc<Target>, a: &Args) -> Value {
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
