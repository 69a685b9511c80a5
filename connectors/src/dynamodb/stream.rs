//! Reading a table's DynamoDB Stream: shard discovery, parents before children, one reader per
//! ready shard, offsets = sequence numbers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodbstreams::error::ProvideErrorMetadata;
use aws_sdk_dynamodbstreams::types::{OperationType, ShardIteratorType};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::config::{DynamoSourceConfig, ItemFormat, StreamStart};
use super::item;
use crate::api::{BatchSender, CommittedOffsets, Granted, SourceBatch, SourceContext};

use crate::error::{Classify, ConnectorError, retriable};
use crate::record::{Offset, PartitionId, Record};
use crate::shards::{SentOffsets, ShardGraph, ShardNode};

/// The offset of a shard that was passed over without reading (closed before a `latest` start):
/// `skipped@<ms>`, the start of that run (rounded down to a second). Older markers carry no time.
const SKIPPED: &str = "skipped";

/// The skip marker of a run started at `floor` (ms since the epoch).
fn skipped_marker(floor: i64) -> String {
    format!("{SKIPPED}@{floor}")
}

/// `Some(run start)` for a skip marker (`Some(None)` for one without a time), `None` for an
/// offset.
fn skipped_at(offset: &str) -> Option<Option<i64>> {
    if offset == SKIPPED {
        return Some(None);
    }
    offset
        .strip_prefix(SKIPPED)
        .and_then(|r| r.strip_prefix('@'))
        .map(|t| t.parse().ok())
}

/// Reads the stream of one table.
pub(crate) struct StreamReader {
    pub cfg: Arc<DynamoSourceConfig>,
    pub client: aws_sdk_dynamodb::Client,
    pub streams: aws_sdk_dynamodbstreams::Client,
}

/// Where a shard reader starts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StartAt {
    After(String),
    TrimHorizon,
    Latest,
}

/// What to do with a shard that is ready to be read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Plan {
    /// Read from here, passing over records created before `since` (ms since the epoch).
    Read { at: StartAt, since: Option<i64> },
    /// Closed before a `latest` start: nothing in it is new; mark it finished.
    Skip,
}

/// What is known about a ready shard when deciding where it starts.
#[derive(Debug, Clone, Default)]
struct Lineage<'a> {
    /// Its committed offset, if any.
    committed: Option<&'a str>,
    /// It was in this run's first listing.
    listed_at_start: bool,
    /// One of its parents was in this run's first listing.
    parent_at_start: bool,
    /// A parent was passed over at a `latest` start: that run's start (`None` if the marker has
    /// no time).
    parent_skipped: Option<Option<i64>>,
    closed: bool,
}

/// What a ready shard does. `since` is the run's own lower bound (`snapshot_then_cdc`);
/// `run_started` is when this run began (ms since the epoch).
///
/// With `latest`, a shard listed at start reads from its tip, and one already closed is passed
/// over, except for children: a shard whose parent was passed over (or was listed at start)
/// reads from its oldest record and passes over what was created before the start of the run
/// that passed the parent over. Its tip at the time the parent is done is later than that start,
/// and changes in between would be lost, also when the run crashed before committing any of
/// them. DynamoDB Streams has no AT_TIMESTAMP, and creation times are whole seconds, so the
/// bound is the start rounded down to a second.
fn plan(latest: bool, shard: &Lineage, since: Option<i64>, run_started: i64) -> Plan {
    let floor = run_started - run_started.rem_euclid(1000);
    if let Some(c) = shard.committed
        && skipped_at(c).is_none()
    {
        return Plan::Read {
            at: StartAt::After(c.to_string()),
            since,
        };
    }
    if latest && since.is_none() {
        if let Some(mark) = shard.parent_skipped {
            let t = mark.unwrap_or(floor).min(floor);
            if shard.closed && shard.listed_at_start && t >= floor {
                // Closed before this run began, below a shard this run passed over.
                return Plan::Skip;
            }
            return Plan::Read {
                at: StartAt::TrimHorizon,
                since: Some(t),
            };
        }
        if shard.listed_at_start {
            return if shard.closed {
                Plan::Skip
            } else if shard.parent_at_start {
                Plan::Read {
                    at: StartAt::TrimHorizon,
                    since: Some(floor),
                }
            } else {
                Plan::Read {
                    at: StartAt::Latest,
                    since: None,
                }
            };
        }
    }
    Plan::Read {
        at: StartAt::TrimHorizon,
        since,
    }
}

