//! The Kinesis source: finds the stream's shards, starts one reader per shard once its parents
//! are finished and committed, and rediscovers shards every `shard_discovery_interval` and
//! whenever a shard ends.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_kinesis::Client;
use chrono::{DateTime, Utc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::config::{KinesisSourceConfig, ReaderKind, Registration, StartPosition};
use super::records::StartAt;
use super::{StreamRef, at, efo, polling};
use crate::api::{
    BatchSender, CommittedOffsets, Granted, Grants, Source, SourceBatch, SourceContext,
};
use crate::error::{ConnectorError, retriable};
use crate::record::{Offset, PartitionId, Record};
use crate::shards::{SentOffsets, ShardGraph, ShardNode};

/// What shard readers share.
pub(super) struct Shared {
    pub client: Client,
    pub cfg: KinesisSourceConfig,
    pub stream: StreamRef,
    /// The stream's ARN (EFO consumers are registered on it).
    pub stream_arn: String,
    /// Where shard readers send batches.
    pub batches: BatchSender,
    pub shutdown: CancellationToken,
    /// Shards the last discovery listed as closed (EFO readers check for their end).
    pub closed: std::sync::Mutex<HashSet<String>>,
    /// `MillisBehindLatest` per shard, for the runtime's metrics.
    pub lag: Arc<crate::api::Lag>,
    /// Per shard, the token its reader stops on: a child of `shutdown`, cancelled alone when
    /// the shard's grant is withdrawn.
    pub stops: std::sync::Mutex<HashMap<String, CancellationToken>>,
    /// Per shard, the offset of the last record sent into the pipeline.
    pub sent: SentOffsets,
    /// `--until-caught-up`: an open shard stops once `MillisBehindLatest` is 0.
    pub until_caught_up: bool,
}

impl Shared {
    /// Whether a reader of `shard` stops after a response `millis_behind_latest` behind the
    /// tip: with `--until-caught-up`, an open shard at the tip. A closed shard is read to its
    /// end instead (its children wait for that end).
    pub fn caught_up(&self, shard: &str, millis_behind_latest: Option<i64>) -> bool {
        self.until_caught_up && millis_behind_latest == Some(0) && !self.is_closed(shard)
    }

    /// The shard was listed as closed.
    pub fn is_closed(&self, shard: &str) -> bool {
        // A poisoned lock only follows a panic while holding it, which `discover` cannot do.
        self.closed
            .lock()
            .map(|c| c.contains(shard))
            .unwrap_or(false)
    }

    /// The token the reader of `shard` stops on (made on first use).
    pub fn stop_token(&self, shard: &str) -> CancellationToken {
        let mut stops = self.stops.lock().unwrap_or_else(|p| p.into_inner());
        stops
            .entry(shard.to_string())
            .or_insert_with(|| self.shutdown.child_token())
            .clone()
    }

    /// Stops the reader of `shard` (its grant was withdrawn); its next reader gets a new token.
    fn withdraw(&self, shard: &str) {
        let mut stops = self.stops.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = stops.remove(shard) {
            t.cancel();
        }
    }

    /// Sends a batch; false when the pipeline is stopping or the shard's grant was withdrawn
    /// (the batch was then not sent).
    async fn send(&self, batch: SourceBatch) -> bool {
        // No token: the shard was withdrawn while its reader was still running.
        let stop = {
            let stops = self.stops.lock().unwrap_or_else(|p| p.into_inner());
            match stops.get(&*batch.partition) {
                Some(t) => t.clone(),
                None => return false,
            }
        };
        self.sent.send(&self.batches.with_stop(stop), batch).await
    }

    /// Sends the records read from a shard (nothing when there are none); false when the
    /// pipeline is stopping or the shard is no longer granted.
    pub async fn send_records(&self, shard: &PartitionId, records: Vec<Record>) -> bool {
        records.is_empty()
            || self
                .send(SourceBatch::records(shard.clone(), records))
                .await
    }

    /// Ends a closed shard read to its end: its last records and the end marker (at the last
    /// record, or `closed` when none was read) go out, and its lag is no longer reported.
    pub async fn finish(
        &self,
        shard: &PartitionId,
        records: Vec<Record>,
        last: Option<Offset>,
    ) -> Exit {
        self.lag.remove(shard);
        let end = last.unwrap_or_else(|| Offset::from("closed"));
        let batch = SourceBatch::end(shard.clone(), records, Some(end));
        if self.send(batch).await {
            Exit::Finished
        } else {
            Exit::Stopped
        }
    }
}

/// How a shard reader ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Exit {
    /// The shard is closed and was read to its end; the end was sent.
    Finished,
    /// The pipeline is stopping.
    Stopped,
    /// `--until-caught-up`: an open shard read up to its tip; everything read was sent.
    CaughtUp,
}

