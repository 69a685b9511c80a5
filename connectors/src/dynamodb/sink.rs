//! The `dynamodb` sink: records → items, written with BatchWriteItem (or conditional PutItem /
//! DeleteItem when `only_newer_by` guards against replays), acknowledged once written.
//!
//! A flush sends its buffer in *rounds*: round `k` holds the `k`-th write of each table key, so
//! two writes of one key are never in the same request or in flight together, and the later one
//! always lands last. Within a round, requests of `batch_size` items go out `max_in_flight` at a
//! time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, PutRequest, WriteRequest};
use futures::{StreamExt, TryStreamExt};

use super::config::{DynamoSinkConfig, ItemFormat, SinkMode};
use super::item::{self, Json, PlainRules};
use crate::ack::Ack;
use crate::api::{Sink, SinkRecord};

use crate::error::{Classify, ConnectorError, Failure, retriable};
use crate::record::Record;

/// DynamoDB's item size limit.
const MAX_ITEM_BYTES: usize = 400 * 1024;

type Item = HashMap<String, AttributeValue>;

#[derive(Debug, Clone)]
enum Op {
    Put(Item),
    Delete(Item),
}

/// One write waiting to be sent, with the records it stands for (itself and any it superseded).
struct Pending {
    op: Op,
    /// The table key as text, to keep two writes of one key apart.
    key: String,
    /// The guard value (`only_newer_by`), when configured and present.
    guard: Option<Guard>,
    records: Vec<(Record, Ack)>,
}

impl Pending {
    fn ack(self) {
        for (_, a) in self.records {
            a.ack();
        }
    }

    fn reject(self, reason: &str) {
        for (r, a) in self.records {
            a.reject(r, reason.to_string());
        }
    }
}

/// A record's `only_newer_by` position: the guard value and, for a user record of a KPL
/// aggregate, its sub-sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Guard {
    value: String,
    sub: Option<String>,
}

/// Metadata that orders the user records of one KPL aggregate (which share a sequence number).
const SUB_SEQUENCE: &str = "sub-sequence-number";

/// The condition of a guarded write. A stored item with a lower guard value (or none) is
/// replaced. An equal value is the same source record again (an idempotent replay) or another
/// user record of the same KPL aggregate; with the sub-sequence number stored (`#s`) the lower
/// or equal one is replaced, else the later write wins (records arrive in order).
fn guard_condition(with_sub: bool) -> &'static str {
    // Decimal text compares as a number when lengths are compared first ("9" < "10").
    if with_sub {
        "attribute_not_exists(#g) OR size(#g) < :len OR (size(#g) = :len AND #g < :g) \
         OR (#g = :g AND (attribute_not_exists(#s) OR size(#s) < :slen \
         OR (size(#s) = :slen AND #s <= :s)))"
    } else {
        "attribute_not_exists(#g) OR size(#g) < :len OR (size(#g) = :len AND #g <= :g)"
    }
}

/// What every request needs, shared by the concurrent sends of a flush.
struct Shared {
    client: Client,
    cfg: DynamoSinkConfig,
    key_attrs: Vec<String>,
    guard_attr: Option<String>,
    /// Where the sub-sequence number is stored, when the guard is `sequence-number` and
    /// `include_metadata` stores it: then user records of one aggregate are ordered by it.
    sub_attr: Option<String>,
}

/// Writes records to a DynamoDB table.
pub struct DynamoSink {
    shared: Arc<Shared>,
    rules: PlainRules,
    buf: Vec<Pending>,
    oldest: Option<Instant>,
}

