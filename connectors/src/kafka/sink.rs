use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig, ThreadedProducer,
};
use tokio::sync::Notify;

use super::client::{LogContext, TopicState, config_error, create_topic, is_purged, topic_state};
use super::config::{FieldRef, KafkaSinkConfig, KeyFrom, PartitionBy};
use super::txn::KafkaTransaction;
use crate::ack::Ack;
use crate::api::{Sink, SinkRecord, Transactional};
use crate::error::ConnectorError;
use crate::record::Record;

/// What the delivery callbacks (on librdkafka's polling thread) share with the sink.
#[derive(Default)]
pub(super) struct Deliveries {
    pub(super) in_flight: AtomicU64,
    idle: Notify,
    /// The first delivery failure since the last flush.
    failure: Mutex<Option<ConnectorError>>,
    /// Exactly-once: records Kafka refused inside the transaction (identity, size). Kafka
    /// refuses a whole batch for one bad record, so they are suspects, not culprits.
    suspects: Mutex<Vec<(u64, usize)>>,
}

impl Deliveries {
    pub(super) fn done(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    fn fail(&self, e: ConnectorError) {
        if let Ok(mut f) = self.failure.lock()
            && f.is_none()
        {
            *f = Some(e);
        }
        // An exactly-once flush stops waiting at the first failure (below).
        self.idle.notify_waiters();
    }

    fn failed(&self) -> bool {
        self.failure.lock().map(|f| f.is_some()).unwrap_or(true)
    }
}

/// The producer's context: delivery reports acknowledge records.
pub(super) struct SinkContext {
    log: LogContext,
    deliveries: Arc<Deliveries>,
    /// With `exactly_once`: the `transactional.id`.
    transactional_id: Option<String>,
}

super::client::logs_through_log_context!(SinkContext);

/// A record librdkafka holds until its delivery report: its ack, and the record without its
/// value (librdkafka has a copy, handed back in the report), for the error policy.
pub(super) struct InFlight {
    /// `None` for the offset records an exactly-once commit adds to the transaction.
    pub(super) ack: Option<Ack>,
    pub(super) record: Record,
    /// The topic came from `topic_from`, not the configured `topic`.
    pub(super) routed: bool,
}

/// True for a delivery error that concerns this one record, not the sink: Kafka refused the
/// record itself (too large, invalid), or a topic that `topic_from` picked does not exist or
/// may not be written. Such a record goes to the error policy; anything else stops the sink.
fn is_record_error(e: &KafkaError, routed: bool) -> bool {
    use RDKafkaErrorCode::*;
    let Some(code) = e.rdkafka_error_code() else {
        return false;
    };
    match code {
        MessageSizeTooLarge
        | InvalidMessageSize
        | InvalidMessage
        | InvalidRecord
        | MessageBatchTooLarge
        | TopicAuthorizationFailed
        | InvalidTopic
        | PolicyViolation => true,
        UnknownTopicOrPartition | UnknownTopic | UnknownPartition => routed,
        _ => false,
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Box<InFlight>;

    fn delivery(&self, result: &DeliveryResult<'_>, pending: Box<InFlight>) {
        let InFlight {
            ack,
            mut record,
            routed,
        } = *pending;
        let Some(ack) = ack else {
            // An offset record of an exactly-once commit: `commit_transaction` reports its
            // failure.
            if let Err((e, msg)) = result {
                tracing::warn!(topic = msg.topic(), brokers = %self.log.brokers, error = %e, "kafka sink: offset record not delivered; the transaction will abort");
            }
            self.deliveries.done();
            return;
        };
        match result {
            Ok(_) => ack.ack(),
            Err((e, msg)) if is_record_error(e, routed) && self.transactional_id.is_some() => {
                // Inside a transaction a refused record makes the transaction abort-required:
                // nothing of it may be committed. The pipeline rewinds to its last commit, and
                // then the sink hands this record to the error policy instead of producing it.
                let id = self.transactional_id.as_deref().unwrap_or_default();
                let value = msg.payload().unwrap_or_default();
                let size = value.len() + msg.key().map_or(0, <[u8]>::len);
                if let Ok(mut s) = self.deliveries.suspects.lock() {
                    s.push((super::txn::identity(&record, value), size));
                }
                drop(ack);
                tracing::warn!(
                    topic = msg.topic(),
                    brokers = %self.log.brokers,
                    error = %e,
                    source_partition = %record.partition,
                    source_offset = %record.offset,
                    "kafka sink: Kafka refused a record inside a transaction; aborting it and resuming from the last commit, where the record goes to the error policy"
                );
                self.deliveries.fail(ConnectorError::retriable(format!(
                    "kafka sink: Kafka refused a record for topic `{}` on {} inside transaction `{id}` ({e}); the transaction is aborted and the pipeline resumes from its last committed offsets, handing that record to the error policy",
                    msg.topic(),
                    self.log.brokers
                )));
            }
            Err((e, msg)) if is_record_error(e, routed) => {
                let partition = msg.partition();
                tracing::warn!(
                    topic = msg.topic(),
                    partition,
                    brokers = %self.log.brokers,
                    error = %e,
                    "kafka sink: Kafka refused a record; handing it to the error policy"
                );
                record.value = msg
                    .payload()
                    .map(Bytes::copy_from_slice)
                    .unwrap_or_default();
                ack.reject(
                    record,
                    format!(
                        "kafka sink: Kafka refused the record for topic `{}` on {}: {e}",
                        msg.topic(),
                        self.log.brokers
                    ),
                );
            }
            Err((e, msg)) => {
                // Dropping the ack fails its batch: nothing from it on is committed.
                drop(ack);
                if !is_purged(e) {
                    let partition = msg.partition();
                    tracing::error!(
                        topic = msg.topic(),
                        partition,
                        brokers = %self.log.brokers,
                        error = %e,
                        "kafka sink: delivery failed"
                    );
                    let at = format!(
                        "kafka sink: topic `{}` partition {partition} on {}",
                        msg.topic(),
                        self.log.brokers
                    );
                    self.deliveries
                        .fail(ConnectorError::call(at, "delivery", e));
                }
            }
        }
        self.deliveries.done();
    }
}

/// What a metadata lookup says about a topic to write to.
enum Lookup {
    Partitions(u32),
    /// The topic does not exist or may not be used: records for it go to the error policy.
    Refused(String),
}

/// How long a `topic_from` topic found missing is not looked up again.
const MISSING_TOPIC_RECHECK: Duration = Duration::from_secs(10);

/// Writes records to Kafka; see [`KafkaSinkConfig`].
pub struct KafkaSink {
    cfg: KafkaSinkConfig,
    brokers: String,
    producer: ThreadedProducer<SinkContext>,
    deliveries: Arc<Deliveries>,
    /// Partition counts of the topics written to (the configured one and any from `topic_from`).
    partitions: HashMap<String, u32>,
    /// `topic_from` topics found missing or forbidden, when, and why.
    refused: HashMap<String, (Instant, String)>,
    /// With `exactly_once`: the open transaction the records go into.
    txn: Option<Arc<KafkaTransaction>>,
}

impl KafkaSink {
    /// Connects, checks that the topic exists (creating it with `create_topic`), and learns its
    /// partition count. Retries while the brokers do not answer.
    pub async fn connect(cfg: &KafkaSinkConfig) -> Result<Self, ConnectorError> {
        let brokers = cfg.brokers.join(",");
        let deliveries = Arc::new(Deliveries::default());
        let context = SinkContext {
            log: LogContext {
                role: "sink",
                brokers: brokers.clone(),
            },
            deliveries: deliveries.clone(),
            transactional_id: cfg
                .exactly_once
                .then(|| cfg.transactional_id.clone().unwrap_or_default()),
        };
        tracing::debug!(brokers = %brokers, topic = %cfg.topic, properties = ?cfg.properties, "kafka sink: connecting");
        let producer: ThreadedProducer<SinkContext> = cfg
            .client_config()
            .create_with_context(context)
            .map_err(|e| {
                config_error(
                    format!(
                        "kafka sink: bad producer configuration for {brokers} (check `properties`)"
                    ),
                    &e,
                )
            })?;
        let txn = match (cfg.exactly_once, &cfg.transactional_id) {
            (false, _) => None,
            (true, None) => {
                return Err(ConnectorError::fatal(
                    "kafka sink: `exactly_once` needs a transactional id (the runtime derives one from the pipeline name)",
                ));
            }
            (true, Some(id)) => Some(Arc::new(KafkaTransaction::new(
                producer.clone(),
                deliveries.clone(),
                id.clone(),
                brokers.clone(),
            ))),
        };
        let mut sink = Self {
            cfg: cfg.clone(),
            brokers,
            producer,
            deliveries,
            partitions: HashMap::new(),
            refused: HashMap::new(),
            txn,
        };
        if let Some(txn) = &sink.txn {
            let txn = txn.clone();
            cfg.retry
                .run(
                    &format!("kafka sink: init_transactions on {}", sink.brokers),
                    |e: &ConnectorError| e.retriable,
                    || txn.init(),
                )
                .await?;
        }
        let topic = cfg.topic.clone();
        let n = sink
            .ensure_topic(&topic, cfg.create_topic.is_some())
            .await?;
        tracing::info!(topic = %topic, brokers = %sink.brokers, partitions = n, "kafka sink ready");
        Ok(sink)
    }

    /// The partition count of `topic`, looked up (with retries) on first use.
    async fn ensure_topic(&mut self, topic: &str, create: bool) -> Result<u32, ConnectorError> {
        match self.lookup(topic, create, true).await? {
            Lookup::Partitions(n) => Ok(n),
            Lookup::Refused(why) => Err(ConnectorError::fatal(why)),
        }
    }

    /// The partition count of `topic`, looked up on first use. Unreachable brokers are retried
    /// (`retry`); a missing topic too when `wait_missing`, else it is [`Lookup::Refused`], like a
    /// topic Kafka says is invalid or forbidden.
    async fn lookup(
        &mut self,
        topic: &str,
        create: bool,
        wait_missing: bool,
    ) -> Result<Lookup, ConnectorError> {
        if let Some(n) = self.partitions.get(topic) {
            return Ok(Lookup::Partitions(*n));
        }
        let timeout = Duration::from_secs(5);
        let found = self
            .cfg
            .retry
            .run(
                &format!("kafka sink: metadata of topic `{topic}` on {}", self.brokers),
                |e: &ConnectorError| e.retriable,
                || async {
                    let producer = self.producer.clone();
                    let t = topic.to_string();
                    let state = tokio::task::spawn_blocking(move || {
                        topic_state(producer.client(), &t, timeout)
                    })
                    .await
                    .map_err(|e| ConnectorError::fatal(format!("kafka sink: metadata task failed: {e}")))?;
                    let state = match state {
                        Ok(state) => state,
                        Err(e) if !wait_missing && is_record_error(&e, true) => {
                            return Ok(Lookup::Refused(format!(
                                "kafka sink: topic `{topic}` on {} cannot be written: {e}",
                                self.brokers
                            )));
                        }
                        Err(e) => {
                            // Whatever the broker said, the topic may still appear.
                            let at = format!("kafka sink: topic `{topic}` on {}", self.brokers);
                            return Err(ConnectorError {
                                retriable: true,
                                ..ConnectorError::call(at, "reading the metadata", &e)
                            });
                        }
                    };
                    match state {
                        TopicState::Present { partitions } => Ok(Lookup::Partitions(partitions)),
                        TopicState::Missing if create => {
                            let spec = self.cfg.create_topic.clone().unwrap_or(super::config::CreateTopic {
                                partitions: 1,
                                replication: 1,
                            });
                            create_topic(
                                &self.cfg.client_config(),
                                &self.brokers,
                                topic,
                                spec.partitions,
                                spec.replication,
                                &[],
                            )
                            .await?;
                            // Wait (briefly) until the new topic shows in metadata.
                            let deadline = Instant::now() + Duration::from_secs(10);
                            loop {
                                let producer = self.producer.clone();
                                let t = topic.to_string();
                                let state = tokio::task::spawn_blocking(move || {
                                    topic_state(producer.client(), &t, timeout)
                                })
                                .await
                                .map_err(|e| ConnectorError::fatal(format!("kafka sink: metadata task failed: {e}")))?;
                                if let Ok(TopicState::Present { partitions }) = state {
                                    return Ok(Lookup::Partitions(partitions));
                                }
                                if Instant::now() > deadline {
                                    return Err(ConnectorError::retriable(format!(
                                        "kafka sink: topic `{topic}` was created on {} but does not show in metadata",
                                        self.brokers
                                    )));
                                }
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                        TopicState::Missing if !wait_missing => Ok(Lookup::Refused(format!(
                            "kafka sink: topic `{topic}` does not exist on {}",
                            self.brokers
                        ))),
                        TopicState::Missing => Err(ConnectorError::retriable(format!(
                            "kafka sink: topic `{topic}` does not exist on {} (create it, or set `create_topic`)",
                            self.brokers
                        ))),
                    }
                },
            )
            .await?;
        if let Lookup::Partitions(n) = found {
            self.partitions.insert(topic.to_string(), n);
        }
        Ok(found)
    }

    /// The partition count of a topic `topic_from` picked, or why records may not go there.
    async fn routed_topic(&mut self, topic: &str) -> Result<Lookup, ConnectorError> {
        if let Err(why) = self.cfg.check_record_topic(topic) {
            return Ok(Lookup::Refused(format!("kafka sink: {why}")));
        }
        if let Some(n) = self.partitions.get(topic) {
            return Ok(Lookup::Partitions(*n));
        }
        if let Some((at, why)) = self.refused.get(topic)
            && at.elapsed() < MISSING_TOPIC_RECHECK
        {
            return Ok(Lookup::Refused(why.clone()));
        }
        let found = self.lookup(topic, false, false).await?;
        match &found {
            Lookup::Refused(why) => {
                tracing::warn!(topic, brokers = %self.brokers, reason = %why, "kafka sink: records naming this topic go to the error policy");
                self.refused
                    .insert(topic.to_string(), (Instant::now(), why.clone()));
            }
            Lookup::Partitions(_) => {
                self.refused.remove(topic);
            }
        }
        Ok(found)
    }

    fn topic_of<'r>(&'r self, r: &'r Record) -> &'r str {
        let found = match &self.cfg.topic_from {
            None => None,
            Some(FieldRef::Header(h)) => r
                .headers
                .iter()
                .find(|(k, _)| k == h)
                .and_then(|(_, v)| std::str::from_utf8(v).ok()),
            Some(FieldRef::Metadata(m)) => r.meta(m),
        };
        found.filter(|t| !t.is_empty()).unwrap_or(&self.cfg.topic)
    }

    /// Waits until every record handed to librdkafka got its delivery report.
    async fn wait_idle(&self) -> Result<(), ConnectorError> {
        let limit = self.cfg.delivery_timeout.0 + Duration::from_secs(30);
        let wait = async {
            loop {
                let idle = self.deliveries.idle.notified();
                if self.deliveries.in_flight.load(Ordering::Acquire) == 0 {
                    return;
                }
                // Inside a failed transaction librdkafka sends nothing more: what is queued
                // would wait for `delivery_timeout`. The transaction is aborted anyway.
                if self.txn.is_some() && self.deliveries.failed() {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(limit, wait).await.map_err(|_| {
            ConnectorError::retriable(format!(
                "kafka sink: {} records to topic `{}` on {} got no delivery report within {limit:?}",
                self.deliveries.in_flight.load(Ordering::Acquire),
                self.cfg.topic,
                self.brokers
            ))
        })
    }

    fn take_failure(&self) -> Result<(), ConnectorError> {
        if let Some(txn) = &self.txn
            && let Some((code, reason)) = self.producer.client().fatal_error()
        {
            // Fenced by a newer instance, or broken: a restart would only be fenced again (or
            // fence the newer one), so the pipeline stops for good.
            return Err(ConnectorError::fatal(
                txn.fatal_message("producing", &format!("{code}: {reason}")),
            ));
        }
        if let Some((code, reason)) = self.producer.client().fatal_error() {
            // The producer is unusable; a restart replays everything after the last commit.
            return Err(ConnectorError::retriable(format!(
                "kafka sink: the producer for topic `{}` on {} failed for good ({code}: {reason}); stopping so that a restart resends everything after the last commit. A broker that lost its idempotent-producer state (a restart without persistent storage, a deleted topic) causes this",
                self.cfg.topic, self.brokers
            )));
        }
        if let Some(txn) = &self.txn {
            txn.convict(&self.deliveries.suspects);
        }
        match self.deliveries.failure.lock().map(|mut f| f.take()) {
            Ok(Some(e)) => Err(e),
            _ => Ok(()),
        }
    }

    /// Purges what librdkafka still holds, so that every outstanding ack is dropped (and its
    /// batch fails) instead of leaking with the producer.
    fn purge(&self) {
        if self.deliveries.in_flight.load(Ordering::Acquire) == 0 {
            return;
        }
        self.producer
            .purge(PurgeConfig::default().queue().inflight());
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.deliveries.in_flight.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            self.producer.poll(Duration::from_millis(50));
        }
    }
}

#[async_trait]
impl Sink for KafkaSink {
    async fn partition_count(&mut self) -> Result<Option<u32>, ConnectorError> {
        let topic = self.cfg.topic.clone();
        Ok(Some(self.ensure_topic(&topic, false).await?))
    }

    async fn write(&mut self, batch: Vec<SinkRecord>) -> Result<(), ConnectorError> {
        self.take_failure()?;
        for SinkRecord {
            mut record,
            route,
            ack,
        } in batch
        {
            let topic = self.topic_of(&record).to_string();
            let routed = topic != self.cfg.topic;
            let count = if routed {
                match self.routed_topic(&topic).await? {
                    Lookup::Partitions(n) => n,
                    Lookup::Refused(why) => {
                        ack.reject(record, why);
                        continue;
                    }
                }
            } else {
                match self.partitions.get(&topic) {
                    Some(n) => *n,
                    None => self.ensure_topic(&topic, false).await?,
                }
            };
            // librdkafka copies key and value; the record (without its value) waits for the
            // delivery report in case the error policy needs it.
            if let Some(txn) = &self.txn
                && txn.was_refused(&record)
            {
                let reason = format!(
                    "kafka sink: Kafka refused this record for topic `{topic}` on {} in an earlier (aborted) transaction of `{}`",
                    self.brokers, txn.id
                );
                ack.reject(record, reason);
                continue;
            }
            let value = std::mem::take(&mut record.value);
            let record_key = record.key.clone();
            let key: Option<&[u8]> = match self.cfg.key {
                KeyFrom::Record => record_key.as_deref(),
                KeyFrom::PartitionKey => route.key.as_deref().map(str::as_bytes),
                KeyFrom::None => None,
            };
            let partition = match (self.cfg.partition, route.index) {
                (PartitionBy::Partitioner, Some(i)) if count > 0 => Some((i % count) as i32),
                _ => None,
            };
            let mut headers = None;
            if !record.headers.is_empty() || !self.cfg.include_metadata.is_empty() {
                let mut h = OwnedHeaders::new_with_capacity(
                    record.headers.len() + self.cfg.include_metadata.len(),
                );
                for (k, v) in &record.headers {
                    h = h.insert(Header {
                        key: k,
                        value: Some(v.as_ref()),
                    });
                }
                for name in &self.cfg.include_metadata {
                    let value = match name.as_str() {
                        "partition" if record.meta(name).is_none() => Some(&*record.partition),
                        "offset" if record.meta(name).is_none() => Some(record.offset.as_str()),
                        _ => record.meta(name),
                    };
                    if let Some(v) = value {
                        h = h.insert(Header {
                            key: name,
                            value: Some(v.as_bytes()),
                        });
                    }
                }
                headers = Some(h);
            }
            let timestamp = record.timestamp;
            let mut msg: BaseRecord<'_, [u8], [u8], Box<InFlight>> = BaseRecord::with_opaque_to(
                &topic,
                Box::new(InFlight {
                    ack: Some(ack),
                    record,
                    routed,
                }),
            )
            .payload(&value[..]);
            msg.key = key;
            msg.partition = partition;
            msg.timestamp = timestamp;
            msg.headers = headers;
            self.deliveries.in_flight.fetch_add(1, Ordering::AcqRel);
            let mut backoff = Duration::from_micros(200);
            let mut refused = None;
            loop {
                match self.producer.send(msg) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // librdkafka's queue is full: wait for deliveries to make room.
                        msg = back;
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(20));
                    }
                    Err((e, back)) if is_record_error(&e, routed) => {
                        // A bad record, not a broken sink: the error policy decides.
                        refused = Some((e, back.delivery_opaque));
                        break;
                    }
                    Err((e, back)) => {
                        drop(back);
                        self.deliveries.done();
                        self.take_failure()?;
                        let at = format!(
                            "kafka sink: topic `{topic}` partition {} on {}",
                            partition.map_or("(by key)".to_string(), |p| p.to_string()),
                            self.brokers
                        );
                        return Err(ConnectorError::call(at, "produce", &e));
                    }
                }
            }
            if let Some((e, pending)) = refused {
                self.deliveries.done();
                let InFlight {
                    ack, mut record, ..
                } = *pending;
                let Some(ack) = ack else { continue };
                let size = value.len() + record.key.as_ref().map_or(0, |k| k.len());
                record.value = value;
                let reason = if matches!(
                    e,
                    KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)
                ) {
                    format!(
                        "kafka sink: record of {size} bytes is larger than the producer's `message.max.bytes` for topic `{topic}`"
                    )
                } else {
                    format!("kafka sink: cannot produce the record to topic `{topic}`: {e}")
                };
                ack.reject(record, reason);
            }
        }
        Ok(())
    }

    fn transaction(&self) -> Option<Arc<dyn Transactional>> {
        self.txn.clone().map(|t| t as Arc<dyn Transactional>)
    }

    async fn flush(&mut self) -> Result<(), ConnectorError> {
        let r = self.wait_idle().await;
        self.take_failure()?;
        r
    }

    async fn close(&mut self) -> Result<(), ConnectorError> {
        let r = self.flush().await;
        if r.is_err() {
            self.purge();
        }
        r
    }
}

impl Drop for KafkaSink {
    fn drop(&mut self) {
        self.purge();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::{Completion, Ticket};
    use crate::record::{Offset, Route};
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    use tokio::sync::mpsc::unbounded_channel;

    /// tansu (the end-to-end broker) does not enforce a topic's `max.message.bytes`, so the
    /// broker's refusal is injected with librdkafka's own mock broker, which speaks the Kafka
    /// protocol to the real producer.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_record_the_broker_refuses_goes_to_the_error_policy() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("t", 1, 1).expect("topic");
        let cfg: KafkaSinkConfig = serde_json::from_value(serde_json::json!({
            "brokers": [cluster.bootstrap_servers()], "topic": "t",
        }))
        .expect("config");
        let mut sink = KafkaSink::connect(&cfg).await.expect("connect");
        let (done_tx, mut done_rx) = unbounded_channel();
        let (reject_tx, mut reject_rx) = unbounded_channel();
        let completion = Completion {
            partition: "p".into(),
            seq: 0,
            last_offset: Offset::from(1),
            records: 2,
            end_of_partition: false,
            ok: true,
        };
        let ticket = Ticket::with_rejects(completion, done_tx, Some(reject_tx));
        cluster.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
        );
        let record = |o: u64, v: &'static str| SinkRecord {
            record: Record::new("p".into(), Offset::from(o), v),
            route: Route::default(),
            ack: ticket.ack(),
        };
        sink.write(vec![record(0, "refused")]).await.expect("write");
        sink.flush()
            .await
            .expect("a refused record does not fail the sink");
        sink.write(vec![record(1, "kept")]).await.expect("write");
        sink.flush().await.expect("flush");
        ticket.close();
        let rejected = reject_rx
            .try_recv()
            .expect("the refused record is rejected");
        assert_eq!(&rejected.record.value[..], b"refused");
        assert_eq!(rejected.record.offset, Offset::from(0));
        assert!(rejected.reason.contains("refused"), "{}", rejected.reason);
        assert!(reject_rx.try_recv().is_err(), "only one record is refused");
        // The error policy acknowledges it; then the batch completes.
        rejected.ack.ack();
        assert!(done_rx.recv().await.expect("completion").ok);
    }

    #[test]
    fn per_record_broker_errors_go_to_the_error_policy() {
        use RDKafkaErrorCode::*;
        let err = KafkaError::MessageProduction;
        for code in [
            MessageSizeTooLarge,
            InvalidRecord,
            MessageBatchTooLarge,
            TopicAuthorizationFailed,
            InvalidMessage,
        ] {
            assert!(is_record_error(&err(code), false), "{code:?}");
        }
        // A missing topic is the record's problem only when `topic_from` picked it.
        assert!(is_record_error(&err(UnknownTopicOrPartition), true));
        assert!(!is_record_error(&err(UnknownTopicOrPartition), false));
        assert!(!is_record_error(&err(UnknownTopic), false));
        for code in [MessageTimedOut, AllBrokersDown, OutOfOrderSequenceNumber] {
            assert!(!is_record_error(&err(code), true), "{code:?}");
        }
    }
}
