//! The Kinesis sink: PutRecords batches (500 records / 5 MiB), `max_in_flight` calls at once
//! but at most one per target shard (so records of one partition key land in order), partial
//! failures retried entry by entry, optional KPL aggregation per target shard.

use std::collections::{BTreeMap, HashSet, VecDeque};
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
use super::responses::FastResponses;
use super::source::{describe, list_shards};
use super::{StreamRef, at};
use crate::ack::Ack;
use crate::api::{Sink, SinkRecord};
use crate::error::{ConnectorError, retriable};
use crate::record::Route;
use crate::retry::RetryPolicy;

/// One PutRecords entry and the acks of the records it carries (several when aggregated).
struct Entry {
    /// The target shard (index into `ranges`); one key always maps to one index.
    shard: usize,
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
    /// Entries waiting to be sent, in order, by target shard.
    pending: BTreeMap<usize, VecDeque<Entry>>,
    pending_count: usize,
    pending_bytes: usize,
    oldest: Option<Instant>,
    /// Open aggregates by target shard index.
    aggregates: BTreeMap<usize, (Aggregate, Vec<Ack>)>,
    /// Calls in flight, each returning the target shards it carried.
    in_flight: JoinSet<(Vec<usize>, Result<(), ConnectorError>)>,
    /// Target shards with a call in flight: their next entries wait for it.
    busy: HashSet<usize>,
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
            pending: BTreeMap::new(),
            pending_count: 0,
            pending_bytes: 0,
            oldest: None,
            aggregates: BTreeMap::new(),
            in_flight: JoinSet::new(),
            busy: HashSet::new(),
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

    /// The target shard of a partition key or explicit hash key.
    fn shard_for(&self, partition_key: &str, explicit_hash_key: Option<&str>) -> usize {
        let hash = match explicit_hash_key {
            Some(h) => h.parse().unwrap_or(0),
            None => hash_key_of(partition_key),
        };
        self.shard_of(hash)
    }

    fn push(&mut self, e: Entry) {
        self.pending_bytes += e.size();
        self.pending_count += 1;
        self.oldest.get_or_insert_with(Instant::now);
        self.pending.entry(e.shard).or_default().push_back(e);
    }

    fn batch_full(&self) -> bool {
        self.pending_count >= self.cfg.max_batch_records
            || self.pending_bytes as u64 >= self.cfg.max_batch_size.0
    }

    /// Adds a user record to its shard's aggregate, closing the aggregate first when the record
    /// would not fit.
    fn aggregate(&mut self, u: UserRecord, ack: Ack) {
        let shard = self.shard_for(&u.partition_key, u.explicit_hash_key.as_deref());
        let max_size = self.cfg.aggregation_max_size.0 as usize;
        let max_records = self.cfg.aggregation_max_records;
        let full = self
            .aggregates
            .get(&shard)
            .is_some_and(|(a, _)| !a.is_empty() && !fits(a, &u, max_size, max_records));
        if full && let Some((a, acks)) = self.aggregates.remove(&shard) {
            self.push_aggregate(shard, a, acks);
        }
        let (a, acks) = self.aggregates.entry(shard).or_default();
        a.add(u);
        acks.push(ack);
    }

    fn push_aggregate(&mut self, shard: usize, a: Aggregate, acks: Vec<Ack>) {
        let Some(pk) = a.partition_key().map(str::to_string) else {
            return;
        };
        let (data, explicit_hash_key) = match a.single() {
            // One record is sent as itself: smaller, and readable by any consumer.
            Some((data, ehk)) => (data, ehk),
            None => (a.finish(), a.explicit_hash_key()),
        };
        self.push(Entry {
            shard,
            data,
            partition_key: pk,
            explicit_hash_key,
            acks,
        });
    }

    /// Moves every open aggregate into the pending entries.
    fn close_aggregates(&mut self) {
        for (s, (a, acks)) in std::mem::take(&mut self.aggregates) {
            self.push_aggregate(s, a, acks);
        }
    }