/// Reads a Kinesis data stream; see [`KinesisSourceConfig`].
pub struct KinesisSource {
    cfg: KinesisSourceConfig,
    configured: StartAt,
    client: Client,
    stream: StreamRef,
    stream_arn: String,
}

impl KinesisSource {
    /// Connects and checks that the stream exists (a missing stream or denied access fails
    /// here, naming the stream).
    pub async fn connect(cfg: KinesisSourceConfig) -> Result<Self, ConnectorError> {
        let stream = StreamRef::parse(&cfg.stream)
            .map_err(|m| ConnectorError::fatal(format!("kinesis source: {m}")))?;
        let configured = match cfg.start_position {
            StartPosition::Latest => StartAt::Latest,
            StartPosition::TrimHorizon => StartAt::TrimHorizon,
            StartPosition::AtTimestamp => {
                StartAt::Timestamp(cfg.start_timestamp().map_err(|m| {
                    ConnectorError::fatal(format!("kinesis source: stream {}: {m}", stream.name))
                })?)
            }
        };
        let client = super::client(&cfg.aws).await?;
        let stream_arn = describe(&client, &stream, &cfg.retries.describe, "source").await?;
        Ok(Self {
            cfg,
            configured,
            client,
            stream,
            stream_arn,
        })
    }
}

/// DescribeStreamSummary: the stream's ARN.
pub(super) async fn describe(
    client: &Client,
    stream: &StreamRef,
    policy: &crate::retry::RetryPolicy,
    role: &str,
) -> Result<String, ConnectorError> {
    let out = policy
        .run(
            &format!(
                "kinesis {role}: DescribeStreamSummary of stream {}",
                stream.name
            ),
            retriable,
            || {
                client
                    .describe_stream_summary()
                    .set_stream_name(stream.name_param())
                    .set_stream_arn(stream.arn_param())
                    .send()
            },
        )
        .await
        .map_err(|e| {
            ConnectorError::call(at(role, &stream.name, None), "DescribeStreamSummary", &e)
        })?;
    Ok(out
        .stream_description_summary()
        .map(|s| s.stream_arn().to_string())
        .or_else(|| stream.arn.clone())
        .unwrap_or_default())
}

/// ListShards (all pages): every shard the stream still holds.
pub(super) async fn list_shards(
    client: &Client,
    stream: &StreamRef,
    policy: &crate::retry::RetryPolicy,
    role: &str,
) -> Result<Vec<aws_sdk_kinesis::types::Shard>, ConnectorError> {
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let t = token.clone();
        let out = policy
            .run(
                &format!("kinesis {role}: ListShards of stream {}", stream.name),
                retriable,
                || {
                    let req = client.list_shards().max_results(1000);
                    match &t {
                        // A page token must come without the stream.
                        Some(t) => req.next_token(t.clone()).send(),
                        None => req
                            .set_stream_name(stream.name_param())
                            .set_stream_arn(stream.arn_param())
                            .send(),
                    }
                },
            )
            .await
            .map_err(|e| ConnectorError::call(at(role, &stream.name, None), "ListShards", &e))?;
        shards.extend(out.shards().iter().cloned());
        match out.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => return Ok(shards),
        }
    }
}

