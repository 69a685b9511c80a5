//! The Kafka source: a consumer in the spec's group, so workers share partitions through
//! Kafka's group protocol.
//!
//! - [`Shared`] and [`ConsumerCtx`]: the rebalance state. On assignment a partition starts
//!   after the later of the pipeline store's and the group's committed offsets; on revocation
//!   the worker waits (up to `rebalance_drain`) until what it handed on is committed.
//! - [`poll_loop`] runs on a blocking thread (librdkafka's calls block): it batches records
//!   per partition, hands them on, mirrors the pipeline's commits into the group so Kafka tools
//!   see the lag, and asks [`super::tips`] for the lag in records and `--until-caught-up`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::topic_partition_list::{Offset as KOffset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::client::{LogContext, config_error};
use super::config::{KafkaSourceConfig, StartAt};
use super::tips::Tips;
use crate::api::{CommittedOffsets, Source, SourceBatch, SourceContext};
use crate::error::ConnectorError;
use crate::error::retriable;
use crate::record::{Offset, PartitionId, Record};

/// A Kafka topic-partition.
pub(super) type Tp = (String, i32);

/// The source partition id of a Kafka topic-partition: `topic/partition`.
pub fn partition_id(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

/// The topic-partition of a source partition id written by [`partition_id`].
pub fn parse_partition_id(id: &str) -> Option<(&str, i32)> {
    let (t, p) = id.rsplit_once('/')?;
    Some((t, p.parse().ok()?))
}

/// State the poll loop shares with the rebalance callback (which runs inside `poll`).
struct Shared {
    group: String,
    brokers: String,
    start: StartAt,
    start_millis: Option<i64>,
    drain: Duration,
    stop: CancellationToken,
    /// Offsets as the pipeline commits them (starts with the store's offsets).
    committed: watch::Receiver<Arc<CommittedOffsets>>,
    /// Offset of the last record handed to the pipeline, per partition.
    sent: Mutex<HashMap<Tp, i64>>,
    /// Next offset committed to the group, per assigned partition.
    group_next: Mutex<BTreeMap<Tp, i64>>,
    /// Partitions revoked since the poll loop last looked: their unsent records are dropped.
    revoked: Mutex<Vec<Tp>>,
    /// Where each assigned partition was told to start (for its position before anything is
    /// consumed).
    starts: Mutex<HashMap<Tp, KOffset>>,
    /// Announces newly assigned partitions to the offset store (see [`SourceContext::assigned`]).
    assigned: Option<tokio::sync::mpsc::UnboundedSender<Vec<crate::record::PartitionId>>>,
}

impl Shared {
    /// The pipeline's committed offset of a partition (the last delivered record).
    fn store_offset(&self, tp: &Tp) -> Option<i64> {
        let c = self.committed.borrow();
        c.get(partition_id(&tp.0, tp.1).as_str())
            .and_then(|c| c.offset.as_str().parse::<i64>().ok())
    }

    /// Commits the pipeline's committed offsets of `tps` to the group, where they are ahead of
    /// what was sent to the group before (a synchronous commit sends an equal offset again, in
    /// case an earlier asynchronous one failed). Never below what the group had at assignment
    /// or was sent since: this worker's store may be stale (another worker owned the partition
    /// meanwhile), and committing it would rewind the group.
    fn commit_to_group(&self, consumer: &BaseConsumer<ConsumerCtx>, tps: &[Tp], mode: CommitMode) {
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
    fn start_positions(&self, consumer: &BaseConsumer<ConsumerCtx>, tpl: &mut TopicPartitionList) {
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
    fn wait_committed(&self, tps: &[Tp]) -> Vec<String> {
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
    fn drain_revoked(&self, consumer: &BaseConsumer<ConsumerCtx>, tps: &[Tp]) {
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
struct ConsumerCtx {
    log: LogContext,
    shared: Arc<Shared>,
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

/// Reads Kafka topics; see [`KafkaSourceConfig`].
pub struct KafkaSource {
    cfg: KafkaSourceConfig,
}

impl KafkaSource {
    pub fn new(cfg: KafkaSourceConfig) -> Self {
        Self { cfg }
    }
}

#[async_trait]
impl Source for KafkaSource {
    async fn run(&mut self, ctx: SourceContext) -> Result<(), ConnectorError> {
        let cfg = self.cfg.clone();
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || poll_loop(cfg, ctx, handle))
            .await
            .map_err(|e| {
                ConnectorError::fatal(format!("kafka source: consumer thread failed: {e}"))
            })?
    }
}

/// Records read but not yet handed to the pipeline, for one partition.
struct Pending {
    id: PartitionId,
    records: Vec<Record>,
    since: Instant,
}

fn poll_loop(
    cfg: KafkaSourceConfig,
    ctx: SourceContext,
    handle: tokio::runtime::Handle,
) -> Result<(), ConnectorError> {
    let brokers = cfg.brokers.join(",");
    let shared = Arc::new(Shared {
        group: cfg.group.clone(),
        brokers: brokers.clone(),
        start: cfg.start,
        start_millis: cfg.start_millis(),
        drain: cfg.rebalance_drain.0,
        stop: ctx.shutdown.clone(),
        committed: ctx.committed.clone(),
        sent: Mutex::default(),
        group_next: Mutex::default(),
        revoked: Mutex::default(),
        starts: Mutex::default(),
        assigned: ctx.assigned.clone(),
    });
    tracing::debug!(brokers = %brokers, group = %cfg.group, topics = ?cfg.topics, properties = ?cfg.properties, "kafka source: connecting");
    let consumer: BaseConsumer<ConsumerCtx> = cfg
        .client_config()
        .create_with_context(ConsumerCtx {
            log: LogContext {
                role: "source",
                brokers: brokers.clone(),
            },
            shared: shared.clone(),
        })
        .map_err(|e| {
            config_error(
                format!(
                    "kafka source: bad consumer configuration for {brokers} (check `properties`)"
                ),
                &e,
            )
        })?;
    let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).map_err(|e| {
        let at = format!("kafka source: topics {topics:?} on {brokers}");
        ConnectorError::call(at, "subscribe", &e)
    })?;
    tracing::info!(brokers = %brokers, group = %cfg.group, topics = ?cfg.topics, "kafka source subscribed");

    let batch_size = cfg.batch_size.max(1);
    let wait = cfg.batch_wait.0;
    let mut ids: HashMap<Tp, PartitionId> = HashMap::new();
    let mut pending: HashMap<Tp, Pending> = HashMap::new();
    let mut committed = ctx.committed.clone();
    let mut last_error: Option<(String, Instant)> = None;
    let mut tips = Tips::new(ctx.until_caught_up);
    tips.fetch_ends(&consumer, &cfg.topics);
    let send = |tp: &Tp, p: Pending| -> bool {
        let Some(last) = p.records.last() else {
            return true;
        };
        // The lag of a Kafka partition: the age of the newest record handed on (its timestamp).
        if let Some(ts) = last.timestamp {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            ctx.lag.set(&p.id, now.saturating_sub(ts).max(0) as u64);
        }
        let last: i64 = last.offset.as_str().parse().unwrap_or(-1);
        if let Ok(mut s) = shared.sent.lock() {
            s.insert(tp.clone(), last);
        }
        handle.block_on(ctx.send(SourceBatch {
            partition: p.id,
            records: p.records,
            end_of_partition: false,
            end_offset: None,
        }))
    };
    let result = 'outer: loop {
        if ctx.shutdown.is_cancelled() {
            break Ok(());
        }
        // Records of partitions given up in a rebalance are not handed on: their new owner
        // reads them again from the last commit.
        for tp in shared
            .revoked
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
        {
            pending.remove(&tp);
            ctx.lag
                .remove(&PartitionId::from(partition_id(&tp.0, tp.1)));
        }
        if tips.due() {
            // A copy: librdkafka may run the rebalance callback (which writes it) meanwhile.
            let starts = shared.starts.lock().map(|s| s.clone()).unwrap_or_default();
            tips.report_lag(&consumer, &starts, &ctx.lag);
            if tips.caught_up(&consumer, &starts) {
                // Everything read is handed on; the drain below waits for its commit.
                for (tp, p) in std::mem::take(&mut pending) {
                    if !send(&tp, p) {
                        break;
                    }
                }
                tracing::info!(group = %cfg.group, topics = ?cfg.topics, "kafka source: every assigned partition read up to its tip at the run's start");
                break Ok(());
            }
        }
        // Mirror the pipeline's commits into the group, so Kafka tools see the lag.
        if committed.has_changed().unwrap_or(false) {
            committed.mark_unchanged();
            let assigned: Vec<Tp> = shared
                .group_next
                .lock()
                .map(|n| n.keys().cloned().collect())
                .unwrap_or_default();
            shared.commit_to_group(&consumer, &assigned, CommitMode::Async);
        }
        let timeout = if pending.is_empty() {
            Duration::from_millis(100)
        } else {
            Duration::ZERO
        };
        match consumer.poll(timeout) {
            Some(Ok(msg)) => {
                last_error = None;
                let tp = (msg.topic().to_string(), msg.partition());
                if tips.beyond_end(&tp, msg.offset()) {
                    // Newer than the partition's tip at start: left for the next run.
                    continue;
                }
                let id = ids
                    .entry(tp.clone())
                    .or_insert_with(|| PartitionId::from(partition_id(&tp.0, tp.1)))
                    .clone();
                let rec = to_record(&msg, id.clone());
                drop(msg);
                let p = pending.entry(tp.clone()).or_insert_with(|| Pending {
                    id,
                    records: Vec::with_capacity(batch_size.min(4096)),
                    since: Instant::now(),
                });
                p.records.push(rec);
                if p.records.len() >= batch_size
                    && let Some(p) = pending.remove(&tp)
                    && !send(&tp, p)
                {
                    break Ok(());
                }
                continue;
            }
            Some(Err(e)) => {
                let msg = e.to_string();
                let repeated = last_error
                    .as_ref()
                    .is_some_and(|(m, at)| *m == msg && at.elapsed() < Duration::from_secs(30));
                if !repeated {
                    tracing::warn!(brokers = %brokers, group = %cfg.group, error = %e, retriable = retriable(&e), "kafka source: consumer error (librdkafka retries)");
                    last_error = Some((msg, Instant::now()));
                }
            }
            None => {}
        }
        // Nothing more right now (or an error): hand on partial batches that waited long enough.
        let due: Vec<Tp> = pending
            .iter()
            .filter(|(_, p)| p.since.elapsed() >= wait || timeout.is_zero())
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in due {
            if let Some(p) = pending.remove(&tp)
                && !send(&tp, p)
            {
                break 'outer Ok(());
            }
        }
    };
    // Wait (up to `rebalance_drain`) until the pipeline committed what was handed on, commit
    // that to the group, then leave it (the revoke callback that runs while the consumer
    // closes does not wait again).
    let assigned: Vec<Tp> = shared
        .group_next
        .lock()
        .map(|n| n.keys().cloned().collect())
        .unwrap_or_default();
    let left = shared.wait_committed(&assigned);
    if !left.is_empty() {
        tracing::info!(partitions = ?left, "kafka source: stopping before the pipeline committed everything read; the group's offsets trail the store's until the next run");
    }
    shared.commit_to_group(&consumer, &assigned, CommitMode::Sync);
    drop(consumer);
    tracing::debug!(group = %cfg.group, "kafka source: consumer closed");
    result
}

fn to_record(msg: &BorrowedMessage<'_>, id: PartitionId) -> Record {
    let offset = msg.offset();
    let timestamp = msg.timestamp().to_millis();
    let headers = msg
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| {
                    (
                        h.key.to_string(),
                        h.value.map(Bytes::copy_from_slice).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut meta = vec![
        ("topic".into(), msg.topic().to_string()),
        ("partition".into(), msg.partition().to_string()),
        ("offset".into(), offset.to_string()),
    ];
    if let Some(ts) = timestamp {
        meta.push(("timestamp".into(), ts.to_string()));
    }
    Record {
        key: msg.key().map(Bytes::copy_from_slice),
        value: msg
            .payload()
            .map(Bytes::copy_from_slice)
            .unwrap_or_default(),
        headers,
        timestamp,
        meta,
        partition: id,
        offset: Offset::from(offset.max(0) as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_ids_round_trip_with_slashes_and_dashes_in_names() {
        assert_eq!(partition_id("orders-eu", 3), "orders-eu/3");
        assert_eq!(parse_partition_id("orders-eu/3"), Some(("orders-eu", 3)));
        assert_eq!(parse_partition_id("orders"), None);
    }
}
