//! The Prometheus text exposition format (version 0.0.4) of the gateway's
//! numbers: `_total` counters, base units (seconds, bytes), bounded labels
//! only (never a mailbox name). Pure: numbers in, text out; the metrics
//! listener (`crate::ops`) gathers the store's numbers into [`StoreNumbers`].

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{AUTH_REASONS, COMMANDS, LATENCY_BOUNDS, Metrics, Unavailable};

/// The media type a scrape is answered with.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the store knows, read by the caller (metrics does not know the
/// store).
#[derive(Default, Debug, Clone)]
pub struct StoreNumbers {
    pub mailboxes: u64,
    pub retained_messages: u64,
    pub retained_bytes: u64,
    pub memory_bytes: u64,
    pub published: u64,
    pub evicted_by_count: u64,
    pub evicted_by_memory: u64,
    pub expired: u64,
    /// (reason label, count) of refused publishes.
    pub rejected: Vec<(&'static str, u64)>,
    /// Cluster mode only: the Redis connections and the pub/sub probe.
    pub redis: Option<RedisNumbers>,
}

/// Cluster mode's Redis side, as the store's probe reads it.
#[derive(Default, Debug, Clone)]
pub struct RedisNumbers {
    pub command_up: bool,
    pub subscription_up: bool,
    pub reconnects_command: u64,
    pub reconnects_subscription: u64,
    pub pending_commands: u64,
    /// Since this node's last probe came back (since start if none has).
    pub probe_age_seconds: f64,
    /// What `/health` says: 1 serving, 0 not.
    pub healthy: bool,
}

/// The process-level numbers.
#[derive(Default, Debug, Clone)]
pub struct ProcessNumbers {
    pub start_time_seconds: f64,
    pub workers: u64,
}

struct Writer<'o> {
    out: &'o mut String,
}

impl Writer<'_> {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = write!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                // Label values here are our own constants: no escaping needed
                // beyond what they never contain (", \, newline).
                let _ = write!(self.out, "{k}=\"{v}\"");
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Appends every metric family to `out`.
pub fn render(m: &Metrics, store: &StoreNumbers, process: &ProcessNumbers, out: &mut String) {
    let w = &mut Writer { out };
    w.family(
        "cometbox_build_info",
        "gauge",
        "Always 1; the version is a label.",
    );
    w.sample(
        "cometbox_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    w.one(
        "cometbox_start_time_seconds",
        "gauge",
        "Start of the process, Unix time.",
        format_args!("{:.3}", process.start_time_seconds),
    );
    w.one(
        "cometbox_workers",
        "gauge",
        "Worker threads.",
        process.workers,
    );
    connections(w, m);
    messages(w, m, store);
    http(w, m);
    backend(w, m);
    if let Some(r) = &store.redis {
        redis(w, r);
    }
    latency(w, m);
}

fn redis(w: &mut Writer<'_>, r: &RedisNumbers) {
    let connections = [
        ("command", r.command_up, r.reconnects_command),
        ("subscription", r.subscription_up, r.reconnects_subscription),
    ];
    w.family(
        "cometbox_redis_up",
        "gauge",
        "1 while the connection to Redis is up (command: publishes and reads; subscription: the SUBSCRIBE connection).",
    );
    for (c, up, _) in connections {
        w.sample("cometbox_redis_up", &[("connection", c)], u8::from(up));
    }
    w.family(
        "cometbox_redis_reconnects_total",
        "counter",
        "Connections to Redis re-established after a loss (the first connect is not counted).",
    );
    for (c, _, n) in connections {
        w.sample("cometbox_redis_reconnects_total", &[("connection", c)], n);
    }
    w.one(
        "cometbox_redis_pending_commands",
        "gauge",
        "Requests (publish, read, delete) handed to the Redis client thread and not answered yet.",
        r.pending_commands,
    );
    w.one(
        "cometbox_redis_pubsub_probe_age_seconds",
        "gauge",
        "Since this node's last probe came back on its subscription (since start, if none has).",
        format_args!("{:.3}", r.probe_age_seconds),
    );
    w.one(
        "cometbox_redis_healthy",
        "gauge",
        "1 while GET /health would answer 200 as far as Redis goes: both connections up and the probe fresh.",
        u8::from(r.healthy),
    );
}