    /// Sends pending entries as PutRecords calls: full batches only, or everything with `all`.
    /// A call carries only shards with no call in flight, so the entries of one shard (and of
    /// one partition key) are written in the order they came, while other shards go ahead.
    async fn dispatch(&mut self, all: bool) -> Result<(), ConnectorError> {
        while self.pending_count > 0 && (all || self.batch_full()) {
            if self.in_flight.len() >= self.cfg.max_in_flight {
                self.reap_one().await?;
                continue;
            }
            let (batch, shards, bytes) = take_batch(
                &mut self.pending,
                &self.busy,
                self.cfg.max_batch_records,
                self.cfg.max_batch_size.0,
            );
            if batch.is_empty() {
                // Every shard with entries waits for its call in flight.
                self.reap_one().await?;
                continue;
            }
            self.pending_count -= batch.len();
            self.pending_bytes -= bytes as usize;
            if self.pending_count == 0 {
                self.oldest = None;
            }
            self.busy.extend(shards.iter().copied());
            let call = PutCall {
                client: self.client.clone(),
                stream: self.stream.clone(),
                policy: self.cfg.retries.put_records,
                fail_on_error: self.cfg.fail_on_error,
                held: self.held.clone(),
            };
            self.in_flight
                .spawn(async move { (shards, call.run(batch).await) });
        }
        Ok(())
    }

    fn joined(
        &mut self,
        j: Result<(Vec<usize>, Result<(), ConnectorError>), tokio::task::JoinError>,
    ) -> Result<(), ConnectorError> {
        match j {
            Ok((shards, r)) => {
                for s in shards {
                    self.busy.remove(&s);
                }
                r
            }
            Err(e) => Err(ConnectorError::fatal(format!(
                "kinesis sink: stream {}: a PutRecords task failed: {e}",
                self.stream.name
            ))),
        }
    }

    async fn reap_one(&mut self) -> Result<(), ConnectorError> {
        match self.in_flight.join_next().await {
            Some(j) => self.joined(j),
            None => Ok(()),
        }
    }

    /// Surfaces errors of calls that already finished, without waiting.
    fn reap_done(&mut self) -> Result<(), ConnectorError> {
        while let Some(j) = self.in_flight.try_join_next() {
            self.joined(j)?;
        }
        Ok(())
    }
}

/// Whether user record `u` may join aggregate `a`: within `max_size` and `max_records`, and the
/// Kinesis record it makes (data plus the partition key it is sent with) within 1 MiB.
fn fits(a: &Aggregate, u: &UserRecord, max_size: usize, max_records: usize) -> bool {
    let size = a.size_with(u);
    let pk = a.partition_key().unwrap_or(&u.partition_key).len();
    size <= max_size && size + pk <= MAX_RECORD_BYTES && a.len() < max_records
}

