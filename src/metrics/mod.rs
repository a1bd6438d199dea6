//! Gateway-wide counters, read by the backend's INFO command and by the
//! Prometheus text format of the metrics listener (`prometheus`).
//!
//! Counters that change per message (deliveries, bytes, latency, commands)
//! are kept per worker in a plain [`WorkerCounts`] and folded in here once
//! per tick, so workers never bounce a shared cache line on the delivery
//! path. Connection-level counters are updated directly.

mod histogram;
pub mod prometheus;

pub use histogram::{BOUNDS as LATENCY_BOUNDS, Histogram, LocalHistogram};

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a request was answered 503 (the admission caps count apart, in
/// `connections_rejected*`). Indexes [`Metrics::unavailable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// `mailbox.max-mailboxes`.
    Mailboxes,
    /// `mailbox.max-subscribers`.
    Subscribers,
    /// `mailbox.max-memory`.
    Memory,
    /// A remote store did not answer an attach in time.
    StoreTimeout,
    Other,
}

impl Unavailable {
    pub const ALL: [Unavailable; 5] = [
        Unavailable::Mailboxes,
        Unavailable::Subscribers,
        Unavailable::Memory,
        Unavailable::StoreTimeout,
        Unavailable::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Unavailable::Mailboxes => "max_mailboxes",
            Unavailable::Subscribers => "max_subscribers",
            Unavailable::Memory => "max_memory",
            Unavailable::StoreTimeout => "store_timeout",
            Unavailable::Other => "other",
        }
    }
}

/// Auth failure reasons, in the order of `auth::Denied`'s variants
/// (`Denied as usize` indexes [`Metrics::auth_failures`]).
pub const AUTH_REASONS: [&str; 7] = [
    "missing",
    "malformed",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "wrong_audience",
    "not_granted",
];

/// Backend commands counted by name: the top-level names of the command
/// table, then `unknown`. A bounded label set, whatever backends send.
pub const COMMANDS: [&str; 20] = [
    "publish",
    "ping",
    "hello",
    "auth",
    "quit",
    "reset",
    "echo",
    "select",
    "del",
    "info",
    "subscribe",
    "psubscribe",
    "ssubscribe",
    "unsubscribe",
    "punsubscribe",
    "sunsubscribe",
    "client",
    "command",
    "pubsub",
    "unknown",
];

/// The slot of a command name in [`COMMANDS`] (`unknown` if not there).
pub fn command_slot(name: &str) -> usize {
    COMMANDS
        .iter()
        .position(|c| c.eq_ignore_ascii_case(name))
        .unwrap_or(COMMANDS.len() - 1)
}

#[derive(Default)]
pub struct Metrics {
    pub connections_open: AtomicU64,
    pub connections_total: AtomicU64,
    pub connections_rejected: AtomicU64,
    pub connections_rejected_per_ip: AtomicU64,
    pub backend_connections_open: AtomicU64,
    pub backend_connections_total: AtomicU64,
    pub requests_total: AtomicU64,
    pub requests_rejected: AtomicU64,
    pub requests_unauthorized: AtomicU64,
    pub requests_forbidden: AtomicU64,
    pub header_timeouts: AtomicU64,
    pub headers_too_large: AtomicU64,
    pub bodies_too_large: AtomicU64,
    pub idle_keepalive_closed: AtomicU64,
    pub polls_waiting: AtomicU64,
    /// Open streams by kind: SSE, NDJSON, iframe.
    pub streams_sse: AtomicU64,
    pub streams_ndjson: AtomicU64,
    pub streams_iframe: AtomicU64,
    pub websockets_open: AtomicU64,
    pub deliveries: AtomicU64,
    pub slow_subscribers_closed: AtomicU64,
    pub websocket_violations: AtomicU64,
    pub backend_protocol_errors: AtomicU64,
    /// `missed` markers sent (one per mailbox that lost mail).
    pub missed: AtomicU64,
    /// Requests with a cursor: caught up without loss, or `missed`.
    pub resumes_ok: AtomicU64,
    pub resumes_missed: AtomicU64,
    /// Bytes read from and queued to browser connections.
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub unavailable: [AtomicU64; Unavailable::ALL.len()],
    pub auth_failures: [AtomicU64; AUTH_REASONS.len()],
    pub backend_commands: [AtomicU64; COMMANDS.len()],
    /// Presence and upstream events handed to subscribed backends.
    pub events_sent: AtomicU64,
    pub upstream_messages: AtomicU64,
    pub upstream_refused: AtomicU64,
    /// SIGHUP reloads applied and refused.
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// Publish to delivery, per message and worker that had subscribers.
    pub latency: Histogram,
}

/// One worker's per-message counts since its last tick (plain integers:
/// only that worker touches them).
#[derive(Default)]
pub struct WorkerCounts {
    pub deliveries: u64,
    pub missed: u64,
    pub resumes_ok: u64,
    pub resumes_missed: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub backend_commands: [u64; COMMANDS.len()],
    pub latency: LocalHistogram,
}