/// Where a shard without a committed offset starts: `configured` is the spec's start position
/// (`Latest`, `TrimHorizon` or `Timestamp`).
///
/// - a shard that appeared while this run was reading (a child of a split or merge): its start;
/// - a shard whose parents earlier runs read: its start (its records follow theirs);
/// - otherwise the configured position, except that with `latest` a shard that had to wait for
///   its parents starts at the time the run started, so nothing written since is skipped.
pub(super) fn first_position(
    configured: &StartAt,
    listed_at_start: bool,
    parents_read_before: bool,
    first_round: bool,
    run_started: DateTime<Utc>,
) -> StartAt {
    if !listed_at_start || parents_read_before {
        return StartAt::TrimHorizon;
    }
    match configured {
        StartAt::Latest if !first_round => StartAt::Timestamp(run_started),
        other => other.clone(),
    }
}

struct Coordinator {
    shared: Arc<Shared>,
    graph: ShardGraph,
    /// Shards listed by the first discovery of this run.
    initial: HashSet<String>,
    /// Offsets committed before this run.
    start: CommittedOffsets,
    /// The spec's start position.
    configured: StartAt,
    run_started: DateTime<Utc>,
    first_round: bool,
    active: HashSet<String>,
    /// Shards this run read to their end (their finish may not be committed yet), and with
    /// `--until-caught-up` open shards read up to their tip.
    done: HashSet<String>,
    consumer_arn: Option<String>,
    readers: JoinSet<(String, Result<Exit, ConnectorError>)>,
    /// Set when a coordinator grants shards to this worker (leases).
    grants: Option<Grants>,
    /// The grant as last applied.
    granted: Arc<Granted>,
    /// Shards whose grant was withdrawn while their reader still ran.
    withdrawn: HashSet<String>,
}

impl Coordinator {
    async fn discover(&mut self) -> Result<(), ConnectorError> {
        let sh = &self.shared;
        let shards = list_shards(
            &sh.client,
            &sh.stream,
            &sh.cfg.retries.list_shards,
            "source",
        )
        .await?;
        let before = self.graph.len();
        for s in &shards {
            let parents = s
                .parent_shard_id()
                .into_iter()
                .chain(s.adjacent_parent_shard_id())
                .filter(|p| !p.is_empty());
            let closed = s
                .sequence_number_range()
                .and_then(|r| r.ending_sequence_number())
                .is_some();
            if closed && let Ok(mut c) = sh.closed.lock() {
                c.insert(s.shard_id().to_string());
            }
            self.graph
                .insert(ShardNode::new(s.shard_id(), parents, closed));
        }
        if self.graph.len() != before {
            tracing::info!(stream = %sh.stream.name, shards = self.graph.len(), "kinesis shards discovered");
        }
        if let Some(g) = &self.grants {
            g.discovered
                .send_replace(Arc::new(self.graph.nodes().cloned().collect()));
        }
        Ok(())
    }

    /// Applies a changed grant: readers of shards no longer granted stop at once; a withdrawn
    /// shard that was not being read is reported released now, the others once their reader
    /// returned.
    fn apply_grant(&mut self) {
        let Some(g) = &mut self.grants else {
            return;
        };
        let now = g.granted.borrow_and_update().clone();
        for id in self.granted.keys() {
            if now.contains_key(id) {
                continue;
            }
            let id = id.to_string();
            tracing::info!(stream = %self.shared.stream.name, shard = %id, "shard no longer granted to this worker; stopping its reader");
            self.shared.withdraw(&id);
            self.shared.lag.remove(&id.as_str().into());
            self.done.remove(&id);
            if self.active.contains(&id) {
                self.withdrawn.insert(id);
            } else {
                let _ = g
                    .released
                    .send((id.as_str().into(), self.shared.sent.last(&id)));
            }
        }
        self.granted = now;
    }

    /// Reports a shard whose reader returned after its grant was withdrawn.
    fn released(&mut self, id: &str) -> bool {
        if !self.withdrawn.remove(id) {
            return false;
        }
        if let Some(g) = &self.grants {
            let _ = g.released.send((id.into(), self.shared.sent.last(id)));
        }
        true
    }