impl DynamoSink {
    /// Connects and reads the table's key schema.
    pub async fn new(cfg: DynamoSinkConfig) -> Result<Self, ConnectorError> {
        let sdk = cfg.aws.sdk_config_without_sdk_retries().await?;
        let client = Client::new(&sdk);
        let key_attrs = super::key_schema(&client, &cfg.table, &cfg.retry).await?;
        for k in &cfg.overwrite_by_keys {
            if k.is_empty() {
                return Err(ConnectorError::fatal(format!(
                    "dynamodb sink {}: overwrite_by_keys holds an empty name",
                    cfg.table
                )));
            }
        }
        // Deduplication replaces a buffered write in place, so it must pick out exactly one
        // item: a part of the table key would merge writes of different items (losing all but
        // one), extra attributes would let a later put overtake a delete of the same item.
        if !cfg.overwrite_by_keys.is_empty() {
            let mut want: Vec<&String> = key_attrs.iter().collect();
            let mut got: Vec<&String> = cfg.overwrite_by_keys.iter().collect();
            want.sort();
            got.sort();
            got.dedup();
            if want != got {
                return Err(ConnectorError::fatal(format!(
                    "dynamodb sink {}: overwrite_by_keys must name the table's key attributes, {:?}, found {:?}",
                    cfg.table, key_attrs, cfg.overwrite_by_keys
                )));
            }
        }
        let guard_attr = cfg
            .only_newer_by
            .as_ref()
            .and_then(|g| cfg.include_metadata.get(g).cloned());
        let sub_attr = (cfg.only_newer_by.as_deref() == Some("sequence-number"))
            .then(|| cfg.include_metadata.get(SUB_SEQUENCE).cloned())
            .flatten();
        Ok(Self {
            rules: PlainRules {
                binary_fields: cfg.binary_fields.clone(),
                sets: cfg.sets.clone(),
            },
            shared: Arc::new(Shared {
                client,
                cfg,
                key_attrs,
                guard_attr,
                sub_attr,
            }),
            buf: Vec::new(),
            oldest: None,
        })
    }

    fn cfg(&self) -> &DynamoSinkConfig {
        &self.shared.cfg
    }

    /// Turns one record into a write, or says why it cannot be written.
    fn to_op(&self, r: &Record) -> Result<(Op, Option<Guard>), String> {
        let cfg = self.cfg();
        let json = item::parse(&r.value)?;
        let items = |v: Json| match cfg.item_format() {
            ItemFormat::Json => item::plain_item(v, &self.rules),
            ItemFormat::DynamodbJson => item::ddb_item(v),
        };
        let mut op = match cfg.mode {
            SinkMode::Put => Op::Put(items(json)?),
            SinkMode::Mirror => {
                if let (Some(Json::Str(event)), Some(keys)) = (json.get("event"), json.get("keys"))
                {
                    if event == "REMOVE" {
                        Op::Delete(items(keys.clone())?)
                    } else {
                        let new = json
                            .get("new")
                            .filter(|v| !matches!(v, Json::Null))
                            .ok_or_else(|| format!("a {event} stream record without a `new` image (the stream must carry new images)"))?;
                        Op::Put(items(new.clone())?)
                    }
                } else {
                    let delete = json.get(&cfg.op_field).and_then(Json::as_str) == Some("delete");
                    let mut it = items(json)?;
                    it.remove(&cfg.op_field);
                    if delete { Op::Delete(it) } else { Op::Put(it) }
                }
            }
        };
        let guard = cfg.only_newer_by.as_ref().and_then(|g| {
            meta_value(r, g).map(|v| Guard {
                value: v.to_string(),
                sub: r.meta(SUB_SEQUENCE).map(str::to_string),
            })
        });
        match &mut op {
            Op::Put(it) => {
                for (name, attr) in &cfg.include_metadata {
                    if let Some(v) = meta_value(r, name) {
                        it.insert(attr.clone(), AttributeValue::S(v.to_string()));
                    }
                }
                for k in &self.shared.key_attrs {
                    if !it.contains_key(k) {
                        return Err(format!("the item has no key attribute `{k}`"));
                    }
                }
                let size = item::item_size(it);
                if size > MAX_ITEM_BYTES {
                    return Err(format!(
                        "the item is {size} bytes; DynamoDB takes at most 400 KB"
                    ));
                }
            }
            Op::Delete(it) => {
                let mut key = Item::new();
                for k in &self.shared.key_attrs {
                    let v = it
                        .remove(k)
                        .ok_or_else(|| format!("a delete without the key attribute `{k}`"))?;
                    key.insert(k.clone(), v);
                }
                *it = key;
            }
        }
        Ok((op, guard))
    }

