//! The Kafka source's consumer-group state: [`Shared`], which the poll loop and the rebalance
//! callback share, and [`ConsumerCtx`], the consumer's context. On assignment a partition starts
//! after the later of the pipeline store's and the group's committed offsets; on revocation the
//! worker waits (up to `rebalance_drain`) until what it handed on is committed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::topic_partition_list::{Offset as KOffset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::client::LogContext;
use super::config::StartAt;
use super::source::{Tp, partition_id};
use crate::api::CommittedOffsets;

/// State the poll loop shares with the rebalance callback (which runs inside `poll`).
pub(super) struct Shared {
    pub(super) group: String,
    pub(super) brokers: String,
    pub(super) start: StartAt,
    pub(super) start_millis: Option<i64>,
    pub(super) drain: Duration,
    pub(super) stop: CancellationToken,
    /// Offsets as the pipeline commits them (starts with the store's offsets).
    pub(super) committed: watch::Receiver<Arc<CommittedOffsets>>,
    /// Offset of the last record handed to the pipeline, per partition.
    pub(super) sent: Mutex<HashMap<Tp, i64>>,
    /// Next offset committed to the group, per assigned partition.
    pub(super) group_next: Mutex<BTreeMap<Tp, i64>>,
    /// Partitions revoked since the poll loop last looked: their unsent records are dropped.
    pub(super) revoked: Mutex<Vec<Tp>>,
    /// Where each assigned partition was told to start (for its position before anything is
    /// consumed).
    pub(super) starts: Mutex<HashMap<Tp, KOffset>>,
    /// Announces newly assigned partitions to the offset store (see [`SourceContext::assigned`]).
    pub(super) assigned:
        Option<tokio::sync::mpsc::UnboundedSender<Vec<crate::record::PartitionId>>>,
}

impl Shared {
    /// The pipeline's committed offset of a partition (the last delivered record).
    pub(super) fn store_offset(&self, tp: &Tp) -> Option<i64> {
        let c = self.committed.borrow();
        c.get(partition_id(&tp.0, tp.1).as_str())
            .and_then(|c| c.offset.as_str().parse::<i64>().ok())
    }

    /// Commits the pipeline's committed offsets of `tps` to the group, where they are ahead of
    /// what was sent to the group before (a synchronous commit sends an equal offset again, in
    /// case an earlier asynchronous one failed). Never below what the group had at assignment
    /// or was sent since: this worker's store may be stale (another worker owned the partition
    /// meanwhile), and committing it would rewind the group.
    pub(super) fn commit_to_group(
        &self,
        consumer: &BaseConsumer<ConsumerCtx>,
        tps: &[Tp],
        mode: CommitMode,
    ) {
        let force = matches!(mode, CommitMode::Sync);
        let mut tpl = TopicPartitionList::new();
        let mut next = self.group_next.lock().unwrap_or_else(|e| e.into_inner());
        let mut advanced = Vec::new();
        for tp in tps {
            let Some(done) = self.store_offset(tp) else {
                continue;
            };
            let want = done + 1;
            let floor = next.get(tp).copied().unwrap_or(-1);
            if want < floor || (!force && want == floor) {
                continue;
            }
            if tpl
                .add_partition_offset(&tp.0, tp.1, KOffset::Offset(want))
                .is_ok()
            {
                advanced.push((tp.clone(), want));
            }
        }
        if tpl.count() == 0 {
            return;
        }
        match consumer.commit(&tpl, mode) {
            Ok(()) => {
                for (tp, want) in advanced {
                    next.insert(tp, want);
                }
            }
            Err(e) => {
                tracing::warn!(group = %self.group, brokers = %self.brokers, error = %e, "kafka source: committing offsets to the consumer group failed; retrying with the next commit")
            }
        }
    }