    /// Where a shard without a committed offset starts.
    fn initial_position(&self, id: &str) -> StartAt {
        let parents_read_before = self.graph.get(id).is_some_and(|s| {
            s.parents
                .iter()
                .any(|p| self.start.contains_key(p.as_str()))
        });
        first_position(
            &self.configured,
            self.initial.contains(id),
            parents_read_before,
            self.first_round,
            self.run_started,
        )
    }

    fn start_ready(&mut self, committed: &CommittedOffsets) {
        let ready = match &self.grants {
            None => self.graph.ready(committed),
            // The coordinator checked lineage; shards not listed yet wait for discovery.
            Some(_) => self
                .granted
                .keys()
                .filter(|p| self.graph.get(p).is_some())
                .map(|p| p.to_string())
                .collect(),
        };
        for id in ready {
            // With `--until-caught-up`, a shard that appeared during the run (the child of a
            // split or merge made since) holds only records newer than the run's start.
            let after_start = self.shared.until_caught_up && !self.initial.contains(&id);
            if self.active.contains(&id) || self.done.contains(&id) || after_start {
                continue;
            }
            let resume = match &self.grants {
                None => committed.get(id.as_str()).cloned(),
                Some(_) => self.granted.get(id.as_str()).cloned().flatten(),
            };
            let (start, last) = match resume {
                Some(c) => (StartAt::after_offset(&c.offset), Some(c.offset.clone())),
                // A granted child starts at its oldest record: its parents were read to their
                // end first, by whichever worker held them.
                None if self.grants.is_some()
                    && self
                        .graph
                        .get(&id)
                        .is_some_and(|n| n.parents.iter().any(|p| self.graph.get(p).is_some())) =>
                {
                    (StartAt::TrimHorizon, None)
                }
                None => (self.initial_position(&id), None),
            };
            tracing::info!(stream = %self.shared.stream.name, shard = %id, start = ?start, "reading shard");
            let sh = self.shared.clone();
            let shard: PartitionId = id.as_str().into();
            let consumer = self.consumer_arn.clone();
            self.active.insert(id.clone());
            self.readers.spawn(async move {
                let r = match consumer {
                    Some(arn) => efo::read_shard(sh, arn, shard, start, last).await,
                    None => polling::read_shard(sh, shard, start, last).await,
                };
                (id, r)
            });
        }
        self.first_round = false;
    }

    /// With `--until-caught-up`: every shard listed at the start was read to its end or its
    /// tip, in this run or (finished) in an earlier one.
    fn caught_up(&self, committed: &CommittedOffsets) -> bool {
        self.shared.until_caught_up
            && self.active.is_empty()
            && self.initial.iter().all(|id| {
                self.done.contains(id) || committed.get(id.as_str()).is_some_and(|c| c.finished)
            })
    }

