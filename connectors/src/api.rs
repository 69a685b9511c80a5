//! The connector API: what a source and a sink implement.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::ack::Ack;
use crate::error::ConnectorError;
use crate::record::{Offset, PartitionId, Record, Route};

/// What the offset store holds for one partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    /// Offset of the last delivered record; reading resumes after it.
    pub offset: Offset,
    /// The partition was read to its end (a closed shard) and everything in it was delivered.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub finished: bool,
}

/// Committed offsets of a pipeline, by partition.
pub type CommittedOffsets = HashMap<PartitionId, Committed>;

/// A batch of records from one source partition, in partition order.
#[derive(Debug)]
pub struct SourceBatch {
    pub partition: PartitionId,
    pub records: Vec<Record>,
    /// The partition has no more records after these (a closed shard, the end of a file).
    /// A batch may carry no records and only this flag.
    pub end_of_partition: bool,
    /// Offset to record when `records` is empty and `end_of_partition` is set.
    pub end_offset: Option<Offset>,
}

impl SourceBatch {
    /// Records of a partition that goes on.
    pub fn records(partition: PartitionId, records: Vec<Record>) -> Self {
        Self {
            partition,
            records,
            end_of_partition: false,
            end_offset: None,
        }
    }

    /// The last records (maybe none) of a partition that ends, with the offset to record as
    /// its end.
    pub fn end(partition: PartitionId, records: Vec<Record>, end_offset: Option<Offset>) -> Self {
        Self {
            partition,
            records,
            end_of_partition: true,
            end_offset,
        }
    }
}

/// What a running source gets from the runtime.
pub struct SourceContext {
    /// Offsets committed by earlier runs: resume after them.
    pub start: CommittedOffsets,
    /// Where batches go. Sending waits when the pipeline is busy (backpressure).
    pub output: mpsc::Sender<SourceBatch>,
    /// Fires when the pipeline stops: return promptly, without sending more.
    pub shutdown: CancellationToken,
    /// Offsets as they are committed while the pipeline runs (for parent-before-child shard rules).
    pub committed: watch::Receiver<Arc<CommittedOffsets>>,
    /// Where a source whose partitions are assigned while it runs (a Kafka consumer group)
    /// announces newly assigned partitions, before sending any of their records: the offset
    /// store then takes them over from their previous owner instead of refusing its commits as
    /// stale. `None` when nobody listens.
    pub assigned: Option<mpsc::UnboundedSender<Vec<PartitionId>>>,
    /// Where the source reports how far behind the newest record each partition is (Kinesis:
    /// `MillisBehindLatest`), for the runtime's `sluice_source_lag_seconds`.
    pub lag: Arc<Lag>,
    /// Set when a coordinator shares the partitions among workers (DynamoDB leases): the source
    /// then reads only the partitions granted here. `None`: every partition is this worker's.
    pub grants: Option<Grants>,
    /// Stop at the tip each partition had when the run started (`sluice run --until-caught-up`):
    /// read every partition up to it, then return `Ok`. An open partition stopped there is not
    /// finished (no end marker): the next run goes on after its last record.
    pub until_caught_up: bool,
}

/// The partitions granted to this worker, with the offset each resumes after.
pub type Granted = std::collections::BTreeMap<PartitionId, Option<Committed>>;

/// How a coordinator that shares a stream's shards among workers talks to the source. The
/// source discovers shards (with their parents) and publishes them; it reads exactly the
/// granted partitions, starting after the offset the grant carries (`None`: its start
/// position); when a partition leaves the grant it stops reading it at once and reports the
/// offset of the last record it sent, so the runtime can wait until the sink acknowledged it,
/// commit and hand the partition on.
pub struct Grants {
    /// The partitions this worker may read now. Lineage is the coordinator's job: a child is
    /// granted only after its parents' ends are committed.
    pub granted: watch::Receiver<Arc<Granted>>,
    /// Every shard the source's last discovery listed, with parents and whether it is closed.
    pub discovered: watch::Sender<Arc<Vec<crate::shards::ShardNode>>>,
    /// A partition the source no longer reads (its grant was withdrawn, or it was read to its
    /// end), with the offset of the last record sent for it (`None`: nothing was sent).
    pub released: mpsc::UnboundedSender<(PartitionId, Option<Offset>)>,
}

type PerPartition = std::collections::BTreeMap<PartitionId, u64>;

/// Per-partition lag reported by a source: in time (milliseconds between what it reads and the
/// newest record of the partition) and, where the system counts positions (Kafka), in records.
/// One short lock per report; a finished partition is removed.
#[derive(Debug, Default)]
pub struct Lag {
    millis: std::sync::Mutex<PerPartition>,
    records: std::sync::Mutex<PerPartition>,
}

fn lock(m: &std::sync::Mutex<PerPartition>) -> std::sync::MutexGuard<'_, PerPartition> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Lag {
    /// The partition is `millis` behind its newest record.
    pub fn set(&self, partition: &PartitionId, millis: u64) {
        lock(&self.millis).insert(partition.clone(), millis);
    }

    /// The partition has `records` records after the position read (Kafka: high watermark
    /// minus position).
    pub fn set_records(&self, partition: &PartitionId, records: u64) {
        lock(&self.records).insert(partition.clone(), records);
    }

    /// The partition was read to its end (or is no longer read here).
    pub fn remove(&self, partition: &PartitionId) {
        lock(&self.millis).remove(partition);
        lock(&self.records).remove(partition);
    }

    /// Every partition with a lag in time, in milliseconds.
    pub fn snapshot(&self) -> Vec<(PartitionId, u64)> {
        lock(&self.millis)
            .iter()
            .map(|(p, m)| (p.clone(), *m))
            .collect()
    }

    /// Every partition with a lag in records.
    pub fn records_snapshot(&self) -> Vec<(PartitionId, u64)> {
        lock(&self.records)
            .iter()
            .map(|(p, m)| (p.clone(), *m))
            .collect()
    }
}

