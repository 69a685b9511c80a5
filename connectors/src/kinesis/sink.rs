//! The Kinesis sink: PutRecords batches (500 records / 5 MiB), `max_in_flight` calls at once,
//! partial failures retried entry by entry, optional KPL aggregation per target shard.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use bytes::Bytes;
use tokio::task::JoinSet;

use super::aggregation::{Aggregate, UserRecord, hash_key_of};
use super::config::{KinesisSinkConfig, MAX_PARTITION_KEY_CHARS, MAX_RECORD_BYTES};
use super::source::{describe, list_shards};
use super::{StreamRef, backoff, call_error};
use crate::ack::Ack;
use crate::api::{Sink, SinkRecord};
use crate::aws;
use crate::error::ConnectorError;
use crate::record::Route;
use crate::retry::RetryPolicy;

/// One PutRecords entry and the acks of the records it carries (several when aggregated).
struct Entry {
    data: Bytes,
    partition_key: String,
    explicit_hash_key: Option<String>,
    acks: Vec<Ack>,
}

impl Entry {
    fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// An open shard's hash key range.
#[derive(Debug, Clone, Copy)]
pub(super) struct Range {
    pub start: u128,
    pub end: u128,
}

/// Writes to a Kinesis data stream; see [`KinesisSinkConfig`].
pub struct KinesisSink {
    cfg: KinesisSinkConfig,
    client: Client,
    stream: StreamRef,
    /// Open shards by starting hash key (for `Route.index` and aggregation by shard).
    ranges: Vec<Range>,
    pending: Vec<Entry>,
    pending_bytes: usize,
    oldest: Option<Instant>,
    /// Open aggregates by target shard index.
    aggregates: HashMap<usize, (Aggregate, Vec<Ack>)>,
    in_flight: JoinSet<Result<(), ConnectorError>>,
    /// Records accepted by `write` and not yet acknowledged or failed.
    held: Arc<AtomicUsize>,
}

impl KinesisSink {
    /// Connects, checks the stream exists and reads its open shards.
    pub async fn connect(cfg: KinesisSinkConfig) -> Result<Self, ConnectorError> {
        let stream = StreamRef::parse(&cfg.stream)
            .map_err(|m| ConnectorError::fatal(format!("kinesis sink: {m}")))?;
        let client = super::client(&cfg.aws).await?;
        describe(&client, &stream, &cfg.retries.describe, "sink").await?;
        let mut sink = Self {
            cfg,
            client,
            stream,
            ranges: Vec::new(),
            pending: Vec::new(),
            pending_bytes: 0,
            oldest: None,
            aggregates: HashMap::new(),
            in_flight: JoinSet::new(),
            held: Arc::new(AtomicUsize::new(0)),
        };
        sink.refresh_shards().await?;
        Ok(sink)
    }

    async fn refresh_shards(&mut self) -> Result<(), ConnectorError> {
        let shards = list_shards(
            &self.client,
            &self.stream,
            &self.cfg.retries.describe,
            "sink",
        )
        .await?;
        let mut ranges: Vec<Range> = shards
            .iter()
            .filter(|s| {
                s.sequence_number_range()
                    .is_none_or(|r| r.ending_sequence_number().is_none())
            })
            .filter_map(|s| {
                let r = s.hash_key_range()?;
                Some(Range {
                    start: r.starting_hash_key().parse().ok()?,
                    end: r.ending_hash_key().parse().ok()?,
                })
            })
            .collect();
        ranges.sort_by_key(|r| r.start);
        self.ranges = ranges;
        Ok(())
    }

    /// The open shard (index into `ranges`) a hash key falls into.
    fn shard_of(&self, hash: u128) -> usize {
        self.ranges
            .iter()
            .position(|r| r.start <= hash && hash <= r.end)
            .unwrap_or(0)
    }

    fn push(&mut self, e: Entry) {
        self.pending_bytes += e.size();
        self.oldest.get_or_insert_with(Instant::now);
        self.pending.push(e);
    }

    fn batch_full(&self) -> bool {
        self.pending.len() >= self.cfg.max_batch_records
            || self.pending_bytes as u64 >= self.cfg.max_batch_size.0
    }

    /// Adds a user record to its shard's aggregate, closing the aggregate first when the record
    /// would not fit.
    fn aggregate(&mut self, u: UserRecord, ack: Ack) {
        let hash = match &u.explicit_hash_key {
            Some(h) => h.parse().unwrap_or(0),
            None => hash_key_of(&u.partition_key),
        };
        let shard = self.shard_of(hash);
        let max_size = self.cfg.aggregation_max_size.0 as usize;
        let max_records = self.cfg.aggregation_max_records;
        let full = self.aggregates.get(&shard).is_some_and(|(a, _)| {
            !a.is_empty() && (a.size_with(&u) > max_size || a.len() >= max_records)
        });
        if full && let Some((a, acks)) = self.aggregates.remove(&shard) {
            self.push_aggregate(a, acks);
        }
        let (a, acks) = self.aggregates.entry(shard).or_default();
        a.add(u);
        acks.push(ack);
    }