impl StreamReader {
    /// Where this reader's calls happen, for [`ConnectorError::call`].
    fn at(&self) -> String {
        format!("dynamodb source {}", self.cfg.table)
    }

    /// The ARN of the table's current stream; an error if streams are off.
    pub async fn stream_arn(&self) -> Result<String, ConnectorError> {
        let table = &self.cfg.table;
        let out = self
            .cfg
            .retry
            .run("DescribeTable", retriable, || {
                self.client.describe_table().table_name(table).send()
            })
            .await
            .map_err(|e| ConnectorError::call(self.at(), "DescribeTable", &e))?;
        let t = out.table();
        let enabled = t
            .and_then(|t| t.stream_specification())
            .is_some_and(|s| s.stream_enabled());
        match t.and_then(|t| t.latest_stream_arn()) {
            Some(arn) if enabled => Ok(arn.to_string()),
            _ => Err(ConnectorError::fatal(format!(
                "{}: DescribeTable: the table has no stream: enable DynamoDB Streams (NEW_AND_OLD_IMAGES) on it",
                self.at()
            ))),
        }
    }

    /// Lists the stream's shards.
    async fn shards(&self, arn: &str) -> Result<Vec<ShardNode>, ConnectorError> {
        let mut nodes = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let out = self
                .cfg
                .retry
                .run("DescribeStream", retriable, || {
                    self.streams
                        .describe_stream()
                        .stream_arn(arn)
                        .set_exclusive_start_shard_id(after.clone())
                        .send()
                })
                .await
                .map_err(|e| ConnectorError::call(self.at(), "DescribeStream", &e))?;
            let Some(d) = out.stream_description() else {
                break;
            };
            for s in d.shards() {
                let Some(id) = s.shard_id() else { continue };
                let closed = s
                    .sequence_number_range()
                    .and_then(|r| r.ending_sequence_number())
                    .is_some();
                nodes.push(ShardNode::new(id, s.parent_shard_id(), closed));
            }
            match d.last_evaluated_shard_id() {
                Some(last) => after = Some(last.to_string()),
                None => break,
            }
        }
        Ok(nodes)
    }

    /// Reads the stream until `ctx.shutdown` (with `ctx.until_caught_up`, until every shard
    /// listed at the start was read to its end or its tip). With `since` (ms since the epoch),
    /// records created earlier are passed over.
    pub async fn run(&self, ctx: &SourceContext, since: Option<i64>) -> Result<(), ConnectorError> {
        let run_started = chrono::Utc::now().timestamp_millis();
        let arn = self.stream_arn().await?;
        let mut graph = ShardGraph::default();
        // Shards seen at the first listing: with `latest`, those start at the stream's tip
        // (or, if closed, are passed over); shards that appear later are read from their start.
        let mut initial: Option<HashSet<String>> = None;
        let mut running: HashSet<String> = HashSet::new();
        // Shards whose reader reached the end; they count as finished once committed.
        let mut done: HashSet<String> = HashSet::new();
        let mut readers: JoinSet<(String, Result<(), ConnectorError>)> = JoinSet::new();
        let (skip_tx, mut skip_rx) = mpsc::unbounded_channel::<String>();
        let mut committed_rx = ctx.committed.clone();
        let stop = ctx.shutdown.clone();
        let mut discover = tokio::time::interval(self.cfg.shard_discovery_interval.0);
        discover.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // With leases: the shards granted to this worker, each reader's own stop token, and the
        // offset of the last record sent per shard (reported when a grant is withdrawn).
        let mut grant_rx = ctx.grants.as_ref().map(|g| g.granted.clone());
        let mut granted: Arc<Granted> = Arc::default();
        let mut tokens: HashMap<String, CancellationToken> = HashMap::new();
        let mut withdrawn: HashSet<String> = HashSet::new();
        let sent = Arc::new(SentOffsets::new(ctx.grants.as_ref()));
        let release = |id: &str| {
            if let Some(g) = &ctx.grants {
                let _ = g.released.send((Arc::from(id), sent.last(id)));
            }
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = discover.tick() => {
                    for n in self.shards(&arn).await? {
                        graph.insert(n);
                    }
                    if initial.is_none() {
                        initial = Some(graph.ids().map(str::to_string).collect());
                        tracing::info!(table = %self.cfg.table, stream = %arn, shards = graph.len(), "reading the stream");
                    }
                    if let Some(g) = &ctx.grants {
                        g.discovered.send_replace(Arc::new(graph.nodes().cloned().collect()));
                    }
                }
                r = async { grant_rx.as_mut()?.changed().await.ok() }, if grant_rx.is_some() => {
                    let Some(()) = r else {
                        // The coordinator is gone; shutdown follows.
                        grant_rx = None;
                        continue;
                    };
                    let now = grant_rx.as_mut().map(|g| g.borrow_and_update().clone()).unwrap_or_default();
                    for id in granted.keys() {
                        if now.contains_key(id) {
                            continue;
                        }
                        let id = id.to_string();
                        tracing::info!(table = %self.cfg.table, shard = %id, "shard no longer granted to this worker; stopping its reader");
                        done.remove(&id);
                        if let Some(t) = tokens.remove(&id) {
                            t.cancel();
                        }
                        if running.contains(&id) {
                            withdrawn.insert(id);
                        } else {
                            release(&id);
                        }
                    }
                    granted = now;
                }
                changed = committed_rx.changed() => {
                    if changed.is_err() {
                        // The runtime is gone; shutdown follows.
                        committed_rx = ctx.committed.clone();
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                Some(joined) = readers.join_next() => {
                    match joined {
                        Ok((shard, Ok(()))) => {
                            running.remove(&shard);
                            tokens.remove(&shard);
                            let refused = sent.take_refused(&shard);
                            if withdrawn.remove(&shard) {
                                release(&shard);
                            } else if !refused {
                                done.insert(shard);
                            }
                            // Otherwise its batch was refused because the grant was withdrawn
                            // just now: the grant's arm, next, releases it, or, when the grant
                            // is already back (lost and taken again in one lease round), the
                            // shard (neither running nor done) starts again from the grant.
                        }
                        Ok((shard, Err(e))) => {
                            tracing::error!(table = %self.cfg.table, shard = %shard, error = %e, "stream shard reader failed");
                            stop_all(&mut readers).await;
                            return Err(e);
                        }
                        Err(e) => {
                            stop_all(&mut readers).await;
                            return Err(ConnectorError::fatal(format!("{}: shard reader: {e}", self.at())));
                        }
                    }
                }
                Some(shard) = skip_rx.recv() => { done.insert(shard); }
            }
            let listed = |s: &str| initial.as_ref().is_some_and(|i| i.contains(s));
            // Which shards may start: parents finished (committed) first.
            let mut committed: CommittedOffsets = ctx.start.clone();
            for (k, v) in committed_rx.borrow().iter() {
                committed.insert(k.clone(), v.clone());
            }
            if ctx.until_caught_up
                && readers.is_empty()
                && initial.as_ref().is_some_and(|i| {
                    i.iter().all(|id| {
                        done.contains(id) || committed.get(id.as_str()).is_some_and(|c| c.finished)
                    })
                })
            {
                tracing::info!(table = %self.cfg.table, stream = %arn, "every shard read up to its tip at the run's start");
                break;
            }
            let ready = match &ctx.grants {
                None => graph.ready(&committed),
                // The coordinator checked lineage; shards not listed yet wait for discovery.
                Some(_) => granted
                    .iter()
                    .filter(|(p, _)| graph.get(p).is_some())
                    .map(|(p, c)| {
                        // The grant's offset is the table's, fresher than this run's view.
                        match c {
                            Some(c) => committed.insert(p.clone(), c.clone()),
                            None => committed.remove(p),
                        };
                        p.to_string()
                    })
                    .collect(),
            };
            for id in ready {
                // With `--until-caught-up`, a shard that appeared during the run holds only
                // records newer than the run's start.
                let after_start = ctx.until_caught_up && !listed(&id);
                if running.contains(&id) || done.contains(&id) || after_start {
                    continue;
                }
                let node = graph.get(&id);
                let closed = node.is_some_and(|n| n.closed);
                let parents: &[String] = node.map(|n| n.parents.as_slice()).unwrap_or_default();
                let marks: Vec<Option<i64>> = parents
                    .iter()
                    .filter_map(|p| committed.get(p.as_str()))
                    .filter_map(|c| skipped_at(c.offset.as_str()))
                    .collect();
                let parent_skipped =
                    (!marks.is_empty()).then(|| marks.iter().flatten().min().copied());
                let lineage = Lineage {
                    committed: committed.get(id.as_str()).map(|c| c.offset.as_str()),
                    listed_at_start: listed(&id),
                    parent_at_start: parents.iter().any(|p| listed(p)),
                    parent_skipped,
                    closed,
                };
                let plan = plan(
                    self.cfg.start_position == StreamStart::Latest,
                    &lineage,
                    since,
                    run_started,
                );
                // A granted child with no commit starts at its oldest record: its parents were
                // read to their end first, by whichever worker held them.
                let plan = match plan {
                    Plan::Read {
                        at: StartAt::Latest,
                        since,
                    } if ctx.grants.is_some()
                        && lineage.committed.is_none()
                        && parents.iter().any(|p| graph.get(p).is_some()) =>
                    {
                        Plan::Read {
                            at: StartAt::TrimHorizon,
                            since,
                        }
                    }
                    other => other,
                };
                let (start, shard_since) = match plan {
                    Plan::Read { at, since } => (at, since),
                    Plan::Skip => {
                        // Closed before we started: nothing in it is new. Mark it finished so
                        // its children may start.
                        let batch = SourceBatch {
                            partition: Arc::from(id.as_str()),
                            records: Vec::new(),
                            end_of_partition: true,
                            end_offset: Some(Offset::new(skipped_marker(
                                run_started - run_started.rem_euclid(1000),
                            ))),
                        };
                        if !ctx.send(batch).await {
                            break;
                        }
                        let _ = skip_tx.send(id.clone());
                        running.insert(id.clone());
                        continue;
                    }
                };
                tracing::debug!(table = %self.cfg.table, shard = %id, start = ?start, "reading shard");
                running.insert(id.clone());
                let task_stop = tokens
                    .entry(id.clone())
                    .or_insert_with(|| stop.child_token())
                    .clone();
                let shard = ShardTask {
                    cfg: self.cfg.clone(),
                    streams: self.streams.clone(),
                    arn: arn.clone(),
                    shard: id.clone(),
                    batches: BatchSender::new(ctx.output.clone(), task_stop.clone()),
                    stop: task_stop,
                    since: shard_since,
                    sent: sent.clone(),
                    lag: ctx.lag.clone(),
                    // A closed shard is read to its end (its children wait for it).
                    until: (ctx.until_caught_up && !closed).then_some(run_started),
                };
                readers.spawn(async move {
                    let r = shard.read(start).await;
                    (id, r)
                });
            }
        }
        stop_all(&mut readers).await;
        Ok(())
    }
}