/// Takes the next PutRecords batch from the front of the queues of shards not in `busy`, within
/// `max_records` and `max_bytes` (at least one entry, if any shard is free). Returns the
/// entries, the shards they target and their size.
fn take_batch(
    pending: &mut BTreeMap<usize, VecDeque<Entry>>,
    busy: &HashSet<usize>,
    max_records: usize,
    max_bytes: u64,
) -> (Vec<Entry>, Vec<usize>, u64) {
    let mut batch = Vec::new();
    let mut shards = Vec::new();
    let mut bytes = 0u64;
    'shards: for (&shard, queue) in pending.iter_mut() {
        if busy.contains(&shard) {
            continue;
        }
        let mut took = false;
        while let Some(e) = queue.front() {
            let s = e.size() as u64;
            if !batch.is_empty() && (batch.len() >= max_records || bytes + s > max_bytes) {
                if took {
                    shards.push(shard);
                }
                break 'shards;
            }
            bytes += s;
            took = true;
            if let Some(e) = queue.pop_front() {
                batch.push(e);
            }
        }
        if took {
            shards.push(shard);
        }
    }
    pending.retain(|_, q| !q.is_empty());
    (batch, shards, bytes)
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
                let shard = self.shard_for(&key, ehk.as_deref());
                self.push(Entry {
                    shard,
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
            crate::hex32(rand::random())
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

/// The PutRecords request entries of `todo`, in order. `build` cannot fail here (data and
/// partition key are always set); were an entry ever left out, the answer would hold fewer
/// results than `todo`, which fails the call rather than acknowledge the wrong records.
fn request_entries(todo: &[Entry]) -> Vec<PutRecordsRequestEntry> {
    todo.iter()
        .filter_map(|e| {
            PutRecordsRequestEntry::builder()
                .data(Blob::new(e.data.to_vec()))
                .partition_key(&e.partition_key)
                .set_explicit_hash_key(e.explicit_hash_key.clone())
                .build()
                .ok()
        })
        .collect()
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
        let mut delays = self.policy.backoff.delays();
        loop {
            let out = self
                .policy
                .run(
                    &format!("kinesis sink: PutRecords to stream {name}"),
                    retriable,
                    || {
                        // Built per attempt from the entries (one copy of the data), not
                        // built once and cloned for each attempt (two copies).
                        self.client
                            .put_records()
                            .set_stream_name(self.stream.name_param())
                            .set_stream_arn(self.stream.arn_param())
                            .set_records(Some(request_entries(&todo)))
                            .customize()
                            .interceptor(FastResponses::put_records())
                            .send()
                    },
                )
                .await
                .map_err(|e| ConnectorError::call(at("sink", &name, None), "PutRecords", &e))?;
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
            let delay = delays.next().unwrap_or_default();
            tracing::warn!(stream = %name, failed = failed.len(), error = %why, attempt, retry_in = ?delay, "PutRecords partly failed; sending the failed records again");
            tokio::time::sleep(delay).await;
            todo = failed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinesis::config::MAX_BATCH_BYTES;

    fn entry(shard: usize, n: usize) -> Entry {
        Entry {
            shard,
            data: Bytes::from(n.to_string()),
            partition_key: format!("k{shard}"),
            explicit_hash_key: None,
            acks: Vec::new(),
        }
    }

    fn queues(spec: &[(usize, usize)]) -> BTreeMap<usize, VecDeque<Entry>> {
        let mut q: BTreeMap<usize, VecDeque<Entry>> = BTreeMap::new();
        let mut n = 0;
        for &(shard, count) in spec {
            for _ in 0..count {
                q.entry(shard).or_default().push_back(entry(shard, n));
                n += 1;
            }
        }
        q
    }

    #[test]
    fn a_batch_takes_only_shards_without_a_call_in_flight_in_order() {
        let mut q = queues(&[(0, 3), (1, 2), (2, 2)]);
        let busy = HashSet::from([1]);
        let (batch, shards, _) = take_batch(&mut q, &busy, 500, MAX_BATCH_BYTES);
        assert_eq!(shards, [0, 2]);
        let data: Vec<&[u8]> = batch.iter().map(|e| e.data.as_ref()).collect();
        assert_eq!(data, [b"0", b"1", b"2", b"5", b"6"]);
        // Shard 1 keeps its entries for a later call.
        assert_eq!(q.len(), 1);
        assert_eq!(q[&1].len(), 2);
        // Everything busy: nothing to send.
        let (batch, shards, _) = take_batch(&mut q, &HashSet::from([1]), 500, MAX_BATCH_BYTES);
        assert!(batch.is_empty() && shards.is_empty());
    }

    #[test]
    fn a_batch_stops_at_the_record_limit_and_names_every_shard_it_touched() {
        let mut q = queues(&[(0, 2), (1, 3)]);
        let (batch, shards, _) = take_batch(&mut q, &HashSet::new(), 3, MAX_BATCH_BYTES);
        assert_eq!(batch.len(), 3);
        assert_eq!(shards, [0, 1]);
        assert_eq!(q[&1].len(), 2);
    }

    #[test]
    fn an_aggregate_plus_its_partition_key_never_exceeds_one_mib() {
        let pk = "p".repeat(256);
        let user = |len: usize| UserRecord {
            partition_key: pk.clone(),
            explicit_hash_key: None,
            data: Bytes::from(vec![b'x'; len]),
        };
        let mut a = Aggregate::default();
        a.add(user(500 * 1024));
        // Data alone fits 1 MiB; with the 256-byte key it would not.
        let len = MAX_RECORD_BYTES - a.size_with(&user(0)) - 100;
        let u = user(len);
        assert!(a.size_with(&u) <= MAX_RECORD_BYTES);
        assert!(a.size_with(&u) + pk.len() > MAX_RECORD_BYTES);
        assert!(!fits(&a, &u, MAX_RECORD_BYTES, usize::MAX));
        assert!(fits(&a, &user(1), MAX_RECORD_BYTES, usize::MAX));
    }
}