fn connections(w: &mut Writer<'_>, m: &Metrics) {
    let open = get(&m.connections_open);
    let held = get(&m.polls_waiting);
    let sse = get(&m.streams_sse);
    let ndjson = get(&m.streams_ndjson);
    let iframe = get(&m.streams_iframe);
    let ws = get(&m.websockets_open);
    let busy = held + sse + ndjson + iframe + ws;
    w.family(
        "cometbox_connections",
        "gauge",
        "Open browser connections by transport and phase: request (reading a request, idle between requests, or finishing a response), held (a long-poll or JSONP poll waiting), stream, open (WebSocket).",
    );
    // The phase gauges move a moment apart from `open`: never below zero.
    w.sample(
        "cometbox_connections",
        &[("transport", "http"), ("phase", "request")],
        open.saturating_sub(busy),
    );
    w.sample(
        "cometbox_connections",
        &[("transport", "longpoll"), ("phase", "held")],
        held,
    );
    for (t, n) in [("sse", sse), ("ndjson", ndjson), ("iframe", iframe)] {
        w.sample(
            "cometbox_connections",
            &[("transport", t), ("phase", "stream")],
            n,
        );
    }
    w.sample(
        "cometbox_connections",
        &[("transport", "websocket"), ("phase", "open")],
        ws,
    );
    w.one(
        "cometbox_connections_accepted_total",
        "counter",
        "Browser connections accepted (before the caps).",
        get(&m.connections_total),
    );
    w.family(
        "cometbox_connections_rejected_total",
        "counter",
        "Browser connections refused with 503 at accept, by cap.",
    );
    w.sample(
        "cometbox_connections_rejected_total",
        &[("reason", "max_connections")],
        get(&m.connections_rejected),
    );
    w.sample(
        "cometbox_connections_rejected_total",
        &[("reason", "max_connections_per_ip")],
        get(&m.connections_rejected_per_ip),
    );
    w.one(
        "cometbox_slow_subscribers_closed_total",
        "counter",
        "Streams and WebSockets closed because their unread output passed mailbox.max-pending-bytes.",
        get(&m.slow_subscribers_closed),
    );
    w.one(
        "cometbox_idle_connections_closed_total",
        "counter",
        "Keep-alive connections closed after server.keepalive-timeout.",
        get(&m.idle_keepalive_closed),
    );
}

fn messages(w: &mut Writer<'_>, m: &Metrics, s: &StoreNumbers) {
    w.one(
        "cometbox_mailboxes",
        "gauge",
        "Mailboxes the store holds.",
        s.mailboxes,
    );
    w.one(
        "cometbox_retained_messages",
        "gauge",
        "Messages retained for resume.",
        s.retained_messages,
    );
    w.one(
        "cometbox_retained_bytes",
        "gauge",
        "Payload bytes retained.",
        s.retained_bytes,
    );
    w.one(
        "cometbox_memory_bytes",
        "gauge",
        "Retained payload plus cached encodings (what mailbox.max-memory caps).",
        s.memory_bytes,
    );
    w.one(
        "cometbox_messages_published_total",
        "counter",
        "Messages stored by PUBLISH.",
        s.published,
    );
    w.family(
        "cometbox_publishes_rejected_total",
        "counter",
        "PUBLISHes refused, by limit.",
    );
    for &(reason, n) in &s.rejected {
        w.sample(
            "cometbox_publishes_rejected_total",
            &[("reason", reason)],
            n,
        );
    }
    w.one(
        "cometbox_messages_delivered_total",
        "counter",
        "Messages written to subscribers (one per subscriber).",
        get(&m.deliveries),
    );
    w.family(
        "cometbox_messages_evicted_total",
        "counter",
        "Retained messages dropped to make room, by limit.",
    );
    w.sample(
        "cometbox_messages_evicted_total",
        &[("reason", "max_messages")],
        s.evicted_by_count,
    );
    w.sample(
        "cometbox_messages_evicted_total",
        &[("reason", "max_memory")],
        s.evicted_by_memory,
    );
    w.one(
        "cometbox_messages_expired_total",
        "counter",
        "Retained messages dropped after mailbox.message-ttl.",
        s.expired,
    );
    w.one(
        "cometbox_missed_total",
        "counter",
        "missed markers sent: a subscriber's cursor had fallen out of history.",
        get(&m.missed),
    );
    w.family(
        "cometbox_resumes_total",
        "counter",
        "Subscriptions that came with a cursor, by result (recovered: nothing lost).",
    );
    w.sample(
        "cometbox_resumes_total",
        &[("result", "recovered")],
        get(&m.resumes_ok),
    );
    w.sample(
        "cometbox_resumes_total",
        &[("result", "missed")],
        get(&m.resumes_missed),
    );
}

fn http(w: &mut Writer<'_>, m: &Metrics) {
    w.one(
        "cometbox_http_requests_total",
        "counter",
        "HTTP requests parsed.",
        get(&m.requests_total),
    );
    w.one(
        "cometbox_http_received_bytes_total",
        "counter",
        "Bytes read from browser connections.",
        get(&m.bytes_in),
    );
    w.one(
        "cometbox_http_sent_bytes_total",
        "counter",
        "Bytes written (or queued) to browser connections.",
        get(&m.bytes_out),
    );
    w.family(
        "cometbox_http_unavailable_total",
        "counter",
        "Requests answered 503, by cause (connections refused at accept count in cometbox_connections_rejected_total).",
    );
    for cause in Unavailable::ALL {
        w.sample(
            "cometbox_http_unavailable_total",
            &[("cause", cause.label())],
            get(&m.unavailable[cause as usize]),
        );
    }
    w.family(
        "cometbox_auth_failures_total",
        "counter",
        "Mailbox requests refused by token checks (401, or 403 for not_granted), by reason.",
    );
    for (reason, c) in AUTH_REASONS.iter().zip(&m.auth_failures) {
        w.sample(
            "cometbox_auth_failures_total",
            &[("reason", reason)],
            get(c),
        );
    }
    w.one(
        "cometbox_http_rejected_requests_total",
        "counter",
        "Requests refused as malformed or too large (400, 413, 431).",
        get(&m.requests_rejected),
    );
    w.one(
        "cometbox_websocket_protocol_violations_total",
        "counter",
        "WebSocket connections closed for breaking RFC 6455.",
        get(&m.websocket_violations),
    );
    w.one(
        "cometbox_upstream_messages_total",
        "counter",
        "Client messages (WebSocket text frames, POST bodies) handed to __cometbox:upstream.",
        get(&m.upstream_messages),
    );
    w.one(
        "cometbox_upstream_refused_total",
        "counter",
        "Client messages refused (upstream off, not granted, too large).",
        get(&m.upstream_refused),
    );
}