async fn stop_all(readers: &mut JoinSet<(String, Result<(), ConnectorError>)>) {
    readers.abort_all();
    while readers.join_next().await.is_some() {}
}

/// One shard's reader.
struct ShardTask {
    cfg: Arc<DynamoSourceConfig>,
    streams: aws_sdk_dynamodbstreams::Client,
    arn: String,
    shard: String,
    batches: BatchSender,
    stop: CancellationToken,
    since: Option<i64>,
    /// The offset of the last record sent, per shard (shared by the readers of one stream).
    sent: Arc<SentOffsets>,
    /// `sluice_source_lag_seconds`: the age of the newest record read, 0 at the tip.
    lag: Arc<crate::api::Lag>,
    /// `--until-caught-up` (an open shard): stop at the tip, or at the first record created
    /// after this time (ms since the epoch).
    until: Option<i64>,
}

impl ShardTask {
    /// Sends a batch through this shard's stop signal, noting its last offset.
    async fn send(&self, batch: SourceBatch) -> bool {
        self.sent.send(&self.batches, batch).await
    }

    /// Where this task's calls happen, for [`ConnectorError::call`].
    fn at(&self) -> String {
        format!("dynamodb source {} shard {}", self.cfg.table, self.shard)
    }

    async fn iterator(&self, at: &StartAt) -> Result<Option<String>, ConnectorError> {
        let (kind, seq) = match at {
            StartAt::After(s) => (ShardIteratorType::AfterSequenceNumber, Some(s.clone())),
            StartAt::TrimHorizon => (ShardIteratorType::TrimHorizon, None),
            StartAt::Latest => (ShardIteratorType::Latest, None),
        };
        let out = self
            .cfg
            .retry
            .run("GetShardIterator", retriable, || {
                self.streams
                    .get_shard_iterator()
                    .stream_arn(&self.arn)
                    .shard_id(&self.shard)
                    .shard_iterator_type(kind.clone())
                    .set_sequence_number(seq.clone())
                    .send()
            })
            .await
            .map_err(|e| ConnectorError::call(self.at(), "GetShardIterator", &e))?;
        Ok(out.shard_iterator().map(str::to_string))
    }

