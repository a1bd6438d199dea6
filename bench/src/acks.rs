//! The `publish` scenario: publishers only, no subscribers, for what a
//! store costs a backend: acknowledged publishes per second and the time
//! from sending a PUBLISH to reading its reply (p50/p99), with `--batch`
//! publishes in flight per connection. What the disk store's fsync
//! policies are measured with (bench/disk.sh).

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use crate::Args;
use crate::clients::percentile;
use crate::http::{now_ns, stamp};
use crate::procstat;
use crate::publish::Publisher;
use crate::target::Target;

/// Publishes `a.messages` payloads of `size` bytes round-robin over
/// `a.n` mailboxes on `connections` connections, each on its own thread.
pub fn publish_only(t: Arc<Target>, a: &Args, size: usize, connections: usize) -> Value {
    let (cpu0, own0) = (procstat::cpu_seconds(t.pid), procstat::own_cpu_seconds());
    let started = Instant::now();
    let per_conn = a.messages / connections.max(1);
    let threads: Vec<_> = (0..connections.max(1))
        .map(|c| {
            let (t, channels, batch) = (t.clone(), a.n, a.batch);
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let mut publisher = Publisher::connect(&t).await.expect("publisher connects");
                    let mut latencies = Vec::with_capacity(per_conn);
                    let mut failed = 0;
                    let mut seq = 0;
                    while seq < per_conn {
                        let batch: Vec<(String, String)> = (seq..(seq + batch).min(per_conn))
                            .map(|i| {
                                let n = (c * per_conn + i) as u64;
                                let mut p = stamp(n, now_ns());
                                p.extend(std::iter::repeat_n('x', size.saturating_sub(p.len())));
                                (format!("ch{}", n as usize % channels), p)
                            })
                            .collect();
                        seq += batch.len();
                        let sent = now_ns();
                        failed += publisher.publish(&batch).await.expect("publish");
                        let took = now_ns() - sent;
                        latencies.extend(std::iter::repeat_n(took, batch.len()));
                    }
                    (latencies, failed)
                })
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failed = 0;
    for thread in threads {
        let (l, f) = thread.join().expect("a publisher thread");
        latencies.extend(l);
        failed += f;
    }
    let secs = started.elapsed().as_secs_f64();
    let (cpu1, own1) = (procstat::cpu_seconds(t.pid), procstat::own_cpu_seconds());
    latencies.sort_unstable();
    json!({
        "channels": a.n, "published": latencies.len(), "publish_errors": failed,
        "batch": a.batch, "size": size, "connections": connections, "seconds": secs,
        "msgs_per_s": latencies.len() as f64 / secs,
        "ack_p50_ms": percentile(&latencies, 0.5), "ack_p99_ms": percentile(&latencies, 0.99),
        "server_cpu_s": cpu1 - cpu0, "client_cpu_s": own1 - own0,
    })
}