    fn push_aggregate(&mut self, a: Aggregate, acks: Vec<Ack>) {
        let Some(pk) = a.partition_key().map(str::to_string) else {
            return;
        };
        let (data, explicit_hash_key) = match a.single() {
            // One record is sent as itself: smaller, and readable by any consumer.
            Some((data, ehk)) => (data, ehk),
            None => (a.finish(), a.explicit_hash_key()),
        };
        self.push(Entry {
            data,
            partition_key: pk,
            explicit_hash_key,
            acks,
        });
    }

    /// Moves every open aggregate into the pending entries.
    fn close_aggregates(&mut self) {
        let mut shards: Vec<usize> = self.aggregates.keys().copied().collect();
        shards.sort_unstable();
        for s in shards {
            if let Some((a, acks)) = self.aggregates.remove(&s) {
                self.push_aggregate(a, acks);
            }
        }
    }

    /// Sends pending entries as PutRecords calls: full batches only, or everything with `all`.
    async fn dispatch(&mut self, all: bool) -> Result<(), ConnectorError> {
        while !self.pending.is_empty() && (all || self.batch_full()) {
            let mut n = 0;
            let mut bytes = 0u64;
            for e in &self.pending {
                let s = e.size() as u64;
                if n > 0
                    && (n >= self.cfg.max_batch_records || bytes + s > self.cfg.max_batch_size.0)
                {
                    break;
                }
                n += 1;
                bytes += s;
            }
            let batch: Vec<Entry> = self.pending.drain(..n).collect();
            self.pending_bytes -= bytes as usize;
            if self.pending.is_empty() {
                self.oldest = None;
            }
            while self.in_flight.len() >= self.cfg.max_in_flight {
                self.reap_one().await?;
            }
            let call = PutCall {
                client: self.client.clone(),
                stream: self.stream.clone(),
                policy: self.cfg.retries.put_records,
                fail_on_error: self.cfg.fail_on_error,
                held: self.held.clone(),
            };
            self.in_flight.spawn(call.run(batch));
        }
        Ok(())
    }

    async fn reap_one(&mut self) -> Result<(), ConnectorError> {
        match self.in_flight.join_next().await {
            Some(Ok(r)) => r,
            Some(Err(e)) => Err(ConnectorError::fatal(format!(
                "kinesis sink: stream {}: a PutRecords task failed: {e}",
                self.stream.name
            ))),
            None => Ok(()),
        }
    }

