//! The server under test: which kind it is, where it listens, and the
//! request each kind expects for an SSE stream, a long-poll and a WebSocket.

use crate::procstat;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Cometbox,
    Nchan,
    Pushpin,
    Floor,
}

pub struct Target {
    pub kind: Kind,
    pub http: SocketAddr,
    pub publish: String,
    pub pid: u32,
    /// More gateways of one cluster (`--http2`, `--pid2`): SSE subscribers
    /// are spread over all, publishes go to the first, CPU is summed.
    pub more_http: Vec<SocketAddr>,
    pub more_pids: Vec<u32>,
    pub next_http: AtomicUsize,
}

impl Target {
    /// Where the next subscriber connects: round robin over the nodes.
    pub fn pick_http(&self) -> SocketAddr {
        let i = self.next_http.fetch_add(1, Ordering::Relaxed) % (1 + self.more_http.len());
        if i == 0 {
            self.http
        } else {
            self.more_http[i - 1]
        }
    }

    /// Server CPU seconds, all nodes together.
    pub fn cpu(&self) -> f64 {
        std::iter::once(self.pid)
            .chain(self.more_pids.iter().copied())
            .map(procstat::cpu_seconds)
            .sum()
    }

    pub fn name(&self) -> &'static str {
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
    pub fn sse_request(&self, channel: &str) -> String {
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
    pub fn poll_request(&self, channel: &str, resume: &Option<(String, String)>) -> String {
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

    /// A WebSocket handshake on the same path as the SSE stream (nchan's
    /// subscriber location takes both; the floor answers any upgrade).
    pub fn ws_request(&self, channel: &str) -> String {
        let path = match self.kind {
            Kind::Cometbox => format!("/mailbox/{channel}"),
            Kind::Nchan | Kind::Pushpin => format!("/sub/{channel}"),
            Kind::Floor => format!("/{channel}"),
        };
        format!(
            "GET {path} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
    }
}
