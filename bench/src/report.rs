//! The markdown tables of a results file: each scenario's figures per
//! server as the median of its repetitions with their spread, and
//! cometbox's ratios to nchan and to the floor.

use serde_json::Value;

fn read_runs(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("read results");
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Every value of `field` over the runs of (scenario, target), sorted.
fn values(runs: &[Value], scenario: &str, target: &str, field: &str) -> Vec<f64> {
    let mut v: Vec<f64> = runs
        .iter()
        .filter(|r| r["scenario"] == scenario && r["target"] == target)
        .filter_map(|r| r[field].as_f64())
        .filter(|v| !v.is_nan())
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

fn median(sorted: &[f64]) -> Option<f64> {
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[n / 2]),
        n => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// "median (min–max)" over repetitions, or the one value.
fn cell(sorted: &[f64]) -> String {
    match (median(sorted), sorted.first(), sorted.last()) {
        (Some(m), Some(&lo), Some(&hi)) if sorted.len() > 1 && lo != hi => format!(
            "{} ({}–{})",
            format_number(m),
            format_number(lo),
            format_number(hi)
        ),
        (Some(m), ..) => format_number(m),
        _ => "–".to_string(),
    }
}

/// (scenario, field, label) of each row of the main table.
const ROWS: &[(&str, &str, &str)] = &[
    (
        "idle-sse",
        "bytes_per_subscriber",
        "idle SSE, a mailbox each: memory per subscriber (B)",
    ),
    (
        "idle-ws",
        "bytes_per_subscriber",
        "idle WebSocket, a mailbox each: memory per subscriber (B)",
    ),
    (
        "idle-longpoll",
        "bytes_per_subscriber",
        "idle long-poll, a mailbox each: memory per subscriber (B)",
    ),
    (
        "idle-one-mailbox",
        "bytes_per_subscriber",
        "idle SSE, all on one mailbox: memory per subscriber (B)",
    ),
    (
        "fanout",
        "completion_p50_ms",
        "fan-out SSE: completion p50 (ms)",
    ),
    (
        "fanout",
        "completion_p99_ms",
        "fan-out SSE: completion p99 (ms)",
    ),
    (
        "fanout",
        "server_cpu_per_delivery_us",
        "fan-out SSE: server CPU per delivery (µs)",
    ),
    ("fanout", "lost", "fan-out SSE: lost"),
    (
        "fanout-ws",
        "completion_p50_ms",
        "fan-out WebSocket: completion p50 (ms)",
    ),
    (
        "fanout-ws",
        "completion_p99_ms",
        "fan-out WebSocket: completion p99 (ms)",
    ),
    (
        "fanout-ws",
        "server_cpu_per_delivery_us",
        "fan-out WebSocket: server CPU per delivery (µs)",
    ),
    ("fanout-ws", "lost", "fan-out WebSocket: lost"),
    (
        "fanout-longpoll",
        "completion_p50_ms",
        "fan-out long-poll: completion p50 (ms)",
    ),
    (
        "fanout-longpoll",
        "completion_p99_ms",
        "fan-out long-poll: completion p99 (ms)",
    ),
    (
        "fanout-longpoll",
        "server_cpu_per_delivery_us",
        "fan-out long-poll: server CPU per delivery (µs)",
    ),
    ("fanout-longpoll", "lost", "fan-out long-poll: lost"),
    (
        "fanout-longpoll",
        "duplicated",
        "fan-out long-poll: duplicated",
    ),
    (
        "fanout-bayeux-websocket",
        "completion_p50_ms",
        "fan-out Bayeux WebSocket: completion p50 (ms)",
    ),
    (
        "fanout-bayeux-websocket",
        "completion_p99_ms",
        "fan-out Bayeux WebSocket: completion p99 (ms)",
    ),
    (
        "fanout-bayeux-websocket",
        "server_cpu_per_delivery_us",
        "fan-out Bayeux WebSocket: server CPU per delivery (µs)",
    ),
    (
        "fanout-bayeux-websocket",
        "lost",
        "fan-out Bayeux WebSocket: lost",
    ),
    (
        "fanout-bayeux-longpoll",
        "completion_p50_ms",
        "fan-out Bayeux long-polling: completion p50 (ms)",
    ),
    (
        "fanout-bayeux-longpoll",
        "completion_p99_ms",
        "fan-out Bayeux long-polling: completion p99 (ms)",
    ),
    (
        "fanout-bayeux-longpoll",
        "server_cpu_per_delivery_us",
        "fan-out Bayeux long-polling: server CPU per delivery (µs)",
    ),
    (
        "fanout-bayeux-longpoll",
        "lost",
        "fan-out Bayeux long-polling: lost",
    ),
    ("throughput", "msgs_per_s", "throughput: delivered msg/s"),
    (
        "throughput",
        "server_cpu_per_msg_us",
        "throughput: server CPU per message (µs)",
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
        "throughput at a fixed 30,000 msg/s: latency p50 (ms)",
    ),
    (
        "throughput-paced",
        "latency_p99_ms",
        "throughput at a fixed 30,000 msg/s: latency p99 (ms)",
    ),
    ("longpoll", "msgs_per_s", "long-poll: delivered msg/s"),
    (
        "longpoll",
        "server_cpu_per_msg_us",
        "long-poll: server CPU per message (µs)",
    ),
    ("longpoll", "lost", "long-poll: lost"),
    (
        "connect",
        "connections_per_s",
        "connection setup: subscriptions/s",
    ),
];

pub fn report(path: &str) {
    let runs = read_runs(path);
    let targets = ["cometbox", "nchan", "pushpin", "floor"];
    println!("Medians of the repetitions, (min–max) where they differ.");
    println!();
    println!(
        "| scenario | cometbox | nchan | Pushpin | floor | cometbox ÷ nchan | cometbox ÷ floor |"
    );
    println!("|---|---|---|---|---|---|---|");
    for &(scenario, field, label) in ROWS {
        let all: Vec<Vec<f64>> = targets
            .iter()
            .map(|t| values(&runs, scenario, t, field))
            .collect();
        if all.iter().all(|v| v.is_empty()) {
            continue;
        }
        let ratio = |other: usize| match (median(&all[0]), median(&all[other])) {
            (Some(c), Some(o)) if o != 0.0 => format!("{:.2}×", c / o),
            _ => "–".to_string(),
        };
        let cells: Vec<String> = all.iter().map(|v| cell(v)).collect();
        // The floor holds an idle client as a file descriptor in a list:
        // its memory is a lower bound, not a server to compare with.
        let floor = if scenario.starts_with("idle") {
            "–".to_string()
        } else {
            ratio(3)
        };
        println!(
            "| {label} | {} | {} | {floor} |",
            cells.join(" | "),
            ratio(1)
        );
    }
    per_transport(&runs);
    let loads: Vec<f64> = runs
        .iter()
        .filter_map(|r| r["loadavg_1m"].as_f64())
        .collect();
    if let (Some(lo), Some(hi)) = (
        loads.iter().copied().reduce(f64::min),
        loads.iter().copied().reduce(f64::max),
    ) {
        println!();
        println!("1-minute load average at the scenarios' starts: {lo:.2}–{hi:.2} (2 cores).");
    }
}

/// cometbox's fan-out over each transport beside its own SSE fan-out:
/// server CPU per delivery, median of the repetitions, and the ratio of
/// the medians (issue #15 wants Bayeux within 1.5× of SSE's); beside it
/// the floor's cost of the same exchange (a Bayeux transport's is its
/// plain counterpart's: the floor speaks no Bayeux) and the floor's own
/// ratio to its SSE, which no server that reads requests can beat.
fn per_transport(runs: &[Value]) {
    const FANOUTS: &[(&str, &str, &str)] = &[
        ("fanout", "SSE", "fanout"),
        ("fanout-ws", "WebSocket", "fanout-ws"),
        ("fanout-longpoll", "long-poll", "fanout-longpoll"),
        ("fanout-bayeux-websocket", "Bayeux WebSocket", "fanout-ws"),
        (
            "fanout-bayeux-longpoll",
            "Bayeux long-polling",
            "fanout-longpoll",
        ),
    ];
    let field = "server_cpu_per_delivery_us";
    let sse = median(&values(runs, "fanout", "cometbox", field));
    let floor_sse = median(&values(runs, "fanout", "floor", field));
    let rows: Vec<(&str, Vec<f64>, Vec<f64>)> = FANOUTS
        .iter()
        .map(|&(scenario, label, floor)| {
            (
                label,
                values(runs, scenario, "cometbox", field),
                values(runs, floor, "floor", field),
            )
        })
        .filter(|(_, v, _)| !v.is_empty())
        .collect();
    if rows.len() < 2 {
        return;
    }
    println!();
    println!("cometbox's fan-out per transport beside its SSE fan-out, and the floor's:");
    if sse.is_none() {
        println!("(no `fanout` for cometbox in this run: no ratio)");
    }
    println!();
    println!(
        "| fan-out over | server CPU per delivery (µs) | ÷ SSE | floor (µs) | floor ÷ its SSE | ÷ floor |"
    );
    println!("|---|---|---|---|---|---|");
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => format!("{:.2}×", a / b),
        _ => "–".to_string(),
    };
    for (label, v, floor) in rows {
        let floor_cell = if floor.is_empty() {
            "–".to_string()
        } else {
            cell(&floor)
        };
        println!(
            "| {label} | {} | {} | {floor_cell} | {} | {} |",
            cell(&v),
            ratio(median(&v), sse),
            ratio(median(&floor), floor_sse),
            ratio(median(&v), median(&floor)),
        );
    }
}

fn format_number(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v >= 100.0 || (v == v.trunc() && v.abs() < 1e12) {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{:.1}", v)
    } else {
        format!("{:.2}", v)
    }
}

/// The cluster table: one gateway in memory beside two sharing a Redis.
pub fn report_cluster(path: &str) {
    let runs = read_runs(path);
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