    /// Surfaces errors of calls that already finished, without waiting.
    fn reap_done(&mut self) -> Result<(), ConnectorError> {
        while let Some(j) = self.in_flight.try_join_next() {
            match j {
                Ok(r) => r?,
                Err(e) => {
                    return Err(ConnectorError::fatal(format!(
                        "kinesis sink: stream {}: a PutRecords task failed: {e}",
                        self.stream.name
                    )));
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for KinesisSink {
    async fn partition_count(&mut self) -> Result<Option<u32>, ConnectorError> {
        self.refresh_shards().await?;
        Ok(Some(self.ranges.len().max(1) as u32))
    }

    async fn write(&mut self, batch: Vec<SinkRecord>) -> Result<(), ConnectorError> {
        self.reap_done()?;
        for r in batch {
            let (key, ehk) = match route(&r.route, r.record.value.len(), &self.ranges) {
                Ok(k) => k,
                Err(why) => {
                    let reason = format!("kinesis sink: stream {}: {why}", self.stream.name);
                    r.ack.reject(r.record, reason);
                    continue;
                }
            };
            self.held.fetch_add(1, Ordering::AcqRel);
            if self.cfg.aggregate {
                let u = UserRecord {
                    partition_key: key,
                    explicit_hash_key: ehk,
                    data: r.record.value,
                };
                self.aggregate(u, r.ack);
                self.oldest.get_or_insert_with(Instant::now);
            } else {
                self.push(Entry {
                    data: r.record.value,
                    partition_key: key,
                    explicit_hash_key: ehk,
                    acks: vec![r.ack],
                });
            }
            if self.batch_full() {
                self.dispatch(false).await?;
            }
        }
        let overdue = self
            .oldest
            .is_some_and(|t| t.elapsed() >= self.cfg.flush_interval.0);
        if overdue {
            self.close_aggregates();
            self.dispatch(true).await?;
        }
        // Backpressure: wait for calls to complete while too much is held.
        while self.held.load(Ordering::Acquire) > self.cfg.max_buffered
            && !self.in_flight.is_empty()
        {
            self.reap_one().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ConnectorError> {
        self.close_aggregates();
        self.dispatch(true).await?;
        while !self.in_flight.is_empty() {
            self.reap_one().await?;
        }
        Ok(())
    }
}

/// Partition key and explicit hash key of a record given the open shards' ranges, or why the
/// record cannot be written.
pub(super) fn route(
    route: &Route,
    value_len: usize,
    ranges: &[Range],
) -> Result<(String, Option<String>), String> {
    let mut ehk = route.explicit_hash_key.clone();
    let key = match &route.key {
        Some(k) => k.clone(),
        None => {
            if ehk.is_none()
                && let Some(i) = route.index
                && let Some(range) = ranges.get(i as usize)
            {
                // A partitioner that picked a shard: aim at the middle of its range.
                ehk = Some((range.start + (range.end - range.start) / 2).to_string());
            }
            format!("{:032x}", rand::random::<u128>())
        }
    };
    let chars = key.chars().count();
    if chars == 0 {
        return Err("the partition key is empty".into());
    }
    if chars > MAX_PARTITION_KEY_CHARS {
        return Err(format!(
            "partition key of {chars} characters exceeds Kinesis's {MAX_PARTITION_KEY_CHARS}"
        ));
    }
    if let Some(h) = &ehk
        && h.parse::<u128>().is_err()
    {
        return Err(format!(
            "explicit hash key `{h}` is not a decimal number in 0..2^128"
        ));
    }
    let size = value_len + key.len();
    if size > MAX_RECORD_BYTES {
        return Err(format!(
            "record of {size} bytes (data and partition key) exceeds Kinesis's 1 MiB limit"
        ));
    }
    Ok((key, ehk))
}

/// One PutRecords batch until every entry is written (or a failure stops it).
struct PutCall {
    client: Client,
    stream: StreamRef,
    policy: RetryPolicy,
    fail_on_error: bool,
    held: Arc<AtomicUsize>,
}

impl PutCall {
    async fn run(self, mut todo: Vec<Entry>) -> Result<(), ConnectorError> {
        let name = self.stream.name.clone();
        let mut attempt: u32 = 0;
        loop {
            let entries: Vec<PutRecordsRequestEntry> = todo
                .iter()
                .filter_map(|e| {
                    PutRecordsRequestEntry::builder()
                        .data(Blob::new(e.data.to_vec()))
                        .partition_key(&e.partition_key)
                        .set_explicit_hash_key(e.explicit_hash_key.clone())
                        .build()
                        .ok()
                })
                .collect();
            let out = self
                .policy
                .run(
                    &format!("kinesis sink: PutRecords to stream {name}"),
                    aws::is_retriable,
                    || {
                        self.client
                            .put_records()
                            .set_stream_name(self.stream.name_param())
                            .set_stream_arn(self.stream.arn_param())
                            .set_records(Some(entries.clone()))
                            .send()
                    },
                )
                .await
                .map_err(|e| call_error("sink", &name, None, "PutRecords", &e))?;
            let results = out.records();
            if results.len() != todo.len() {
                return Err(ConnectorError::fatal(format!(
                    "kinesis sink: stream {name}: PutRecords answered {} results for {} records",
                    results.len(),
                    todo.len()
                )));
            }
            let mut failed = Vec::new();
            let mut first_error = None;
            for (e, res) in todo.into_iter().zip(results) {
                match res.error_code() {
                    None => {
                        self.held.fetch_sub(e.acks.len(), Ordering::AcqRel);
                        for a in e.acks {
                            a.ack();
                        }
                    }
                    Some(code) => {
                        first_error.get_or_insert_with(|| {
                            format!("{code}: {}", res.error_message().unwrap_or_default())
                        });
                        failed.push(e);
                    }
                }
            }
            if failed.is_empty() {
                return Ok(());
            }
            let why = first_error.unwrap_or_default();
            if self.fail_on_error {
                return Err(ConnectorError::fatal(format!(
                    "kinesis sink: stream {name}: PutRecords refused {} records ({why}); fail_on_error is set",
                    failed.len()
                )));
            }
            attempt = attempt.saturating_add(1);
            let delay = backoff(&self.policy, attempt);
            tracing::warn!(stream = %name, failed = failed.len(), error = %why, attempt, retry_in = ?delay, "PutRecords partly failed; sending the failed records again");
            tokio::time::sleep(delay).await;
            todo = failed;
        }
    }
}
