//! Gateway-wide counters, read by the backend's INFO command.
//!
//! Counters that change per message (deliveries) are kept per worker and
//! folded in here once per tick, so workers never bounce a shared cache line
//! on the delivery path. Connection-level counters are updated directly.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

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
    pub streams_open: AtomicU64,
    pub websockets_open: AtomicU64,
    pub deliveries: AtomicU64,
    pub slow_subscribers_closed: AtomicU64,
    pub websocket_violations: AtomicU64,
    pub backend_protocol_errors: AtomicU64,
}

/// Shorthand for the relaxed increments used everywhere here: these are
/// statistics, not synchronisation.
pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub fn dec(counter: &AtomicU64) {
    counter.fetch_sub(1, Ordering::Relaxed);
}

impl Metrics {
    /// Appends INFO sections in Redis' `# Section` / `key:value` layout.
    pub fn write_info(&self, out: &mut String) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = write!(
            out,
            "# Clients\r\n\
             connected_clients:{}\r\n\
             http_connections:{}\r\n\
             backend_connections:{}\r\n\
             waiting_polls:{}\r\n\
             open_streams:{}\r\n\
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
             backend_protocol_errors:{}\r\n",
            get(&self.connections_open) + get(&self.backend_connections_open),
            get(&self.connections_open),
            get(&self.backend_connections_open),
            get(&self.polls_waiting),
            get(&self.streams_open),
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
        );
    }
}