    /// Reads the shard to its end (a closed shard) or until stopped.
    async fn read(self, start: StartAt) -> Result<(), ConnectorError> {
        let first = self.iterator(&start).await?;
        self.read_from(start, first).await
    }

    /// Reads the shard from `first`, the iterator GetShardIterator gave for `start` (if any).
    async fn read_from(self, start: StartAt, first: Option<String>) -> Result<(), ConnectorError> {
        let part: PartitionId = Arc::from(self.shard.as_str());
        let mut at = start;
        let mut last: Option<String> = match &at {
            StartAt::After(s) => Some(s.clone()),
            _ => None,
        };
        let mut iter = first;
        let mut failures = 0u32;
        loop {
            let Some(it) = iter.take() else {
                // No iterator means nothing left to read here (a closed shard read to its end
                // or trimmed away). Say so, so that the shard is finished and its children
                // start, rather than leaving them waiting until the shard ages out.
                tracing::warn!(table = %self.cfg.table, shard = %self.shard, "GetShardIterator returned no iterator; the shard is taken as read to its end");
                self.send(end_batch(&part, last)).await;
                return Ok(());
            };
            if self.stop.is_cancelled() {
                return Ok(());
            }
            let res = self
                .streams
                .get_records()
                .shard_iterator(&it)
                .limit(1000)
                .send()
                .await;
            let out = match res {
                Ok(o) => {
                    failures = 0;
                    o
                }
                Err(e) => {
                    let code = e.code().unwrap_or_default();
                    if code == "ExpiredIteratorException" {
                        iter = self.iterator(&at).await?;
                        continue;
                    }
                    if code == "TrimmedDataAccessException" {
                        tracing::warn!(table = %self.cfg.table, shard = %self.shard, "records past the committed offset were trimmed; reading from the oldest record left");
                        at = StartAt::TrimHorizon;
                        iter = self.iterator(&at).await?;
                        continue;
                    }
                    failures += 1;
                    if !retriable(&e) || failures > self.cfg.retry.max_retries {
                        return Err(ConnectorError::call(self.at(), "GetRecords", &e));
                    }
                    // The delays grow with the failures in a row.
                    let nth = failures.saturating_sub(1) as usize;
                    let delay = self.cfg.retry.backoff.delays().nth(nth).unwrap_or_default();
                    tracing::warn!(table = %self.cfg.table, shard = %self.shard, error = %e.describe(), retry_in = ?delay, "GetRecords failed; backing off");
                    tokio::select! {
                        _ = self.stop.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(delay) => {}
                    }
                    iter = Some(it);
                    continue;
                }
            };
            let next = out.next_shard_iterator().map(str::to_string);
            let mut records = Vec::with_capacity(out.records().len());
            // A record newer than the run's start was reached (`--until-caught-up`).
            let mut newer = false;
            let mut newest: Option<i64> = None;
            for r in out.records() {
                let Some(seq) = r.dynamodb().and_then(|d| d.sequence_number()) else {
                    continue;
                };
                let created = r
                    .dynamodb()
                    .and_then(|d| d.approximate_creation_date_time())
                    .and_then(|t| t.to_millis().ok());
                if let (Some(until), Some(c)) = (self.until, created)
                    && c > until
                {
                    // Newer than the run's start: left for the next run.
                    newer = true;
                    break;
                }
                last = Some(seq.to_string());
                at = StartAt::After(seq.to_string());
                newest = created.or(newest);
                if let (Some(since), Some(c)) = (self.since, created)
                    && c < since
                {
                    continue;
                }
                records.push(to_record(&self.cfg, &part, r, seq, created));
            }
            match newest {
                Some(c) => {
                    let now = chrono::Utc::now().timestamp_millis();
                    self.lag.set(&part, now.saturating_sub(c).max(0) as u64);
                }
                None if out.records().is_empty() => self.lag.set(&part, 0),
                None => {}
            }
            let end = next.is_none() && !newer;
            // At the tip (no records, the shard goes on) or past the run's start.
            let caught_up = self.until.is_some() && (newer || out.records().is_empty());
            if !records.is_empty() || end {
                let batch = SourceBatch {
                    partition: part.clone(),
                    end_offset: (records.is_empty())
                        .then(|| Offset::new(last.clone().unwrap_or_else(|| "end".to_string()))),
                    records,
                    end_of_partition: end,
                };
                if !self.send(batch).await {
                    return Ok(());
                }
            }
            if end {
                tracing::debug!(table = %self.cfg.table, shard = %self.shard, "shard read to its end");
                self.lag.remove(&part);
                return Ok(());
            }
            if caught_up {
                tracing::debug!(table = %self.cfg.table, shard = %self.shard, "shard read up to its tip");
                return Ok(());
            }
            if out.records().is_empty() {
                tokio::select! {
                    _ = self.stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(self.cfg.poll_interval.0) => {}
                }
            }
            iter = next;
        }
    }
}