impl SourceContext {
    /// Sends a batch; returns false when the pipeline is stopping and the source should return.
    pub async fn send(&self, batch: SourceBatch) -> bool {
        send_or_stop(&self.output, &self.shutdown, batch).await
    }

    /// A sender for a task of this source (a shard reader), stopping with the pipeline.
    pub fn sender(&self) -> BatchSender {
        BatchSender::new(self.output.clone(), self.shutdown.clone())
    }
}

/// Where a source's partition tasks send batches: the pipeline's channel and the signal that
/// stops them. Cloneable, so each task holds one.
#[derive(Debug, Clone)]
pub struct BatchSender {
    output: mpsc::Sender<SourceBatch>,
    stop: CancellationToken,
}

impl BatchSender {
    pub fn new(output: mpsc::Sender<SourceBatch>, stop: CancellationToken) -> Self {
        Self { output, stop }
    }

    /// Sends a batch; returns false when the task is stopping and should return.
    pub async fn send(&self, batch: SourceBatch) -> bool {
        send_or_stop(&self.output, &self.stop, batch).await
    }

    /// The same channel with another stop signal (one partition's, when its grant can be
    /// withdrawn on its own).
    pub fn with_stop(&self, stop: CancellationToken) -> Self {
        Self::new(self.output.clone(), stop)
    }
}

/// Sends unless `stop` fires first (a full channel must not hold up a stopping source).
async fn send_or_stop(
    output: &mpsc::Sender<SourceBatch>,
    stop: &CancellationToken,
    batch: SourceBatch,
) -> bool {
    tokio::select! {
        biased;
        _ = stop.cancelled() => false,
        r = output.send(batch) => r.is_ok(),
    }
}

/// Keeps the lag of a stopped source current (a paused pipeline), cheaply: it asks how far each
/// partition's committed position is behind the partition's tip, without reading on.
#[async_trait]
pub trait LagProbe: Send {
    /// How often [`LagProbe::probe`] is worth calling.
    fn interval(&self) -> std::time::Duration;
    /// Updates `lag` for the partitions it reports, from their `committed` positions.
    async fn probe(&mut self, committed: &CommittedOffsets, lag: &Lag);
}

/// A source of records.
#[async_trait]
pub trait Source: Send {
    /// Reads and sends batches until the source is exhausted (a finite source returns `Ok`) or
    /// `ctx.shutdown` fires.
    async fn run(&mut self, ctx: SourceContext) -> Result<(), ConnectorError>;
}

/// A record on its way into a sink.
#[derive(Debug)]
pub struct SinkRecord {
    pub record: Record,
    /// The partitioner's choice.
    pub route: Route,
    /// Acknowledge once the record is durably written.
    pub ack: Ack,
}

/// A destination for records.
///
/// The runtime calls `write` with batches in order, `flush` when `max_buffered` records are
/// waiting or `flush_interval` passed, and `close` at the end. A sink acknowledges each record
/// through its [`Ack`] once the record is durable: in `flush` (files) or whenever its requests
/// complete (network sinks, whose `flush` waits for everything in flight). A record the sink
/// cannot take (too large, invalid for the target) is handed back with [`Ack::reject`]; the
/// pipeline's error policy then dead-letters it or stops the pipeline.
#[async_trait]
pub trait Sink: Send {
    /// Partitions a partitioner chooses among (Kafka partitions, Kinesis open shards), if any.
    async fn partition_count(&mut self) -> Result<Option<u32>, ConnectorError> {
        Ok(None)
    }
    /// Takes a batch; may buffer it.
    async fn write(&mut self, batch: Vec<SinkRecord>) -> Result<(), ConnectorError>;
    /// Makes everything written so far durable and acknowledges it.
    async fn flush(&mut self) -> Result<(), ConnectorError>;
    /// Flushes and releases resources; called once at the end.
    async fn close(&mut self) -> Result<(), ConnectorError> {
        self.flush().await
    }
    /// An exactly-once sink's transaction, through which the offset store commits (the Kafka
    /// sink with `exactly_once`). `None` for every other sink.
    fn transaction(&self) -> Option<Arc<dyn Transactional>> {
        None
    }
}

/// The open transaction of an exactly-once sink. Everything the sink wrote since the last
/// commit is in it; the runtime commits it (with the pipeline's offsets) only once the sink is
/// flushed and every record in it is acknowledged, and writes nothing meanwhile.
#[async_trait]
pub trait Transactional: Send + Sync {
    /// Names the transaction in messages (`kafka transactional.id sluice-x on host:9092`).
    fn describe(&self) -> String;
    /// Adds `records` (key, value or tombstone) to `topic` in the open transaction, commits it,
    /// and begins the next.
    async fn commit(
        &self,
        topic: &str,
        records: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<(), TxnError>;
    /// Aborts the open transaction, if any: nothing of it becomes visible.
    async fn abort(&self);
}

/// Why a transaction did not commit.
#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    /// The transaction was aborted (none of it is visible); the pipeline resumes from the last
    /// committed offsets.
    #[error("{0}")]
    Aborted(String),
    /// The producer cannot go on: another instance fenced it, or librdkafka failed for good.
    /// It writes nothing more.
    #[error("{0}")]
    Fatal(String),
}
