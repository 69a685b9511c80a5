//! The `dynamodb` source: a parallel Scan (one partition per segment, the last delivered item's
//! key as the offset), the table's stream ([`super::stream`]), or a snapshot then the stream.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
use bytes::Bytes;

use super::config::{DynamoSourceConfig, ItemFormat, SourceMode};
use super::item;
use super::stream::StreamReader;
use crate::api::{Source, SourceBatch, SourceContext};

use crate::error::{ConnectorError, retriable};
use crate::record::{Offset, PartitionId, Record};

/// The partition that records when a `snapshot_then_cdc` snapshot started (ms since the epoch).
pub(crate) const SNAPSHOT_START: &str = "snapshot-start";
/// Stream records this much older than the snapshot's start are read again, for clock skew.
const SNAPSHOT_OVERLAP_MS: i64 = 60_000;
/// The offset of a segment that was empty.
const EMPTY_SEGMENT: &str = "empty";

type Item = HashMap<String, AttributeValue>;

/// Reads a DynamoDB table; see the module docs.
pub struct DynamoSource {
    cfg: Arc<DynamoSourceConfig>,
    client: Client,
    streams: aws_sdk_dynamodbstreams::Client,
    key_attrs: Vec<String>,
}

impl DynamoSource {
    pub async fn new(cfg: DynamoSourceConfig) -> Result<Self, ConnectorError> {
        let sdk = cfg.aws.sdk_config_without_sdk_retries().await?;
        let client = Client::new(&sdk);
        let streams = aws_sdk_dynamodbstreams::Client::new(&sdk);
        let key_attrs = super::key_schema(&client, &cfg.table, &cfg.retry).await?;
        Ok(Self {
            cfg: Arc::new(cfg),
            client,
            streams,
            key_attrs,
        })
    }

    fn stream_reader(&self) -> StreamReader {
        StreamReader {
            cfg: self.cfg.clone(),
            client: self.client.clone(),
            streams: self.streams.clone(),
        }
    }

    /// Scans every segment not finished yet; returns false when stopped early.
    async fn snapshot(&self, ctx: &SourceContext) -> Result<bool, ConnectorError> {
        let n = self.cfg.segments.max(1);
        let limiter = self.cfg.rate_limit.map(|r| Arc::new(RateLimiter::new(r)));
        let scans = (0..n).map(|i| {
            let limiter = limiter.clone();
            async move { self.scan_segment(ctx, i, n, limiter.as_deref()).await }
        });
        let results = futures::future::join_all(scans).await;
        let mut complete = true;
        for r in results {
            complete &= r?;
        }
        Ok(complete)
    }

    /// Scans one segment from its committed key; returns false when stopped early.
    async fn scan_segment(
        &self,
        ctx: &SourceContext,
        segment: u32,
        total: u32,
        limiter: Option<&RateLimiter>,
    ) -> Result<bool, ConnectorError> {
        let table = &self.cfg.table;
        let part: PartitionId = Arc::from(format!("scan-{segment}-of-{total}"));
        let mut start: Option<Item> = None;
        if let Some(c) = ctx.start.get(&part) {
            if c.finished {
                return Ok(true);
            }
            let key = item::parse(c.offset.as_str().as_bytes())
                .and_then(item::ddb_item)
                .map_err(|e| {
                    ConnectorError::fatal(format!(
                        "dynamodb source {table}: committed offset {:?} of {part} is not a DynamoDB-JSON key: {e}",
                        c.offset
                    ))
                })?;
            start = Some(key);
        }
        tracing::debug!(table = %table, partition = %part, resume = start.is_some(), "scanning segment");
        let at = format!("dynamodb source {table}");
        let what = format!("Scan segment {segment} of {total}");
        let mut last: Option<Offset> = None;
        loop {
            if ctx.shutdown.is_cancelled() {
                return Ok(false);
            }
            let out = self
                .cfg
                .retry
                .run(&format!("{at}: {what}"), retriable, || {
                    self.client
                        .scan()
                        .table_name(table)
                        .segment(segment as i32)
                        .total_segments(total as i32)
                        .limit(self.cfg.page_size as i32)
                        .consistent_read(self.cfg.consistent_read)
                        .return_consumed_capacity(ReturnConsumedCapacity::Total)
                        .set_exclusive_start_key(start.clone())
                        .send()
                })
                .await
                .map_err(|e| ConnectorError::call(&at, &what, &e))?;
            let next = out.last_evaluated_key.clone().filter(|k| !k.is_empty());
            let items = out.items.unwrap_or_default();
            if let Some(l) = limiter {
                let units = out
                    .consumed_capacity
                    .and_then(|c| c.capacity_units)
                    .unwrap_or_else(|| estimate_units(&items, self.cfg.consistent_read));
                l.take(units, &ctx.shutdown).await;
            }
            let mut records = Vec::with_capacity(items.len());
            for it in &items {
                let mut key = Item::new();
                for k in &self.key_attrs {
                    if let Some(v) = it.get(k) {
                        key.insert(k.clone(), v.clone());
                    }
                }
                let mut off = Vec::with_capacity(64);
                item::write_ddb_map(&key, &mut off);
                let offset = Offset(String::from_utf8_lossy(&off).into_owned());
                let mut value = Vec::with_capacity(256);
                let mut key_json = Vec::with_capacity(64);
                match self.cfg.item_format() {
                    ItemFormat::Json => {
                        item::write_plain_map(it, &mut value);
                        item::write_plain_map(&key, &mut key_json);
                    }
                    ItemFormat::DynamodbJson => {
                        item::write_ddb_map(it, &mut value);
                        key_json = off;
                    }
                }
                let mut r = Record::new(part.clone(), offset, value);
                r.key = Some(Bytes::from(key_json));
                r.meta = vec![
                    ("table".into(), table.clone()),
                    ("event-name".into(), "SNAPSHOT".into()),
                ];
                records.push(r);
            }
            if let Some(r) = records.last() {
                last = Some(r.offset.clone());
            }
            let end = next.is_none();
            if !records.is_empty() || end {
                let batch = SourceBatch {
                    partition: part.clone(),
                    end_of_partition: end,
                    end_offset: if records.is_empty() {
                        Some(last.clone().unwrap_or_else(|| {
                            ctx.start
                                .get(&part)
                                .map(|c| c.offset.clone())
                                .unwrap_or_else(|| Offset::from(EMPTY_SEGMENT))
                        }))
                    } else {
                        None
                    },
                    records,
                };
                if !ctx.send(batch).await {
                    return Ok(false);
                }
            }
            if end {
                tracing::debug!(table = %table, partition = %part, "segment scanned");
                return Ok(true);
            }
            start = next;
        }
    }
}