/// The end marker of a shard with nothing (more) to read: its last record's sequence number, or
/// `end` when none was read.
fn end_batch(part: &PartitionId, last: Option<String>) -> SourceBatch {
    let end = Offset::new(last.unwrap_or_else(|| "end".to_string()));
    SourceBatch::end(part.clone(), Vec::new(), Some(end))
}

/// A stream record as a pipeline record: `{"event", "keys", "new", "old", "sequence_number",
/// "approximate_creation_time"}` with images in the configured format.
fn to_record(
    cfg: &DynamoSourceConfig,
    part: &PartitionId,
    r: &aws_sdk_dynamodbstreams::types::Record,
    seq: &str,
    created: Option<i64>,
) -> Record {
    let event = match r.event_name() {
        Some(OperationType::Insert) => "INSERT",
        Some(OperationType::Modify) => "MODIFY",
        Some(OperationType::Remove) => "REMOVE",
        _ => "UNKNOWN",
    };
    let d = r.dynamodb();
    let conv = |m: Option<&HashMap<String, aws_sdk_dynamodbstreams::types::AttributeValue>>| {
        m.map(|m| item::from_stream_map(m.clone()))
    };
    let keys = conv(d.and_then(|d| d.keys())).unwrap_or_default();
    let new = conv(d.and_then(|d| d.new_image()));
    let old = conv(d.and_then(|d| d.old_image()));
    let write_map = match cfg.item_format() {
        ItemFormat::Json => item::write_plain_map,
        ItemFormat::DynamodbJson => item::write_ddb_map,
    };
    let mut v = Vec::with_capacity(512);
    v.extend_from_slice(br#"{"event":""#);
    v.extend_from_slice(event.as_bytes());
    v.extend_from_slice(br#"","keys":"#);
    write_map(&keys, &mut v);
    for (name, img) in [("new", &new), ("old", &old)] {
        v.extend_from_slice(format!(",\"{name}\":").as_bytes());
        match img {
            Some(m) => write_map(m, &mut v),
            None => v.extend_from_slice(b"null"),
        }
    }
    v.extend_from_slice(br#","sequence_number":"#);
    // Serialising a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut v, seq);
    v.extend_from_slice(br#","approximate_creation_time":"#);
    match created.and_then(chrono::DateTime::from_timestamp_millis) {
        Some(t) => {
            let _ = serde_json::to_writer(
                &mut v,
                &t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            );
        }
        None => v.extend_from_slice(b"null"),
    }
    v.push(b'}');
    let mut key = Vec::with_capacity(64);
    write_map(&keys, &mut key);
    let mut rec = Record::new(part.clone(), Offset::from(seq), v);
    rec.key = Some(Bytes::from(key));
    rec.timestamp = created;
    rec.meta = vec![
        ("table".into(), cfg.table.clone()),
        (
            "event-id".into(),
            r.event_id().unwrap_or_default().to_string(),
        ),
        ("event-name".into(), event.to_string()),
        ("sequence-number".into(), seq.to_string()),
        ("shard-id".into(), part.to_string()),
    ];
    rec
}

#[cfg(test)]
mod tests {
    use super::*;

    const STARTED: i64 = 1_764_496_800_123;

    fn read(at: StartAt, since: Option<i64>) -> Plan {
        Plan::Read { at, since }
    }

    #[test]
    fn latest_reads_an_open_child_of_a_shard_listed_at_start_from_the_runs_start() {
        const FLOOR: i64 = 1_764_496_800_000;
        // {closed parent listed at start, open child listed at start}: the parent is passed
        // over; the child reads from its start, passing over what came before this run.
        let parent = Lineage {
            listed_at_start: true,
            closed: true,
            ..Lineage::default()
        };
        assert_eq!(plan(true, &parent, None, STARTED), Plan::Skip);
        assert_eq!(skipped_marker(FLOOR), "skipped@1764496800000");
        // The child becomes ready once the parent's marker is committed.
        let marker = skipped_marker(FLOOR);
        let child = Lineage {
            listed_at_start: true,
            parent_at_start: true,
            parent_skipped: skipped_at(&marker),
            ..Lineage::default()
        };
        assert_eq!(
            plan(true, &child, None, STARTED),
            read(StartAt::TrimHorizon, Some(FLOOR))
        );
        // A later run (the first crashed before the child committed anything) still reads the
        // child from the first run's start, even once the child has closed.
        let later = STARTED + 3_600_000;
        let closed_child = Lineage {
            closed: true,
            ..child.clone()
        };
        assert_eq!(
            plan(true, &closed_child, None, later),
            read(StartAt::TrimHorizon, Some(FLOOR))
        );
        // A grandchild closed before this run, below a shard this run passed over: passed over.
        assert_eq!(plan(true, &closed_child, None, STARTED), Plan::Skip);
        // A marker without a time (older runs): this run's start.
        let old = Lineage {
            parent_skipped: skipped_at(SKIPPED),
            ..child.clone()
        };
        assert_eq!(
            plan(true, &old, None, STARTED),
            read(StartAt::TrimHorizon, Some(FLOOR))
        );
        // An open child of a parent listed open at start (read from its tip): from the start.
        let open_parent = Lineage {
            listed_at_start: true,
            parent_at_start: true,
            ..Lineage::default()
        };
        assert_eq!(
            plan(true, &open_parent, None, STARTED),
            read(StartAt::TrimHorizon, Some(FLOOR))
        );
        // An open shard without a listed parent starts at once, at the tip.
        let root = Lineage {
            listed_at_start: true,
            ..Lineage::default()
        };
        assert_eq!(
            plan(true, &root, None, STARTED),
            read(StartAt::Latest, None)
        );
        // Shards that appear later are read whole; committed shards resume.
        assert_eq!(
            plan(true, &Lineage::default(), None, STARTED),
            read(StartAt::TrimHorizon, None)
        );
        let resumed = Lineage {
            committed: Some("42"),
            ..child.clone()
        };
        assert_eq!(
            plan(true, &resumed, None, STARTED),
            read(StartAt::After("42".into()), None)
        );
        // trim_horizon reads everything.
        assert_eq!(
            plan(false, &closed_child, None, STARTED),
            read(StartAt::TrimHorizon, None)
        );
        assert_eq!(skipped_at("49600000000000000001"), None);
    }

    #[tokio::test]
    async fn a_shard_without_an_iterator_ends_with_an_end_marker() {
        let cfg: DynamoSourceConfig =
            serde_json::from_value(serde_json::json!({"table": "orders"})).expect("config");
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .build();
        let (tx, mut rx) = mpsc::channel(4);
        let task = ShardTask {
            cfg: Arc::new(cfg),
            streams: aws_sdk_dynamodbstreams::Client::new(&sdk),
            arn: "arn:aws:dynamodb:us-east-1:1:table/orders/stream/x".into(),
            shard: "shardId-1".into(),
            batches: BatchSender::new(tx, CancellationToken::new()),
            stop: CancellationToken::new(),
            since: None,
            sent: Arc::default(),
            lag: Default::default(),
            until: None,
        };
        task.read_from(StartAt::After("77".into()), None)
            .await
            .expect("read");
        let b = rx.try_recv().expect("an end marker");
        assert!(b.end_of_partition && b.records.is_empty());
        assert_eq!(b.end_offset.as_ref().map(|o| o.as_str()), Some("77"));
    }
}
