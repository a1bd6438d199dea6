//! Whether Redis does its job for this node, as `/health`, `/metrics` and
//! `INFO cluster` report it. A connection can look healthy while its
//! subscription delivers nothing (Centrifugo met this after a failover), so
//! besides the two connections' state there is a probe: the client thread
//! publishes `"<node> <seq>"` on `{prefix}health` every [`PROBE_EVERY`] and
//! the subscriber thread records when this node's own probes come back.
//!
//! Everything here is atomics written by the Redis threads and read by
//! anyone without a lock or a wait; the decisions are pure functions of a
//! [`Snapshot`], tested below.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often a probe is published. Each node's probe reaches every node
/// (one channel): nodes × nodes small messages a second, nothing next to
/// the mail.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// A node whose newest probe came back longer ago than this is reported
/// unavailable (and its subscription is replaced, if Redis acknowledged
/// probes it never delivered). Five probes: more than `IO_TIMEOUT` (2 s, the
/// longest a slow-but-alive Redis may take to answer a batch) plus a
/// probe's period, so a loaded machine does not flap, and short enough that
/// a load balancer checking every 5-10 s sees a deaf node at its next check.
pub const PROBE_STALE: Duration = Duration::from_secs(5);

/// The shared state. `*_ms` are milliseconds since `base` plus one, so 0
/// means "never".
pub struct Probe {
    base: Instant,
    /// This process, among the nodes sharing the channel.
    node: u64,
    /// The command connection is up (Redis answered the last time).
    pub command_up: AtomicBool,
    /// The SUBSCRIBE connection is up and subscribed.
    pub subscription_up: AtomicBool,
    acked_seq: AtomicU64,
    acked_ms: AtomicU64,
    seen_seq: AtomicU64,
    seen_ms: AtomicU64,
    /// Connections re-established after a loss (the first connect is not
    /// counted).
    pub reconnects_command: AtomicU64,
    pub reconnects_subscription: AtomicU64,
    /// Requests (publish, read, delete) handed to the client thread and not
    /// answered yet.
    pub pending: AtomicU64,
}

/// One reading of [`Probe`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub command_up: bool,
    pub subscription_up: bool,
    /// Since this node's newest probe came back (None: none has yet).
    pub seen_ago: Option<Duration>,
    /// Since Redis last acknowledged a probe (None: never).
    pub acked_ago: Option<Duration>,
    /// Acknowledged probes newer than the newest seen one.
    pub missing: u64,
    pub uptime: Duration,
    pub reconnects_command: u64,
    pub reconnects_subscription: u64,
    pub pending: u64,
}

/// A node id nobody else sharing the channel is likely to have: the
/// process id and the std hasher's per-process random keys.
fn node_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish().max(1)
}

impl Probe {
    pub fn new() -> Probe {
        Probe {
            base: Instant::now(),
            node: node_id(),
            command_up: AtomicBool::new(false),
            subscription_up: AtomicBool::new(false),
            acked_seq: AtomicU64::new(0),
            acked_ms: AtomicU64::new(0),
            seen_seq: AtomicU64::new(0),
            seen_ms: AtomicU64::new(0),
            reconnects_command: AtomicU64::new(0),
            reconnects_subscription: AtomicU64::new(0),
            pending: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64 + 1
    }

    /// The message published as probe `seq`.
    pub fn payload(&self, seq: u64) -> String {
        format!("{:x} {seq}", self.node)
    }

    /// Redis accepted probe `seq` (the client thread).
    pub fn acked(&self, seq: u64) {
        self.acked_seq.store(seq, Ordering::Relaxed);
        self.acked_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// A message on the health channel (the subscriber thread): true if it
    /// was this node's probe. Other nodes' probes are theirs to count.
    pub fn heard(&self, payload: &[u8]) -> bool {
        let Some(seq) = std::str::from_utf8(payload)
            .ok()
            .and_then(|s| s.split_once(' '))
            .filter(|(node, _)| u64::from_str_radix(node, 16).ok() == Some(self.node))
            .and_then(|(_, seq)| seq.parse::<u64>().ok())
        else {
            return false;
        };
        self.seen_seq.fetch_max(seq, Ordering::Relaxed);
        self.seen_ms.store(self.now_ms(), Ordering::Relaxed);
        true
    }

    pub fn snapshot(&self) -> Snapshot {
        let now = self.now_ms();
        let ago = |ms: &AtomicU64| match ms.load(Ordering::Relaxed) {
            0 => None,
            t => Some(Duration::from_millis(now.saturating_sub(t))),
        };
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            command_up: self.command_up.load(Ordering::Relaxed),
            subscription_up: self.subscription_up.load(Ordering::Relaxed),
            seen_ago: ago(&self.seen_ms),
            acked_ago: ago(&self.acked_ms),
            missing: get(&self.acked_seq).saturating_sub(get(&self.seen_seq)),
            uptime: self.base.elapsed(),
            reconnects_command: get(&self.reconnects_command),
            reconnects_subscription: get(&self.reconnects_subscription),
            pending: get(&self.pending),
        }
    }
}

impl Snapshot {
    /// Why this node should get no traffic, if it should not: the line
    /// `/health` answers 503 with (docs/operations.md lists them).
    pub fn unavailable_because(&self) -> Option<String> {
        if !self.command_up {
            return Some("redis unreachable".into());
        }
        if !self.subscription_up {
            return Some("redis subscription down".into());
        }
        let seen = match self.seen_ago {
            Some(ago) if ago <= PROBE_STALE => return None,
            Some(ago) => ago,
            None => {
                return Some("redis pub/sub not confirmed yet (no probe seen since start)".into());
            }
        };
        if self.acked_ago.is_none_or(|ago| ago > PROBE_STALE) {
            let acked = self.acked_ago.unwrap_or(self.uptime).as_secs();
            return Some(format!(
                "redis not answering probes (last probe acknowledged {acked} s ago)"
            ));
        }
        Some(format!(
            "redis pub/sub not delivering (last probe seen {} s ago)",
            seen.as_secs()
        ))
    }

