//! Subscriber connections per worker, as one mailbox entry counts them.

use std::ops::{Deref, DerefMut};

/// Workers counted without an allocation. Most deployments run one worker
/// per core on small machines; every mailbox entry, including one that only
/// holds a waiting subscriber, would otherwise own a heap chunk (32 bytes
/// with glibc) for a handful of counters.
const INLINE: usize = 4;

/// One count per worker, read and written as a slice of `workers` counts.
pub enum Counts {
    Inline { len: u8, counts: [u32; INLINE] },
    Heap(Box<[u32]>),
}

impl Counts {
    pub fn new(workers: usize) -> Counts {
        if workers <= INLINE {
            Counts::Inline {
                len: workers as u8,
                counts: [0; INLINE],
            }
        } else {
            Counts::Heap(vec![0; workers].into_boxed_slice())
        }
    }
}

impl Deref for Counts {
    type Target = [u32];

    fn deref(&self) -> &[u32] {
        match self {
            Counts::Inline { len, counts } => &counts[..usize::from(*len)],
            Counts::Heap(counts) => counts,
        }
    }
}

impl DerefMut for Counts {
    fn deref_mut(&mut self) -> &mut [u32] {
        match self {
            Counts::Inline { len, counts } => &mut counts[..usize::from(*len)],
            Counts::Heap(counts) => counts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_count_per_worker_inline_or_not() {
        for workers in [1, INLINE, INLINE + 1, 64] {
            let mut counts = Counts::new(workers);
            assert_eq!(counts.len(), workers);
            assert_eq!(matches!(counts, Counts::Inline { .. }), workers <= INLINE);
            counts[workers - 1] += 2;
            assert_eq!(counts.iter().sum::<u32>(), 2);
        }
    }
}
