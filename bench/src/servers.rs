//! The helpers the comparison needs besides the load: the write-only floor
//! server, a GRIP origin for Pushpin, and the report.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixListener;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The fan-out floor: accepts SSE requests and, for each line on the
/// control socket, writes one prebuilt `data:` event to every client in a
/// plain loop. No parsing, no queues, no mailbox: what is left is the cost
/// of the writes themselves, the bound no real server can beat.
pub fn floor(port: u16, control: &str) {
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    eprintln!("floor listening on {}", listener.local_addr().unwrap());
    let clients: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    let accepted = clients.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let accepted = accepted.clone();
            // Read the request head on a thread of its own, then hand over.
            std::thread::spawn(move || {
                let mut s = stream;
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut byte).unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let _ = s.set_nodelay(true);
                if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n").is_ok() {
                    accepted.lock().unwrap().push(s);
                }
            });
        }
    });
    let _ = std::fs::remove_file(control);
    let control = UnixListener::bind(control).expect("bind the control socket");
    for conn in control.incoming().flatten() {
        for line in BufReader::new(conn).lines() {
            let Ok(line) = line else { break };
            let event = format!("data: {line}\n\n").into_bytes();
            let mut clients = clients.lock().unwrap();
            clients.retain_mut(|c| c.write_all(&event).is_ok());
        }
    }
}

/// A GRIP origin: answers every GET with `Grip-Hold: stream` on the channel
/// named by the last path segment, so Pushpin holds the client's SSE
/// stream open and publishes reach it.
pub async fn grip_origin(port: u16) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    eprintln!(
        "grip origin listening on {}",
        listener.local_addr().unwrap()
    );
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    let path = head.split(' ').nth(1).unwrap_or("/");
                    let channel = path
                        .rsplit('/')
                        .next()
                        .unwrap_or("")
                        .split('?')
                        .next()
                        .unwrap_or("");
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nGrip-Hold: stream\r\nGrip-Channel: {channel}\r\nContent-Length: 0\r\n\r\n"
                    );
                    if s.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        });
    }
}

/// The markdown table of a results file: each scenario's figures per
/// server, and cometbox's ratio to nchan.
pub fn report(path: &str) {
    let text = std::fs::read_to_string(path).expect("read results");
    let runs: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let targets = ["cometbox", "nchan", "pushpin", "floor"];
    // (scenario, field, label, lower is better)
    let rows = [
        (
            "idle-sse",
            "bytes_per_subscriber",
            "idle SSE: server memory per subscriber (B)",
            true,
        ),
        (
            "idle-longpoll",
            "bytes_per_subscriber",
            "idle long-poll: server memory per subscriber (B)",
            true,
        ),
        (
            "fanout",
            "completion_p50_ms",
            "fan-out: completion p50 (ms)",
            true,
        ),
        (
            "fanout",
            "completion_p99_ms",
            "fan-out: completion p99 (ms)",
            true,
        ),
        (
            "fanout",
            "server_cpu_per_delivery_us",
            "fan-out: server CPU per delivery (µs)",
            true,
        ),
        ("fanout", "lost", "fan-out: lost deliveries", true),
        (
            "throughput",
            "msgs_per_s",
            "throughput: delivered msg/s",
            false,
        ),
        (
            "throughput",
            "latency_p99_ms",
            "throughput: latency p99 (ms)",
            true,
        ),
        ("throughput", "lost", "throughput: lost", true),
        (
            "throughput-paced",
            "latency_p50_ms",
            "throughput at a fixed 30,000 msg/s: latency p50 (ms)",
            true,
        ),
        (
            "throughput-paced",
            "latency_p99_ms",
            "throughput at a fixed 30,000 msg/s: latency p99 (ms)",
            true,
        ),
        (
            "longpoll",
            "msgs_per_s",
            "long-poll: delivered msg/s",
            false,
        ),
        ("longpoll", "lost", "long-poll: lost", true),
        (
            "connect",
            "connections_per_s",
            "connection setup: subscriptions/s",
            false,
        ),
    ];
    println!("| scenario | cometbox | nchan | Pushpin | floor | cometbox ÷ nchan |");
    println!("|---|---|---|---|---|---|");
    for (scenario, field, label, _lower_better) in rows {
        let value = |target: &str| {
            runs.iter()
                .rev()
                .find(|r| r["scenario"] == scenario && r["target"] == target)
                .and_then(|r| r[field].as_f64())
        };
        let cells: Vec<String> = targets
            .iter()
            .map(|t| value(t).map_or("–".to_string(), format_number))
            .collect();
        let ratio = match (value("cometbox"), value("nchan")) {
            (Some(c), Some(n)) if n != 0.0 => format!("{:.2}×", c / n),
            _ => "–".to_string(),
        };
        println!("| {label} | {} | {ratio} |", cells.join(" | "));
    }
}

fn format_number(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v >= 100.0 {
        format!("{:.0}", v)
    } else if v >= 10.0 {
        format!("{:.1}", v)
    } else {
        format!("{:.2}", v)
    }
}

/// The cluster table: one gateway in memory beside two sharing a Redis.
pub fn report_cluster(path: &str) {
    let text = std::fs::read_to_string(path).expect("read results");
    let runs: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let rows = [
        (
            "fanout",
            "completion_p50_ms",
            "fan-out: completion p50 (ms)",
        ),
        (
            "fanout",
            "completion_p99_ms",
            "fan-out: completion p99 (ms)",
        ),
        (
            "fanout",
            "server_cpu_per_delivery_us",
            "fan-out: server CPU per delivery (µs, all nodes)",
        ),
        ("fanout", "lost", "fan-out: lost deliveries"),
        ("fanout", "duplicated", "fan-out: duplicated deliveries"),
        ("throughput", "msgs_per_s", "throughput: delivered msg/s"),
        (
            "throughput",
            "latency_p50_ms",
            "throughput: latency p50 (ms)",
        ),
        (
            "throughput",
            "latency_p99_ms",
            "throughput: latency p99 (ms)",
        ),
        ("throughput", "lost", "throughput: lost"),
        (
            "throughput-paced",
            "latency_p50_ms",
            "fixed rate: latency p50 (ms)",
        ),
        (
            "throughput-paced",
            "latency_p99_ms",
            "fixed rate: latency p99 (ms)",
        ),
        ("throughput-paced", "lost", "fixed rate: lost"),
    ];
    println!("| scenario | single node | two nodes + Redis | cluster ÷ single |");
    println!("|---|---|---|---|");
    for (scenario, field, label) in rows {
        let value = |target: &str| {
            runs.iter()
                .rev()
                .find(|r| r["scenario"] == scenario && r["target"] == target)
                .and_then(|r| r[field].as_f64())
        };
        let (single, cluster) = (value("cometbox"), value("cometbox-cluster"));
        let ratio = match (single, cluster) {
            (Some(s), Some(c)) if s != 0.0 => format!("{:.2}×", c / s),
            _ => "–".to_string(),
        };
        let show = |v: Option<f64>| v.map_or("–".to_string(), format_number);
        println!(
            "| {label} | {} | {} | {ratio} |",
            show(single),
            show(cluster)
        );
    }
}
