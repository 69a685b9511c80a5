//! The Kafka source: a consumer in the spec's group, so workers share partitions through
//! Kafka's group protocol.
//!
//! - [`super::group`]: the rebalance state. On assignment a partition starts after the later of
//!   the pipeline store's and the group's committed offsets; on revocation the worker waits (up
//!   to `rebalance_drain`) until what it handed on is committed.
//! - [`poll_loop`] runs on a blocking thread (librdkafka's calls block): it batches records
//!   per partition, hands them on, mirrors the pipeline's commits into the group so Kafka tools
//!   see the lag, and asks [`super::tips`] for the lag in records and `--until-caught-up`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};

use super::client::{LogContext, config_error};
use super::config::KafkaSourceConfig;
use super::group::{ConsumerCtx, Shared};
use super::tips::Tips;
use crate::api::{Source, SourceBatch, SourceContext};
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
        .into_iter()
        .flat_map(|hs| hs.iter())
        .map(|h| {
            let value = h.value.map(Bytes::copy_from_slice).unwrap_or_default();
            (h.key.to_string(), value)
        })
        .collect();
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