    /// Takes the buffer and writes all of it; returns when every write is done.
    async fn send_all(&mut self) -> Result<(), ConnectorError> {
        let buf = std::mem::take(&mut self.buf);
        self.oldest = None;
        if buf.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let n = buf.len();
        for round in rounds(buf) {
            let shared = self.shared.clone();
            let max = shared.cfg.max_in_flight.max(1);
            // Guarded writes go one at a time (conditional PutItem/DeleteItem), others in
            // BatchWriteItem chunks; at most `max` in flight, each made only when it starts; the
            // first error ends the flush.
            let guarded = shared.guard_attr.is_some();
            let size = match guarded {
                true => 1,
                false => shared.cfg.batch_size.clamp(1, 25),
            };
            let mut it = round.into_iter().peekable();
            let chunks = std::iter::from_fn(move || {
                it.peek()?;
                Some(it.by_ref().take(size).collect::<Vec<_>>())
            });
            futures::stream::iter(chunks)
                .map(|chunk| {
                    let shared = shared.clone();
                    async move {
                        if !guarded {
                            return shared.write_batch(chunk).await;
                        }
                        for p in chunk {
                            shared.clone().write_one_guarded(p).await?;
                        }
                        Ok(())
                    }
                })
                .buffer_unordered(max)
                .try_for_each(|()| std::future::ready(Ok(())))
                .await?;
        }
        tracing::debug!(table = %self.cfg().table, writes = n, elapsed = ?started.elapsed(), "dynamodb sink flushed");
        Ok(())
    }
}

/// A metadata value of a record; `partition` and `offset` name its source position.
fn meta_value<'a>(r: &'a Record, name: &str) -> Option<&'a str> {
    r.meta(name).or(match name {
        "partition" => Some(&*r.partition),
        "offset" => Some(r.offset.as_str()),
        _ => None,
    })
}