    /// A subscription that has been in place for `subscribed_for` and is
    /// quiet should be replaced: Redis keeps acknowledging this node's
    /// probes, none came back for [`PROBE_STALE`]. A slow client thread
    /// (nothing acknowledged lately) is no reason: a new subscription
    /// would not help, and its catch-up would add load.
    pub fn subscription_is_deaf(&self, subscribed_for: Duration) -> bool {
        let quiet = self
            .seen_ago
            .map_or(subscribed_for, |s| s.min(subscribed_for));
        subscribed_for > PROBE_STALE
            && quiet > PROBE_STALE
            && self.missing > 0
            && self.acked_ago.is_some_and(|a| a < PROBE_STALE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Option<Duration> {
        Some(Duration::from_secs(secs))
    }

    fn healthy() -> Snapshot {
        Snapshot {
            command_up: true,
            subscription_up: true,
            seen_ago: s(0),
            acked_ago: s(0),
            uptime: Duration::from_secs(100),
            ..Snapshot::default()
        }
    }

    #[test]
    fn serving_needs_both_connections_and_a_fresh_probe() {
        assert_eq!(healthy().unavailable_because(), None);
        let at_the_limit = Snapshot {
            seen_ago: Some(PROBE_STALE),
            ..healthy()
        };
        assert_eq!(at_the_limit.unavailable_because(), None);
        let cases = [
            (
                Snapshot {
                    command_up: false,
                    subscription_up: false,
                    ..healthy()
                },
                "redis unreachable",
            ),
            (
                Snapshot {
                    subscription_up: false,
                    ..healthy()
                },
                "redis subscription down",
            ),
            (
                Snapshot {
                    seen_ago: s(12),
                    missing: 12,
                    ..healthy()
                },
                "redis pub/sub not delivering (last probe seen 12 s ago)",
            ),
            (
                Snapshot {
                    seen_ago: s(9),
                    acked_ago: s(8),
                    ..healthy()
                },
                "redis not answering probes (last probe acknowledged 8 s ago)",
            ),
            (
                Snapshot {
                    seen_ago: None,
                    acked_ago: None,
                    ..healthy()
                },
                "redis pub/sub not confirmed yet (no probe seen since start)",
            ),
        ];
        for (snapshot, why) in cases {
            assert_eq!(snapshot.unavailable_because().as_deref(), Some(why));
        }
    }

    #[test]
    fn only_a_subscription_that_misses_acknowledged_probes_is_deaf() {
        let deaf = Snapshot {
            seen_ago: s(30),
            missing: 6,
            ..healthy()
        };
        assert!(deaf.subscription_is_deaf(Duration::from_secs(60)));
        // Just (re)subscribed: give the probes their time.
        assert!(!deaf.subscription_is_deaf(Duration::from_secs(2)));
        // Nothing is missing: the probes are not being published.
        let idle = Snapshot { missing: 0, ..deaf };
        assert!(!idle.subscription_is_deaf(Duration::from_secs(60)));
        // Redis stopped acknowledging: the command side is the problem.
        let stuck = Snapshot {
            acked_ago: s(20),
            ..deaf
        };
        assert!(!stuck.subscription_is_deaf(Duration::from_secs(60)));
        assert!(!healthy().subscription_is_deaf(Duration::from_secs(60)));
    }

    #[test]
    fn a_node_counts_its_own_probes_only() {
        let a = Probe::new();
        let b = Probe::new();
        assert_ne!(a.node, b.node);
        a.acked(1);
        a.acked(2);
        assert_eq!(a.snapshot().missing, 2);
        assert!(!a.heard(b.payload(2).as_bytes()));
        assert!(!a.heard(b"garbage"));
        assert!(!a.heard(b"zz 1"));
        assert_eq!(a.snapshot().seen_ago, None);
        assert!(a.heard(a.payload(2).as_bytes()));
        let snap = a.snapshot();
        assert_eq!(snap.missing, 0);
        assert!(snap.seen_ago.is_some() && snap.acked_ago.is_some());
    }
}
