//! Turns acknowledgements into commits: per partition, the offset of the highest contiguous
//! acknowledged batch is committed every `commit_interval` and at the end.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use sluice_connectors::{Committed, CommittedOffsets, Completion, PartitionId};
use tokio::sync::{mpsc, watch};

use super::metrics::Metrics;
use crate::offsets::{OffsetError, OffsetStore};

#[derive(Default)]
struct PartState {
    /// Sequence number of the next ticket to apply.
    next: u64,
    /// Completed tickets waiting for an earlier one.
    waiting: BTreeMap<u64, Completion>,
    /// A ticket of this partition failed: nothing after it may be committed.
    stuck: bool,
}

/// Tracks completions and commits contiguous progress.
pub struct Tracker {
    namespace: String,
    store: Arc<dyn OffsetStore>,
    parts: HashMap<PartitionId, PartState>,
    /// Everything committed so far (what the watch shows).
    committed: CommittedOffsets,
    /// Advanced but not yet committed.
    pending: CommittedOffsets,
    pending_records: u64,
    metrics: Arc<Metrics>,
    watch: watch::Sender<Arc<CommittedOffsets>>,
}

impl Tracker {
    pub fn new(
        namespace: String,
        store: Arc<dyn OffsetStore>,
        start: CommittedOffsets,
        metrics: Arc<Metrics>,
    ) -> (Self, watch::Receiver<Arc<CommittedOffsets>>) {
        let (tx, rx) = watch::channel(Arc::new(start.clone()));
        (
            Self {
                namespace,
                store,
                parts: HashMap::new(),
                committed: start,
                pending: CommittedOffsets::new(),
                pending_records: 0,
                metrics,
                watch: tx,
            },
            rx,
        )
    }

    /// Applies one completion; advances its partition as far as contiguity allows.
    pub fn complete(&mut self, c: Completion) {
        Metrics::add(&self.metrics.delivered, if c.ok { c.records } else { 0 });
        let part = self.parts.entry(c.partition.clone()).or_default();
        part.waiting.insert(c.seq, c);
        while !part.stuck {
            let Some(c) = part.waiting.remove(&part.next) else {
                break;
            };
            if !c.ok {
                tracing::warn!(
                    partition = %c.partition,
                    offset = %c.last_offset,
                    "records were not acknowledged by the sink; offsets of this partition stay before them"
                );
                part.stuck = true;
                break;
            }
            part.next += 1;
            self.pending_records += c.records;
            self.pending.insert(
                c.partition.clone(),
                Committed {
                    offset: c.last_offset.clone(),
                    finished: c.end_of_partition,
                },
            );
        }
    }

    /// Commits what advanced since the last commit.
    pub async fn commit(&mut self) -> Result<(), OffsetError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.store.commit(&self.namespace, &self.pending).await?;
        tracing::debug!(pipeline = %self.namespace, partitions = self.pending.len(), "offsets committed");
        Metrics::add(&self.metrics.committed, self.pending_records);
        self.pending_records = 0;
        self.committed.extend(self.pending.drain());
        self.watch.send_replace(Arc::new(self.committed.clone()));
        Ok(())
    }

    /// Runs until every ticket sender is gone, committing every `interval` and at the end.
    /// A failed periodic commit is retried at the next tick; the final one must succeed.
    pub async fn run(
        mut self,
        mut completions: mpsc::UnboundedReceiver<Completion>,
        interval: Duration,
    ) -> Result<(), OffsetError> {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                c = completions.recv() => match c {
                    Some(c) => self.complete(c),
                    None => break,
                },
                _ = tick.tick() => {
                    if let Err(e) = self.commit().await {
                        tracing::warn!(pipeline = %self.namespace, error = %e, "offset commit failed; retrying at the next interval");
                    }
                }
            }
        }
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=5 {
            match self.commit().await {
                Ok(()) => return Ok(()),
                Err(e) if attempt == 5 => return Err(e),
                Err(e) => {
                    tracing::warn!(pipeline = %self.namespace, error = %e, attempt, "final offset commit failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offsets::MemoryStore;
    use sluice_connectors::Offset;

    fn done(p: &str, seq: u64, last: u64, ok: bool) -> Completion {
        Completion {
            partition: p.into(),
            seq,
            last_offset: Offset::from(last),
            records: 10,
            end_of_partition: false,
            ok,
        }
    }

    #[tokio::test]
    async fn commits_only_the_contiguous_prefix() {
        let store = Arc::new(MemoryStore::default());
        let (mut t, rx) = Tracker::new(
            "p".into(),
            store.clone(),
            Default::default(),
            Default::default(),
        );
        t.complete(done("a", 1, 19, true));
        t.commit().await.expect("commit");
        assert!(
            store.load("p").await.expect("load").is_empty(),
            "ticket 0 is missing"
        );
        t.complete(done("a", 0, 9, true));
        t.complete(done("a", 3, 39, true));
        t.commit().await.expect("commit");
        assert_eq!(
            store.load("p").await.expect("load")["a"].offset,
            Offset::from(19)
        );
        assert_eq!(rx.borrow()["a"].offset, Offset::from(19));
    }

    #[tokio::test]
    async fn a_failed_ticket_blocks_its_partition_only() {
        let store = Arc::new(MemoryStore::default());
        let (mut t, _rx) = Tracker::new(
            "p".into(),
            store.clone(),
            Default::default(),
            Default::default(),
        );
        t.complete(done("a", 0, 9, true));
        t.complete(done("a", 1, 19, false));
        t.complete(done("a", 2, 29, true));
        t.complete(done("b", 0, 5, true));
        t.commit().await.expect("commit");
        let s = store.load("p").await.expect("load");
        assert_eq!(s["a"].offset, Offset::from(9));
        assert_eq!(s["b"].offset, Offset::from(5));
    }
}
