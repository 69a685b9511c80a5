//! Counters a running pipeline keeps, read by the progress display.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of one pipeline.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Source records taken into the pipeline.
    pub read: AtomicU64,
    /// Source records fully handled: written by the sink (all their outputs), filtered out, or
    /// dead-lettered.
    pub delivered: AtomicU64,
    /// Source records covered by committed offsets.
    pub committed: AtomicU64,
    /// Records sent to the dead-letter destination.
    pub dead_lettered: AtomicU64,
    /// Bytes of source record values taken in.
    pub bytes_read: AtomicU64,
}

/// A point-in-time copy of [`Metrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub read: u64,
    pub delivered: u64,
    pub committed: u64,
    pub dead_lettered: u64,
    pub bytes_read: u64,
}

impl Metrics {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            read: self.read.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            committed: self.committed.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