fn backend(w: &mut Writer<'_>, m: &Metrics) {
    w.one(
        "cometbox_backend_connections",
        "gauge",
        "Open backend (RESP) connections.",
        get(&m.backend_connections_open),
    );
    w.one(
        "cometbox_backend_connections_accepted_total",
        "counter",
        "Backend connections accepted.",
        get(&m.backend_connections_total),
    );
    w.family(
        "cometbox_backend_commands_total",
        "counter",
        "Backend commands run, by command name.",
    );
    for (name, c) in COMMANDS.iter().zip(&m.backend_commands) {
        w.sample(
            "cometbox_backend_commands_total",
            &[("command", name)],
            get(c),
        );
    }
    w.one(
        "cometbox_backend_protocol_errors_total",
        "counter",
        "Backend connections closed for malformed RESP.",
        get(&m.backend_protocol_errors),
    );
    w.one(
        "cometbox_events_sent_total",
        "counter",
        "Presence and upstream events written to subscribed backends.",
        get(&m.events_sent),
    );
    w.family(
        "cometbox_config_reloads_total",
        "counter",
        "SIGHUP reloads, by result.",
    );
    w.sample(
        "cometbox_config_reloads_total",
        &[("result", "applied")],
        get(&m.reloads_ok),
    );
    w.sample(
        "cometbox_config_reloads_total",
        &[("result", "refused")],
        get(&m.reloads_failed),
    );
}

fn latency(w: &mut Writer<'_>, m: &Metrics) {
    let name = "cometbox_delivery_latency_seconds";
    w.family(
        name,
        "histogram",
        "From PUBLISH to a worker writing the message to its subscribers.",
    );
    let s = m.latency.snapshot();
    let bucket = format!("{name}_bucket");
    for (bound, n) in LATENCY_BOUNDS.iter().zip(s.cumulative) {
        w.sample(&bucket, &[("le", &bound.to_string())], n);
    }
    w.sample(&bucket, &[("le", "+Inf")], s.count);
    w.sample(
        &format!("{name}_sum"),
        &[],
        format_args!("{:.6}", s.sum_secs),
    );
    w.sample(&format!("{name}_count"), &[], s.count);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_follows_its_family_and_counters_end_in_total() {
        let m = Metrics::default();
        let mut text = String::new();
        render(
            &m,
            &StoreNumbers::default(),
            &ProcessNumbers::default(),
            &mut text,
        );
        assert!(text.starts_with("# HELP cometbox_build_info "));
        assert!(text.contains("cometbox_build_info{version=\""));
        assert!(text.contains("cometbox_delivery_latency_seconds_bucket{le=\"+Inf\"} 0\n"));
        let mut family = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, k) = rest.split_once(' ').unwrap();
                family = name.to_string();
                if k == "counter" {
                    assert!(name.ends_with("_total"), "{name}");
                }
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(
                name.starts_with(&family),
                "{line} outside its family {family}"
            );
            assert!(!line.ends_with(' '), "a value on every sample: {line}");
        }
        assert!(!text.contains("mailbox=\""), "no mailbox label");
        assert!(
            !text.contains("cometbox_redis_"),
            "no Redis outside cluster mode"
        );
    }

    #[test]
    fn cluster_mode_shows_the_redis_connections_and_the_probe() {
        let store = StoreNumbers {
            redis: Some(RedisNumbers {
                command_up: true,
                reconnects_subscription: 2,
                pending_commands: 3,
                probe_age_seconds: 0.25,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut text = String::new();
        render(
            &Metrics::default(),
            &store,
            &ProcessNumbers::default(),
            &mut text,
        );
        for line in [
            "cometbox_redis_up{connection=\"command\"} 1\n",
            "cometbox_redis_up{connection=\"subscription\"} 0\n",
            "cometbox_redis_reconnects_total{connection=\"command\"} 0\n",
            "cometbox_redis_reconnects_total{connection=\"subscription\"} 2\n",
            "cometbox_redis_pending_commands 3\n",
            "cometbox_redis_pubsub_probe_age_seconds 0.250\n",
            "cometbox_redis_healthy 0\n",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