    /// Where each newly assigned partition starts: after the later of the store's and the
    /// group's committed offsets, else at `start`.
    pub(super) fn start_positions(
        &self,
        consumer: &BaseConsumer<ConsumerCtx>,
        tpl: &mut TopicPartitionList,
    ) {
        let tps: Vec<Tp> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        // The group's committed offsets; the returned list is copied out and dropped at once
        // (holding it while the consumer is dropped hangs librdkafka).
        let group: HashMap<Tp, i64> = match consumer
            .committed_offsets(tpl.clone(), Duration::from_secs(10))
        {
            Ok(list) => list
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    KOffset::Offset(o) if o >= 0 => {
                        Some(((e.topic().to_string(), e.partition()), o))
                    }
                    _ => None,
                })
                .collect(),
            Err(e) => {
                tracing::warn!(group = %self.group, brokers = %self.brokers, error = %e, "kafka source: cannot read the group's committed offsets; using the pipeline's store only");
                HashMap::new()
            }
        };
        let mut fresh = Vec::new();
        let mut next = self.group_next.lock().unwrap_or_else(|e| e.into_inner());
        for tp in &tps {
            let from_store = self.store_offset(tp).map(|o| o + 1);
            let from_group = group.get(tp).copied();
            let pos = match (from_store, from_group) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            let offset = match pos {
                Some(p) => {
                    next.insert(tp.clone(), from_group.unwrap_or(-1));
                    KOffset::Offset(p)
                }
                None => {
                    next.insert(tp.clone(), -1);
                    fresh.push(tp.clone());
                    match self.start {
                        StartAt::Earliest | StartAt::Timestamp => KOffset::Beginning,
                        StartAt::Latest => KOffset::End,
                    }
                }
            };
            let _ = tpl.set_partition_offset(&tp.0, tp.1, offset);
            tracing::info!(partition = %partition_id(&tp.0, tp.1), store = ?from_store, group = ?from_group, start = ?offset, "kafka source: partition assigned");
        }
        drop(next);
        if let (Some(ts), false) = (self.start_millis, fresh.is_empty()) {
            let mut q = TopicPartitionList::new();
            for tp in &fresh {
                let _ = q.add_partition_offset(&tp.0, tp.1, KOffset::Offset(ts));
            }
            match consumer.offsets_for_times(q, Duration::from_secs(10)) {
                Ok(found) => {
                    let found: Vec<(Tp, KOffset)> = found
                        .elements()
                        .iter()
                        .map(|e| ((e.topic().to_string(), e.partition()), e.offset()))
                        .collect();
                    for (tp, o) in found {
                        let o = match o {
                            KOffset::Offset(n) if n >= 0 => KOffset::Offset(n),
                            _ => KOffset::End,
                        };
                        let _ = tpl.set_partition_offset(&tp.0, tp.1, o);
                    }
                }
                Err(e) => {
                    tracing::warn!(group = %self.group, error = %e, "kafka source: offsets for start_timestamp not found; starting at the earliest offset")
                }
            }
        }
        let mut starts = self.starts.lock().unwrap_or_else(|e| e.into_inner());
        for e in tpl.elements() {
            starts.insert((e.topic().to_string(), e.partition()), e.offset());
        }
    }

    /// Waits (up to `drain`) until the pipeline committed everything handed on from `tps`;
    /// returns the partitions still behind.
    pub(super) fn wait_committed(&self, tps: &[Tp]) -> Vec<String> {
        let deadline = Instant::now() + self.drain;
        let pending = |tp: &Tp| {
            let sent = self.sent.lock().map(|s| s.get(tp).copied()).unwrap_or(None);
            match sent {
                Some(s) => self.store_offset(tp).is_none_or(|c| c < s),
                None => false,
            }
        };
        while Instant::now() < deadline && tps.iter().any(pending) {
            std::thread::sleep(Duration::from_millis(20));
        }
        tps.iter()
            .filter(|tp| pending(tp))
            .map(|tp| partition_id(&tp.0, tp.1))
            .collect()
    }

    /// Before giving partitions up: wait (up to `drain`) until what was read from them is
    /// committed, then commit that to the group.
    pub(super) fn drain_revoked(&self, consumer: &BaseConsumer<ConsumerCtx>, tps: &[Tp]) {
        // When the pipeline stops, the poll loop already waited for the commits.
        if !self.stop.is_cancelled() {
            let left = self.wait_committed(tps);
            if !left.is_empty() {
                tracing::warn!(partitions = ?left, "kafka source: giving up partitions before everything read from them was committed; the new owner reads those records again");
            }
        }
        self.commit_to_group(consumer, tps, CommitMode::Sync);
        let mut next = self.group_next.lock().unwrap_or_else(|e| e.into_inner());
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        for tp in tps {
            next.remove(tp);
            sent.remove(tp);
        }
        drop((next, sent));
        self.revoked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(tps.iter().cloned());
    }
}

/// The consumer's context: rebalances go through [`Shared`].
pub(super) struct ConsumerCtx {
    pub(super) log: LogContext,
    pub(super) shared: Arc<Shared>,
}

super::client::logs_through_log_context!(ConsumerCtx);

impl ConsumerContext for ConsumerCtx {
    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        match result {
            Ok(()) => {
                tracing::debug!(group = %self.shared.group, partitions = offsets.count(), "kafka source: offsets committed to the group")
            }
            Err(e) => {
                tracing::warn!(group = %self.shared.group, brokers = %self.shared.brokers, error = %e, "kafka source: committing offsets to the consumer group failed")
            }
        }
    }

    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if let Some(tx) = &self.shared.assigned {
                    let ids = tpl
                        .elements()
                        .iter()
                        .map(|e| partition_id(e.topic(), e.partition()).as_str().into())
                        .collect();
                    // The pipeline is stopping if nobody listens any more.
                    let _ = tx.send(ids);
                }
                self.shared.start_positions(consumer, tpl);
                let r = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = r {
                    tracing::error!(group = %self.shared.group, error = %e, "kafka source: assigning partitions failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let tps: Vec<Tp> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                tracing::info!(partitions = ?tps.iter().map(|(t, p)| partition_id(t, *p)).collect::<Vec<_>>(), "kafka source: partitions revoked");
                if !consumer.assignment_lost() {
                    self.shared.drain_revoked(consumer, &tps);
                }
                let r = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = r {
                    tracing::error!(group = %self.shared.group, error = %e, "kafka source: unassigning partitions failed");
                }
            }
            e => {
                tracing::error!(group = %self.shared.group, error = ?e, "kafka source: rebalance error");
                let _ = consumer.unassign();
            }
        }
    }
}