/// Read capacity of a page when the service does not report it: 4 KB units, halved for
/// eventually consistent reads.
fn estimate_units(items: &[Item], consistent: bool) -> f64 {
    let bytes: usize = items.iter().map(item::item_size).sum();
    let units = (bytes as f64 / 4096.0).ceil().max(1.0);
    if consistent { units } else { units / 2.0 }
}

/// A shared budget of read capacity units per second.
struct RateLimiter {
    per_sec: f64,
    state: tokio::sync::Mutex<(Instant, f64)>,
}

impl RateLimiter {
    fn new(per_sec: f64) -> Self {
        Self {
            per_sec: per_sec.max(0.001),
            state: tokio::sync::Mutex::new((Instant::now(), 0.0)),
        }
    }

    /// Records `units` spent and waits until the budget allows more.
    async fn take(&self, units: f64, stop: &tokio_util::sync::CancellationToken) {
        let wait = {
            let mut s = self.state.lock().await;
            let now = Instant::now();
            // Debt left after refilling since the last call.
            let refilled = now.duration_since(s.0).as_secs_f64() * self.per_sec;
            s.1 = (s.1 - refilled).max(0.0) + units;
            s.0 = now;
            Duration::from_secs_f64(s.1 / self.per_sec)
        };
        if wait > Duration::from_millis(1) {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[async_trait]
impl Source for DynamoSource {
    async fn run(&mut self, ctx: SourceContext) -> Result<(), ConnectorError> {
        match self.cfg.mode {
            SourceMode::Snapshot => {
                self.snapshot(&ctx).await?;
                Ok(())
            }
            SourceMode::Cdc => self.stream_reader().run(&ctx, None).await,
            SourceMode::SnapshotThenCdc => {
                let reader = self.stream_reader();
                // Fail before scanning if the table has no stream.
                let arn = reader.stream_arn().await?;
                let since = match ctx.start.get(SNAPSHOT_START) {
                    Some(c) => c.offset.as_str().parse::<i64>().map_err(|_| {
                        ConnectorError::fatal(format!(
                            "dynamodb source {}: committed {SNAPSHOT_START} offset {:?} is not a time in ms",
                            self.cfg.table, c.offset
                        ))
                    })?,
                    // Segments were committed but not the start time (a crash between the two
                    // commits): read the whole stream rather than risk a gap.
                    None if ctx.start.keys().any(|p| p.starts_with("scan-")) => 0,
                    None => {
                        let now = chrono::Utc::now().timestamp_millis();
                        let batch = SourceBatch {
                            partition: Arc::from(SNAPSHOT_START),
                            records: Vec::new(),
                            end_of_partition: true,
                            end_offset: Some(Offset::new(now.to_string())),
                        };
                        if !ctx.send(batch).await {
                            return Ok(());
                        }
                        now
                    }
                };
                tracing::info!(table = %self.cfg.table, stream = %arn, since_ms = since, "snapshot, then the stream from the snapshot's start");
                if !self.snapshot(&ctx).await? {
                    return Ok(());
                }
                reader.run(&ctx, Some(since - SNAPSHOT_OVERLAP_MS)).await
            }
        }
    }
}