/// The table key of an item as text (type-tagged, so `1` and `"1"` differ).
fn key_text(item: &Item, key_attrs: &[String]) -> String {
    let mut out = Vec::new();
    for k in key_attrs {
        if let Some(v) = item.get(k) {
            item::write_ddb(v, &mut out);
        }
        out.push(0);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits writes into rounds: the `k`-th write of each key goes to round `k`, order kept.
fn rounds(buf: Vec<Pending>) -> Vec<Vec<Pending>> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut rounds: Vec<Vec<Pending>> = Vec::new();
    for p in buf {
        let n = seen.entry(p.key.clone()).or_insert(0);
        if rounds.len() <= *n {
            rounds.push(Vec::new());
        }
        rounds[*n].push(p);
        *n += 1;
    }
    rounds
}

impl Shared {
    fn table(&self) -> &str {
        &self.cfg.table
    }

    /// Where this sink's calls happen, for [`ConnectorError::call`].
    fn at(&self) -> String {
        format!("dynamodb sink {}", self.table())
    }

    fn request(op: &Op) -> Result<WriteRequest, String> {
        macro_rules! request {
            ($kind:ident, $builder:ident, $set:ident, $what:expr) => {
                WriteRequest::builder()
                    .$kind(
                        $builder::builder()
                            .$set(Some($what.clone()))
                            .build()
                            .map_err(|e| e.to_string())?,
                    )
                    .build()
            };
        }
        Ok(match op {
            Op::Put(item) => request!(put_request, PutRequest, set_item, item),
            Op::Delete(key) => request!(delete_request, DeleteRequest, set_key, key),
        })
    }

    /// Writes one batch (distinct keys): retries unprocessed items with backoff until written,
    /// retries throttling and transient failures per `retry`, and on a validation error finds
    /// the bad items by writing them one by one.
    async fn write_batch(self: Arc<Self>, batch: Vec<Pending>) -> Result<(), ConnectorError> {
        let mut waiting: HashMap<String, Pending> = HashMap::with_capacity(batch.len());
        let mut requests = Vec::with_capacity(batch.len());
        for p in batch {
            match Self::request(&p.op) {
                Ok(r) => {
                    requests.push(r);
                    waiting.insert(p.key.clone(), p);
                }
                Err(e) => p.reject(&format!("dynamodb sink {}: {e}", self.table())),
            }
        }
        let mut delays = self.cfg.retry.backoff.delays();
        let mut failures = 0u32;
        while !requests.is_empty() {
            let res = self
                .client
                .batch_write_item()
                .request_items(self.table(), requests.clone())
                .send()
                .await;
            match res {
                Ok(out) => {
                    failures = 0;
                    let unprocessed: Vec<WriteRequest> = out
                        .unprocessed_items
                        .and_then(|mut m| m.remove(self.table()))
                        .unwrap_or_default();
                    let (written, left) = split_unprocessed(waiting, &unprocessed, &self.key_attrs);
                    for p in written {
                        p.ack();
                    }
                    waiting = left;
                    if waiting.is_empty() {
                        return Ok(());
                    }
                    let delay = delays.next().unwrap_or(Duration::from_secs(1));
                    tracing::debug!(table = %self.table(), unprocessed = waiting.len(), retry_in = ?delay, "BatchWriteItem left items unprocessed; retrying");
                    requests = unprocessed;
                    if requests.len() != waiting.len() {
                        requests = waiting
                            .values()
                            .filter_map(|p| Self::request(&p.op).ok())
                            .collect();
                    }
                    tokio::time::sleep(delay).await;
                }
                Err(e) if retriable(&e) => {
                    // Throttling means "slower", not "broken": it backs off without a limit
                    // (unless fail_on_error); other transient failures count against `retry`.
                    if e.failure() != Failure::Throttled {
                        failures += 1;
                    }
                    if self.cfg.fail_on_error || failures > self.cfg.retry.max_retries {
                        return Err(ConnectorError::call(self.at(), "BatchWriteItem", &e));
                    }
                    let delay = delays.next().unwrap_or(Duration::from_secs(1));
                    tracing::warn!(table = %self.table(), error = %e.describe(), retry_in = ?delay, "BatchWriteItem failed; backing off");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    let code = e.code().unwrap_or_default().to_string();
                    let message = e.describe();
                    if code != "ValidationException" || self.cfg.fail_on_error {
                        return Err(ConnectorError::call(self.at(), "BatchWriteItem", &e));
                    }
                    if waiting.len() == 1 {
                        for (_, p) in waiting.drain() {
                            tracing::debug!(table = %self.table(), error = %message, "item rejected");
                            p.reject(&format!(
                                "dynamodb sink {}: BatchWriteItem: {message}",
                                self.table()
                            ));
                        }
                        return Ok(());
                    }
                    // One bad item fails the whole request: find it by writing them one by one.
                    for (_, p) in waiting.drain() {
                        Box::pin(self.clone().write_batch(vec![p])).await?;
                    }
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Writes one item with the `only_newer_by` condition; an item older than the stored one is
    /// skipped (and acknowledged: a newer write is already durable).
    async fn write_one_guarded(self: Arc<Self>, p: Pending) -> Result<(), ConnectorError> {
        let (Some(attr), Some(guard)) = (self.guard_attr.clone(), p.guard.clone()) else {
            return self.write_batch(vec![p]).await;
        };
        let value = guard.value.clone();
        // With the sub-sequence number stored and known, user records of one aggregate are
        // ordered by it too.
        let sub = match (&self.sub_attr, &guard.sub) {
            (Some(a), Some(s)) => Some((a.clone(), s.clone())),
            _ => None,
        };
        let cond = guard_condition(sub.is_some());
        let len = AttributeValue::N(value.len().to_string());
        let mut names = HashMap::from([("#g".to_string(), attr.clone())]);
        let mut values = HashMap::from([
            (":g".to_string(), AttributeValue::S(value.clone())),
            (":len".to_string(), len),
        ]);
        if let Some((a, s)) = &sub {
            names.insert("#s".into(), a.clone());
            values.insert(":s".into(), AttributeValue::S(s.clone()));
            values.insert(":slen".into(), AttributeValue::N(s.len().to_string()));
        }
        let policy = self.cfg.retry;
        let at = self.at();
        let what = format!("{at}: conditional write");
        // PutItem and DeleteItem take the same condition, through builders of different types.
        macro_rules! conditional {
            ($call:ident, $set:ident, $what:expr) => {
                policy
                    .run(
                        &what,
                        |e| retriable(e) && !self.cfg.fail_on_error,
                        || {
                            self.client
                                .$call()
                                .table_name(self.table())
                                .$set(Some($what.clone()))
                                .condition_expression(cond)
                                .set_expression_attribute_names(Some(names.clone()))
                                .set_expression_attribute_values(Some(values.clone()))
                                .send()
                        },
                    )
                    .await
                    .map(|_| ())
                    .map_err(|e| failure(&at, &e))
            };
        }
        let res = match &p.op {
            Op::Put(item) => conditional!(put_item, set_item, item),
            Op::Delete(key) => conditional!(delete_item, set_key, key),
        };
        match res {
            Ok(()) => {
                p.ack();
                Ok(())
            }
            Err((code, _)) if code == "ConditionalCheckFailedException" => {
                tracing::debug!(table = %self.table(), guard = %value, "stored item is newer; write skipped");
                p.ack();
                Ok(())
            }
            Err((code, e)) if code == "ValidationException" && !self.cfg.fail_on_error => {
                p.reject(&e.to_string());
                Ok(())
            }
            Err((_, e)) => Err(e),
        }
    }
}

/// Splits a batch's writes after a BatchWriteItem response into those DynamoDB wrote and those it
/// handed back as unprocessed (by table key). Should a handed-back item match none of ours, every
/// write is kept for another attempt rather than acknowledging one that may not be written.
fn split_unprocessed(
    mut waiting: HashMap<String, Pending>,
    unprocessed: &[WriteRequest],
    key_attrs: &[String],
) -> (Vec<Pending>, HashMap<String, Pending>) {
    let mut left = HashMap::with_capacity(unprocessed.len());
    for w in unprocessed {
        let item = w
            .put_request()
            .map(|p| p.item())
            .or_else(|| w.delete_request().map(|d| d.key()));
        let k = item.map(|i| key_text(i, key_attrs));
        match k.and_then(|k| waiting.remove(&k).map(|p| (k, p))) {
            Some((k, p)) => {
                left.insert(k, p);
            }
            None => {
                left.extend(waiting.drain());
                return (Vec::new(), left);
            }
        }
    }
    (waiting.into_values().collect(), left)
}

/// A failed conditional write as (the service's error code, the connector error).
fn failure(at: &str, e: &(impl Classify + ProvideErrorMetadata)) -> (String, ConnectorError) {
    let code = e.code().unwrap_or_default().to_string();
    (code, ConnectorError::call(at, "conditional write", e))
}

#[async_trait]
impl Sink for DynamoSink {
    async fn write(&mut self, batch: Vec<SinkRecord>) -> Result<(), ConnectorError> {
        let dedup = !self.cfg().overwrite_by_keys.is_empty();
        // Latest write per `overwrite_by_keys` value within the buffer.
        let mut latest: HashMap<String, usize> = HashMap::new();
        if dedup {
            for (i, p) in self.buf.iter().enumerate() {
                if let Some(k) = dedup_key(&p.op, &self.cfg().overwrite_by_keys) {
                    latest.insert(k, i);
                }
            }
        }
        for SinkRecord { record, ack, .. } in batch {
            let (op, guard) = match self.to_op(&record) {
                Ok(x) => x,
                Err(e) => {
                    let reason = format!("dynamodb sink {}: {e}", self.cfg().table);
                    if self.cfg().fail_on_error {
                        return Err(ConnectorError::fatal(reason));
                    }
                    ack.reject(record, reason);
                    continue;
                }
            };
            let item = match &op {
                Op::Put(i) | Op::Delete(i) => i,
            };
            let key = key_text(item, &self.shared.key_attrs);
            if dedup && let Some(dk) = dedup_key(&op, &self.cfg().overwrite_by_keys) {
                if let Some(&i) = latest.get(&dk) {
                    // The newer record replaces the older one; the older is acked with it.
                    let old = &mut self.buf[i];
                    old.op = op;
                    old.key = key;
                    old.guard = guard;
                    old.records.push((record, ack));
                    continue;
                }
                latest.insert(dk, self.buf.len());
            }
            self.buf.push(Pending {
                op,
                key,
                guard,
                records: vec![(record, ack)],
            });
        }
        if self.oldest.is_none() && !self.buf.is_empty() {
            self.oldest = Some(Instant::now());
        }
        let due = self
            .oldest
            .is_some_and(|t| t.elapsed() >= self.cfg().flush_interval.0);
        if self.buf.len() >= self.cfg().max_buffered || due {
            self.send_all().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ConnectorError> {
        self.send_all().await
    }
}

/// The `overwrite_by_keys` value of a write, if it has all of them.
fn dedup_key(op: &Op, keys: &[String]) -> Option<String> {
    let item = match op {
        Op::Put(i) | Op::Delete(i) => i,
    };
    keys.iter()
        .all(|k| item.contains_key(k))
        .then(|| key_text(item, keys))
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;
    use crate::ack::{Completion, Ticket};
    use crate::record::Offset;

    fn pending(id: &str, ticket: &Ticket) -> (String, Pending) {
        let item = Item::from([("id".to_string(), AttributeValue::S(id.into()))]);
        let key = key_text(&item, &["id".to_string()]);
        let p = Pending {
            op: Op::Put(item),
            key: key.clone(),
            guard: None,
            records: vec![(
                Record::new("p".into(), Offset::from(0), &b"{}"[..]),
                ticket.ack(),
            )],
        };
        (key, p)
    }

    fn ticket() -> (Ticket, mpsc::UnboundedReceiver<Completion>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let c = Completion {
            partition: "p".into(),
            seq: 0,
            last_offset: Offset::from(0),
            records: 1,
            end_of_partition: false,
            ok: true,
        };
        (Ticket::new(c, tx), rx)
    }

    fn put(id: &str) -> WriteRequest {
        WriteRequest::builder()
            .put_request(
                PutRequest::builder()
                    .item("id", AttributeValue::S(id.into()))
                    .build()
                    .expect("put"),
            )
            .build()
    }

    #[test]
    fn unprocessed_items_are_kept_and_only_the_rest_is_acknowledged() {
        let keys = ["id".to_string()];
        let (t_a, mut done_a) = ticket();
        let (t_b, mut done_b) = ticket();
        let waiting: HashMap<String, Pending> = [pending("a", &t_a), pending("b", &t_b)].into();
        t_a.close();
        t_b.close();
        let (written, left) = split_unprocessed(waiting, &[put("b")], &keys);
        assert_eq!(written.len(), 1);
        assert_eq!(left.len(), 1);
        for p in written {
            p.ack();
        }
        assert!(
            done_a.try_recv().expect("a completed").ok,
            "a was written and acknowledged"
        );
        assert!(done_b.try_recv().is_err(), "b waits for its retry");
        // An item handed back that matches none of ours: nothing is acknowledged.
        let (written, left) = split_unprocessed(left, &[put("zzz")], &keys);
        assert!(written.is_empty());
        assert_eq!(left.len(), 1);
        // Nothing handed back: everything was written.
        let (written, left) = split_unprocessed(left, &[], &keys);
        assert_eq!((written.len(), left.len()), (1, 0));
        for p in written {
            p.ack();
        }
        assert!(done_b.try_recv().expect("b completed").ok);
    }
}
