//! The publish-to-delivery latency histogram: fixed buckets in seconds, as
//! Prometheus' text format wants them (cumulative `le` buckets, `_sum`,
//! `_count`). Workers observe into a plain [`LocalHistogram`] and fold it
//! into the shared [`Histogram`] once per tick.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds in seconds. A message reaches a local subscriber in well
/// under a millisecond; the upper buckets show a stalled worker or a
/// backed-up socket.
pub const BOUNDS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Buckets plus one for `+Inf`.
const SLOTS: usize = BOUNDS.len() + 1;

fn slot(d: Duration) -> usize {
    let secs = d.as_secs_f64();
    BOUNDS
        .iter()
        .position(|&b| secs <= b)
        .unwrap_or(BOUNDS.len())
}

/// One worker's observations since its last tick.
#[derive(Default, Clone)]
pub struct LocalHistogram {
    counts: [u64; SLOTS],
    sum_nanos: u64,
    observed: u64,
}

impl LocalHistogram {
    pub fn observe(&mut self, d: Duration) {
        self.counts[slot(d)] += 1;
        self.sum_nanos = self
            .sum_nanos
            .saturating_add(d.as_nanos().min(u64::MAX as u128) as u64);
        self.observed += 1;
    }
}

/// The gateway-wide histogram (non-cumulative slots; the text format sums).
#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; SLOTS],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

/// What a scrape reads: cumulative bucket counts, sum in seconds, count.
pub struct Snapshot {
    pub cumulative: [u64; SLOTS],
    pub sum_secs: f64,
    pub count: u64,
}

impl Histogram {
    /// Adds a worker's observations and clears them.
    pub fn fold(&self, local: &mut LocalHistogram) {
        if local.observed == 0 {
            return;
        }
        for (shared, n) in self.counts.iter().zip(local.counts) {
            if n > 0 {
                shared.fetch_add(n, Ordering::Relaxed);
            }
        }
        self.sum_nanos.fetch_add(local.sum_nanos, Ordering::Relaxed);
        self.count.fetch_add(local.observed, Ordering::Relaxed);
        *local = LocalHistogram::default();
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut cumulative = [0; SLOTS];
        let mut running = 0;
        for (i, c) in self.counts.iter().enumerate() {
            running += c.load(Ordering::Relaxed);
            cumulative[i] = running;
        }
        Snapshot {
            cumulative,
            sum_secs: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            // The buckets' total, so `+Inf` == `_count` even mid-fold.
            count: running,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket_and_fold_once() {
        let mut local = LocalHistogram::default();
        local.observe(Duration::from_micros(100));
        local.observe(Duration::from_millis(1));
        local.observe(Duration::from_secs(60));
        let shared = Histogram::default();
        shared.fold(&mut local);
        shared.fold(&mut local); // nothing twice
        let s = shared.snapshot();
        assert_eq!(s.cumulative[0], 1, "0.1 ms <= 0.5 ms");
        assert_eq!(s.cumulative[1], 2, "1 ms <= 1 ms");
        assert_eq!(s.cumulative[BOUNDS.len() - 1], 2);
        assert_eq!(s.cumulative[BOUNDS.len()], 3, "+Inf holds all");
        assert_eq!(s.count, 3);
        assert!((s.sum_secs - 60.0011).abs() < 1e-6);
    }
}
