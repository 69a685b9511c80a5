//! A compacted topic used as a key-value table (Kafka Connect's offset topic is the model): the
//! latest value of each key wins, a tombstone (no value) deletes the key. Reads go from the
//! beginning up to a barrier record written just before, so a read sees every earlier write
//! without trusting the broker's high watermark.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::{Offset as KOffset, TopicPartitionList};

use super::client::{LogContext, TopicState, config_error, create_topic, topic_state};
use super::config::{Properties, client_config};
use crate::error::ConnectorError;

/// Key prefix of barrier records; they are tombstones, so compaction removes them.
const BARRIER: &[u8] = b"__sluice_barrier__/";

/// Where the log lives.
#[derive(Debug, Clone)]
pub struct OffsetLogConfig {
    pub brokers: Vec<String>,
    pub topic: String,
    /// Replicas of the topic when Sluice creates it.
    pub replication: u32,
    pub properties: Properties,
    /// How long one read or write may take.
    pub timeout: Duration,
}

/// A compacted, single-partition topic read and written as a table.
pub struct OffsetLog {
    cfg: OffsetLogConfig,
    brokers: String,
    producer: FutureProducer<LogContext>,
}

impl OffsetLog {
    /// Connects and creates the topic (compacted, one partition) when it does not exist.
    pub async fn connect(cfg: OffsetLogConfig) -> Result<Self, ConnectorError> {
        let brokers = cfg.brokers.join(",");
        let mut pc = client_config(&cfg.brokers, &cfg.properties);
        pc.set("enable.idempotence", "true");
        pc.set("acks", "all");
        pc.set("linger.ms", "0");
        pc.set("message.timeout.ms", super::config::ms(cfg.timeout));
        let producer: FutureProducer<LogContext> = LogContext {
            role: "offset store",
            brokers: brokers.clone(),
        }
        .create(&pc)?;
        let log = Self {
            cfg,
            brokers,
            producer,
        };
        log.ensure_topic().await?;
        Ok(log)
    }

    fn err(&self, call: &str, e: rdkafka::error::KafkaError) -> ConnectorError {
        let at = format!(
            "kafka offset store: topic `{}` on {}",
            self.cfg.topic, self.brokers
        );
        ConnectorError::call(at, call, &e)
    }

    /// The topic's state in the cluster's metadata, read off the async runtime (a blocking call).
    async fn metadata_state(
        &self,
        timeout: Duration,
    ) -> Result<Result<TopicState, rdkafka::error::KafkaError>, ConnectorError> {
        let producer = self.producer.clone();
        let topic = self.cfg.topic.clone();
        tokio::task::spawn_blocking(move || topic_state(producer.client(), &topic, timeout))
            .await
            .map_err(|e| {
                ConnectorError::fatal(format!("kafka offset store: metadata task failed: {e}"))
            })
    }