    async fn run(
        &mut self,
        mut committed: tokio::sync::watch::Receiver<Arc<CommittedOffsets>>,
    ) -> Result<(), ConnectorError> {
        let shutdown = self.shared.shutdown.clone();
        let mut tick = tokio::time::interval(self.shared.cfg.shard_discovery_interval.0);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut watching = true;
        let mut granted = self.grants.as_ref().map(|g| g.granted.clone());
        loop {
            self.apply_grant();
            let view = committed.borrow_and_update().clone();
            self.start_ready(&view);
            if self.caught_up(&view) {
                tracing::info!(stream = %self.shared.stream.name, shards = self.initial.len(), "every shard read up to its tip at the run's start");
                return Ok(());
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => self.discover_or_warn().await?,
                r = async { granted.as_mut()?.changed().await.ok() }, if granted.is_some() => {
                    if r.is_none() {
                        // The coordinator is gone; shutdown follows.
                        granted = None;
                    }
                }
                r = committed.changed(), if watching => {
                    if r.is_err() {
                        // The runtime stopped publishing commits; shutdown follows.
                        watching = false;
                    }
                }
                Some(j) = self.readers.join_next(), if !self.readers.is_empty() => match j {
                    Ok((id, Ok(Exit::Finished))) => {
                        tracing::info!(stream = %self.shared.stream.name, shard = %id, "shard read to its end");
                        self.active.remove(&id);
                        if !self.released(&id) {
                            self.done.insert(id);
                        }
                        self.discover_or_warn().await?;
                    }
                    Ok((id, Ok(Exit::CaughtUp))) => {
                        tracing::info!(stream = %self.shared.stream.name, shard = %id, "shard read up to its tip");
                        self.active.remove(&id);
                        if !self.released(&id) {
                            self.done.insert(id);
                        }
                    }
                    Ok((id, Ok(Exit::Stopped))) => {
                        // A reader also stops when its batch was refused because the grant was
                        // withdrawn just now: take the new grant in first, so it counts as
                        // released and not as a pipeline that stopped taking records. When the
                        // grant is already back (lost and taken again in one lease round), the
                        // shard is neither active nor done: it starts again from the grant.
                        let refused = self.shared.sent.take_refused(&id);
                        self.apply_grant();
                        self.active.remove(&id);
                        if self.released(&id) || refused {
                            continue;
                        }
                        if !shutdown.is_cancelled() {
                            // A reader stops on its own only when the pipeline no longer takes
                            // records: stop too, rather than start it again in a loop.
                            return Err(ConnectorError::fatal(format!(
                                "kinesis source: stream {}: shard {id}: the pipeline stopped taking records",
                                self.shared.stream.name
                            )));
                        }
                    }
                    Ok((_, Err(e))) => return Err(e),
                    Err(e) => return Err(ConnectorError::fatal(format!(
                        "kinesis source: stream {}: a shard reader failed: {e}", self.shared.stream.name
                    ))),
                },
            }
        }
    }

    /// Rediscovers shards; a retriable failure (retries exhausted) is logged and tried again at
    /// the next interval.
    async fn discover_or_warn(&mut self) -> Result<(), ConnectorError> {
        match self.discover().await {
            Ok(()) => Ok(()),
            Err(e) if e.retriable => {
                tracing::warn!(stream = %self.shared.stream.name, error = %e, "shard discovery failed; trying again later");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl Source for KinesisSource {
    async fn run(&mut self, ctx: SourceContext) -> Result<(), ConnectorError> {
        let shared = Arc::new(Shared {
            client: self.client.clone(),
            cfg: self.cfg.clone(),
            stream: self.stream.clone(),
            stream_arn: self.stream_arn.clone(),
            batches: ctx.sender(),
            shutdown: ctx.shutdown.clone(),
            closed: std::sync::Mutex::default(),
            lag: ctx.lag.clone(),
            stops: std::sync::Mutex::default(),
            sent: SentOffsets::new(ctx.grants.as_ref()),
            until_caught_up: ctx.until_caught_up,
        });
        let consumer_arn = match self.cfg.reader {
            ReaderKind::Efo => Some(efo::register(&shared).await?),
            ReaderKind::Polling => None,
        };
        let mut co = Coordinator {
            shared: shared.clone(),
            graph: ShardGraph::default(),
            initial: HashSet::new(),
            start: ctx.start.clone(),
            configured: self.configured.clone(),
            run_started: Utc::now(),
            first_round: true,
            active: HashSet::new(),
            done: HashSet::new(),
            consumer_arn: consumer_arn.clone(),
            readers: JoinSet::new(),
            grants: ctx.grants,
            granted: Arc::default(),
            withdrawn: HashSet::new(),
        };
        let result = match co.discover().await {
            Ok(()) => {
                co.initial = co.graph.ids().map(str::to_string).collect();
                co.run(ctx.committed.clone()).await
            }
            Err(e) => Err(e),
        };
        // Readers stop on the shutdown token; on an error, stop them too.
        if result.is_err() {
            co.readers.abort_all();
        }
        while let Some(j) = co.readers.join_next().await {
            if let Ok((id, Err(e))) = j {
                tracing::warn!(stream = %shared.stream.name, shard = %id, error = %e, "shard reader failed while stopping");
            }
        }
        if let (Some(arn), Registration::Lazy, Ok(())) =
            (&consumer_arn, self.cfg.registration, &result)
        {
            efo::deregister(&shared, arn).await;
        }
        result
    }
}