/// Shorthand for the relaxed increments used everywhere here: these are
/// statistics, not synchronisation.
pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub fn dec(counter: &AtomicU64) {
    counter.fetch_sub(1, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

fn add(c: &AtomicU64, n: &mut u64) {
    if *n > 0 {
        c.fetch_add(*n, Ordering::Relaxed);
        *n = 0;
    }
}

impl Metrics {
    /// Adds a worker's counts since its last tick and zeroes them.
    pub fn fold(&self, w: &mut WorkerCounts) {
        add(&self.deliveries, &mut w.deliveries);
        add(&self.missed, &mut w.missed);
        add(&self.resumes_ok, &mut w.resumes_ok);
        add(&self.resumes_missed, &mut w.resumes_missed);
        add(&self.bytes_in, &mut w.bytes_in);
        add(&self.bytes_out, &mut w.bytes_out);
        for (shared, n) in self.backend_commands.iter().zip(&mut w.backend_commands) {
            add(shared, n);
        }
        self.latency.fold(&mut w.latency);
    }

    pub fn count_unavailable(&self, cause: Unavailable) {
        inc(&self.unavailable[cause as usize]);
    }

    pub fn streams_open(&self) -> u64 {
        get(&self.streams_sse) + get(&self.streams_ndjson) + get(&self.streams_iframe)
    }

    /// Appends INFO sections in Redis' `# Section` / `key:value` layout.
    pub fn write_info(&self, out: &mut String) {
        let _ = write!(
            out,
            "# Clients\r\n\
             connected_clients:{}\r\n\
             http_connections:{}\r\n\
             backend_connections:{}\r\n\
             waiting_polls:{}\r\n\
             open_streams:{}\r\n\
             open_sse_streams:{}\r\n\
             open_ndjson_streams:{}\r\n\
             open_iframe_streams:{}\r\n\
             open_websockets:{}\r\n\
             \r\n# Stats\r\n\
             total_connections_received:{}\r\n\
             total_backend_connections_received:{}\r\n\
             rejected_connections:{}\r\n\
             rejected_connections_per_ip:{}\r\n\
             total_http_requests:{}\r\n\
             rejected_http_requests:{}\r\n\
             unauthorized_requests:{}\r\n\
             forbidden_requests:{}\r\n\
             header_timeouts:{}\r\n\
             headers_too_large:{}\r\n\
             bodies_too_large:{}\r\n\
             idle_keepalive_closed:{}\r\n\
             total_deliveries:{}\r\n\
             slow_subscribers_closed:{}\r\n\
             websocket_protocol_violations:{}\r\n\
             backend_protocol_errors:{}\r\n\
             missed_answers:{}\r\n\
             resumes_ok:{}\r\n\
             resumes_missed:{}\r\n\
             total_net_input_bytes:{}\r\n\
             total_net_output_bytes:{}\r\n\
             events_sent:{}\r\n\
             upstream_messages:{}\r\n\
             upstream_refused:{}\r\n\
             reloads_ok:{}\r\n\
             reloads_failed:{}\r\n",
            get(&self.connections_open) + get(&self.backend_connections_open),
            get(&self.connections_open),
            get(&self.backend_connections_open),
            get(&self.polls_waiting),
            self.streams_open(),
            get(&self.streams_sse),
            get(&self.streams_ndjson),
            get(&self.streams_iframe),
            get(&self.websockets_open),
            get(&self.connections_total),
            get(&self.backend_connections_total),
            get(&self.connections_rejected),
            get(&self.connections_rejected_per_ip),
            get(&self.requests_total),
            get(&self.requests_rejected),
            get(&self.requests_unauthorized),
            get(&self.requests_forbidden),
            get(&self.header_timeouts),
            get(&self.headers_too_large),
            get(&self.bodies_too_large),
            get(&self.idle_keepalive_closed),
            get(&self.deliveries),
            get(&self.slow_subscribers_closed),
            get(&self.websocket_violations),
            get(&self.backend_protocol_errors),
            get(&self.missed),
            get(&self.resumes_ok),
            get(&self.resumes_missed),
            get(&self.bytes_in),
            get(&self.bytes_out),
            get(&self.events_sent),
            get(&self.upstream_messages),
            get(&self.upstream_refused),
            get(&self.reloads_ok),
            get(&self.reloads_failed),
        );
        for cause in Unavailable::ALL {
            let n = get(&self.unavailable[cause as usize]);
            let _ = write!(out, "unavailable_{}:{n}\r\n", cause.label());
        }
        for (reason, c) in AUTH_REASONS.iter().zip(&self.auth_failures) {
            let _ = write!(out, "auth_failures_{reason}:{}\r\n", get(c));
        }
        let lat = self.latency.snapshot();
        let _ = write!(
            out,
            "delivery_latency_count:{}\r\ndelivery_latency_sum_seconds:{:.6}\r\n",
            lat.count, lat.sum_secs
        );
        out.push_str("\r\n# Commandstats\r\n");
        for (name, c) in COMMANDS.iter().zip(&self.backend_commands) {
            let n = get(c);
            if n > 0 {
                let _ = write!(out, "cmdstat_{name}:calls={n}\r\n");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_slots_are_bounded() {
        assert_eq!(COMMANDS[command_slot("PUBLISH")], "publish");
        assert_eq!(COMMANDS[command_slot("flushall")], "unknown");
    }

    #[test]
    fn auth_reasons_follow_denied() {
        use crate::auth::Denied;
        assert_eq!(AUTH_REASONS[Denied::Missing as usize], "missing");
        assert_eq!(AUTH_REASONS[Denied::NotGranted as usize], "not_granted");
        assert_eq!(
            AUTH_REASONS[Denied::WrongAudience as usize],
            "wrong_audience"
        );
    }

    #[test]
    fn folding_moves_worker_counts_once() {
        let m = Metrics::default();
        let mut w = WorkerCounts {
            deliveries: 3,
            bytes_out: 10,
            ..Default::default()
        };
        w.backend_commands[0] = 2;
        m.fold(&mut w);
        m.fold(&mut w);
        assert_eq!(get(&m.deliveries), 3);
        assert_eq!(get(&m.bytes_out), 10);
        assert_eq!(get(&m.backend_commands[0]), 2);
    }
}