    async fn ensure_topic(&self) -> Result<(), ConnectorError> {
        let state = self
            .metadata_state(Duration::from_secs(10))
            .await?
            .map_err(|e| self.err("reading the metadata", e))?;
        match state {
            TopicState::Present { partitions: 1 } => self.check_compacted().await,
            TopicState::Present { partitions } => Err(ConnectorError::fatal(format!(
                "kafka offset store: topic `{}` on {} has {partitions} partitions; the offset topic needs exactly 1",
                self.cfg.topic, self.brokers
            ))),
            TopicState::Missing => {
                create_topic(
                    &client_config(&self.cfg.brokers, &self.cfg.properties),
                    &self.brokers,
                    &self.cfg.topic,
                    1,
                    self.cfg.replication,
                    &[("cleanup.policy", "compact")],
                )
                .await?;
                // Wait until the new topic's metadata is visible.
                let deadline = Instant::now() + self.cfg.timeout;
                loop {
                    let state = self.metadata_state(Duration::from_secs(5)).await?;
                    if matches!(state, Ok(TopicState::Present { .. })) {
                        return Ok(());
                    }
                    if Instant::now() > deadline {
                        return Err(ConnectorError::retriable(format!(
                            "kafka offset store: topic `{}` on {} was created but does not appear in metadata",
                            self.cfg.topic, self.brokers
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Refuses an existing topic whose `cleanup.policy` deletes old records: there the offsets
    /// of idle partitions expire, and those partitions restart at `start` (loss or replay). A
    /// broker that does not say is only warned about.
    async fn check_compacted(&self) -> Result<(), ConnectorError> {
        let topic = self.cfg.topic.as_str();
        let brokers = self.brokers.as_str();
        let policy = match cleanup_policy(&self.cfg, topic).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(topic, brokers, error = %e, "kafka offset store: cannot read the topic's cleanup.policy; it must be `compact`");
                return Ok(());
            }
        };
        match policy {
            Some(p) if p.split(',').all(|x| x.trim() == "compact") => Ok(()),
            Some(p) => Err(ConnectorError::fatal(format!(
                "kafka offset store: topic `{topic}` on {brokers} has cleanup.policy={p}; it must be `compact`, or the offsets of idle partitions expire and those partitions start over (fix: kafka-configs --alter --entity-type topics --entity-name {topic} --add-config cleanup.policy=compact)"
            ))),
            None => {
                tracing::warn!(
                    topic,
                    brokers,
                    "kafka offset store: the broker did not report the topic's cleanup.policy; it must be `compact`"
                );
                Ok(())
            }
        }
    }

    /// Writes entries (`None` deletes the key) and waits until Kafka has all of them; returns
    /// the offset of the last one.
    pub async fn write(
        &self,
        entries: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<i64, ConnectorError> {
        let mut deliveries = Vec::with_capacity(entries.len());
        for (k, v) in &entries {
            let mut r = FutureRecord::<[u8], [u8]>::to(&self.cfg.topic)
                .key(&k[..])
                .partition(0);
            if let Some(v) = v {
                r = r.payload(&v[..]);
            }
            let d = self
                .producer
                .send_result(r)
                .map_err(|(e, _)| self.err("writing", e))?;
            deliveries.push(d);
        }
        let mut last = -1;
        for d in deliveries {
            match d.await {
                Ok(Ok(delivery)) => last = last.max(delivery.offset),
                Ok(Err((e, _))) => return Err(self.err("writing", e)),
                Err(_) => {
                    return Err(ConnectorError::retriable(format!(
                        "kafka offset store: the producer for topic `{}` on {} went away",
                        self.cfg.topic, self.brokers
                    )));
                }
            }
        }
        Ok(last)
    }

    /// The table: the latest value of every key that is not deleted.
    pub async fn read_all(&self) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, ConnectorError> {
        let mut barrier = BARRIER.to_vec();
        barrier.extend_from_slice(crate::hex32(rand::random()).as_bytes());
        let end = self.write(vec![(barrier, None)]).await?;
        let mut cc = client_config(&self.cfg.brokers, &self.cfg.properties);
        cc.set("group.id", "sluice-offset-store-reader");
        cc.set("enable.auto.commit", "false");
        cc.set("enable.partition.eof", "false");
        cc.set("fetch.wait.max.ms", "20");
        // Offsets written by an exactly-once pipeline's transaction count only once it commits.
        cc.set("isolation.level", "read_committed");
        let topic = self.cfg.topic.clone();
        let brokers = self.brokers.clone();
        let timeout = self.cfg.timeout;
        tokio::task::spawn_blocking(move || -> Result<_, ConnectorError> {
            let consumer: BaseConsumer<LogContext> = LogContext {
                role: "offset store",
                brokers: brokers.clone(),
            }
            .create(&cc)?;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, 0, KOffset::Beginning)
                .map_err(|e| ConnectorError::fatal(format!("kafka offset store: {e}")))?;
            consumer
                .assign(&tpl)
                .map_err(|e| ConnectorError::fatal(format!("kafka offset store: assign: {e}")))?;
            drop(tpl);
            let mut table = BTreeMap::new();
            let deadline = Instant::now() + timeout;
            loop {
                if Instant::now() > deadline {
                    return Err(ConnectorError::retriable(format!(
                        "kafka offset store: reading topic `{topic}` on {brokers} did not reach offset {end} within {timeout:?}"
                    )));
                }
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => {
                        let offset = m.offset();
                        if let Some(k) = m.key()
                            && !k.starts_with(BARRIER)
                        {
                            match m.payload() {
                                Some(v) => table.insert(k.to_vec(), v.to_vec()),
                                None => table.remove(k),
                            };
                        }
                        if offset >= end {
                            return Ok(table);
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(topic = %topic, brokers = %brokers, error = %e, "kafka offset store: read error; retrying");
                    }
                    None => {}
                }
            }
        })
        .await
        .map_err(|e| ConnectorError::fatal(format!("kafka offset store: read task failed: {e}")))?
    }
}

/// The `cleanup.policy` of `topic`, as the broker reports it.
async fn cleanup_policy(
    cfg: &OffsetLogConfig,
    topic: &str,
) -> Result<Option<String>, ConnectorError> {
    let brokers = cfg.brokers.join(",");
    let admin: AdminClient<DefaultClientContext> = client_config(&cfg.brokers, &cfg.properties)
        .create()
        .map_err(|e| {
            config_error(
                format!("kafka offset store: cannot create an admin client for {brokers}"),
                &e,
            )
        })?;
    let opts = AdminOptions::new().request_timeout(Some(cfg.timeout));
    let results = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &opts)
        .await
        .map_err(|e| {
            // Whatever the broker said, asking again later may work.
            let at = format!("kafka offset store: topic `{topic}` on {brokers}");
            ConnectorError {
                retriable: true,
                ..ConnectorError::call(at, "describing the topic", &e)
            }
        })?;
    for r in results {
        match r {
            Ok(res) => {
                if let Some(entry) = res.entries.iter().find(|e| e.name == "cleanup.policy") {
                    return Ok(entry.value.clone());
                }
            }
            Err(code) => {
                return Err(ConnectorError::retriable(format!(
                    "kafka offset store: describing topic `{topic}` on {brokers} failed: {code}"
                )));
            }
        }
    }
    Ok(None)
}
