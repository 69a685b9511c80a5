//! The `kafka` offset store: a compacted topic (default `sluice-offsets`) with one record per
//! (namespace, partition), keyed by the JSON array `["<namespace>","<partition>"]` like Kafka
//! Connect's offset topic, valued by the JSON entry (`offset`, `finished`, `updated_at`). Reset
//! and prune write tombstones. Every read goes through the whole topic up to a barrier written
//! just before, so it sees every earlier commit, from any worker.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use schemars::JsonSchema;
use serde::Deserialize;
use sluice_connectors::kafka::{OffsetLog, OffsetLogConfig};
use sluice_connectors::units::{Dur, int, secs};
use sluice_connectors::{CommittedOffsets, Transactional, TxnError};
use tokio::sync::OnceCell;

use super::{Entry, OffsetError, OffsetRow, OffsetStore, Prune, Reset};

/// The Kafka offset store.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaStoreSpec {
    /// Bootstrap brokers, `host:port`.
    #[schemars(length(min = 1))]
    pub brokers: Vec<String>,
    /// The compacted topic (created with one partition when missing).
    #[serde(default = "default_offsets_topic")]
    pub topic: String,
    /// Replicas of the topic when Sluice creates it.
    #[serde(default = "int::<u32, 1>")]
    #[schemars(range(min = 1, max = 32))]
    pub replication: u32,
    /// How often acknowledged progress is committed (and at shutdown).
    #[serde(default = "super::default_commit_interval")]
    pub commit_interval: Dur,
    /// How long one read or write of the store may take.
    #[serde(default = "secs::<30>")]
    pub timeout: Dur,
    /// librdkafka properties (SASL, SSL, ...), as for the Kafka source and sink.
    #[serde(default)]
    pub properties: sluice_connectors::kafka::Properties,
}

fn default_offsets_topic() -> String {
    "sluice-offsets".into()
}

type Table = BTreeMap<String, BTreeMap<String, Entry>>;

pub struct KafkaStore {
    cfg: OffsetLogConfig,
    /// Connected on first use, so opening the store does no I/O.
    log: OnceCell<OffsetLog>,
    /// Serialises read-modify-write cycles within this process.
    lock: tokio::sync::Mutex<()>,
}

impl KafkaStore {
    pub fn new(spec: &KafkaStoreSpec) -> Self {
        Self {
            cfg: OffsetLogConfig {
                brokers: spec.brokers.clone(),
                topic: spec.topic.clone(),
                replication: spec.replication,
                properties: spec.properties.clone(),
                timeout: spec.timeout.0,
            },
            log: OnceCell::new(),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    fn fail(&self, e: sluice_connectors::ConnectorError) -> OffsetError {
        OffsetError::Backend {
            store: self.describe(),
            source: e,
        }
    }

    async fn log(&self) -> Result<&OffsetLog, OffsetError> {
        self.log
            .get_or_try_init(|| OffsetLog::connect(self.cfg.clone()))
            .await
            .map_err(|e| {
                // A connection refused as configured (a topic that is not compacted, properties
                // librdkafka rejects) does not heal by waiting or restarting.
                if e.retriable {
                    self.fail(e)
                } else {
                    OffsetError::Invalid {
                        store: self.describe(),
                        message: e.to_string(),
                    }
                }
            })
    }

    fn key(namespace: &str, partition: &str) -> Vec<u8> {
        // Serialising two strings cannot fail.
        serde_json::to_vec(&[namespace, partition]).unwrap_or_default()
    }

    async fn read(&self) -> Result<Table, OffsetError> {
        let raw = self
            .log()
            .await?
            .read_all()
            .await
            .map_err(|e| self.fail(e))?;
        let mut table = Table::new();
        for (k, v) in raw {
            let (ns, part): (String, String) =
                serde_json::from_slice(&k).map_err(|e| OffsetError::Corrupt {
                    store: self.describe(),
                    message: format!("a key is not [namespace, partition] ({e})"),
                })?;
            let entry: Entry = serde_json::from_slice(&v).map_err(|e| OffsetError::Corrupt {
                store: self.describe(),
                message: format!("the entry of {ns}/{part} is corrupt ({e})"),
            })?;
            table.entry(ns).or_default().insert(part, entry);
        }
        Ok(table)
    }

    async fn write(&self, entries: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<(), OffsetError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.log()
            .await?
            .write(entries)
            .await
            .map(|_| ())
            .map_err(|e| self.fail(e))
    }

    /// The records that store `offsets`.
    fn entries(namespace: &str, offsets: &CommittedOffsets) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let now = Utc::now();
        offsets
            .iter()
            .map(|(p, c)| {
                let e = Entry {
                    offset: c.offset.clone(),
                    finished: c.finished,
                    updated_at: now,
                };
                Self::put(namespace, p, &e)
            })
            .collect()
    }

    fn put(namespace: &str, partition: &str, e: &Entry) -> (Vec<u8>, Option<Vec<u8>>) {
        // Serialising an entry of strings, a bool and a time cannot fail.
        (Self::key(namespace, partition), serde_json::to_vec(e).ok())
    }
}

#[async_trait]
impl OffsetStore for KafkaStore {
    fn describe(&self) -> String {
        format!(
            "kafka topic {} on {}",
            self.cfg.topic,
            self.cfg.brokers.join(",")
        )
    }

    async fn load(&self, namespace: &str) -> Result<CommittedOffsets, OffsetError> {
        let table = self.read().await?;
        Ok(table
            .get(namespace)
            .map(|parts| {
                parts
                    .iter()
                    .map(|(k, e)| (k.as_str().into(), e.committed()))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn commit(&self, namespace: &str, offsets: &CommittedOffsets) -> Result<(), OffsetError> {
        self.write(Self::entries(namespace, offsets)).await
    }

    async fn list(&self, namespace: Option<&str>) -> Result<Vec<OffsetRow>, OffsetError> {
        let table = self.read().await?;
        Ok(table
            .iter()
            .filter(|(ns, _)| namespace.is_none_or(|n| n == ns.as_str()))
            .flat_map(|(ns, parts)| parts.iter().map(move |(p, e)| e.row(ns, p)))
            .collect())
    }

    async fn reset(&self, req: &Reset) -> Result<Vec<OffsetRow>, OffsetError> {
        let _guard = self.lock.lock().await;
        let mut table = self.read().await?;
        let namespace = &req.namespace;
        let parts = table.entry(namespace.clone()).or_default();
        let changed = req.apply(parts);
        let entries = changed
            .iter()
            .map(|row| match parts.get(&row.partition) {
                Some(e) => Self::put(namespace, &row.partition, e),
                None => (Self::key(namespace, &row.partition), None),
            })
            .collect();
        self.write(entries).await?;
        Ok(changed)
    }

    async fn prune(&self, req: &Prune) -> Result<Vec<OffsetRow>, OffsetError> {
        let _guard = self.lock.lock().await;
        let pruned = req.apply_all(&mut self.read().await?);
        if !req.dry_run {
            let tombstones = pruned
                .iter()
                .map(|r| (Self::key(&r.namespace, &r.partition), None))
                .collect();
            self.write(tombstones).await?;
        }
        Ok(pruned)
    }
}

/// The Kafka offset store of an exactly-once pipeline: reads go to the topic (read_committed,
/// so offsets of aborted or open transactions are never seen); a commit writes the offset
/// records into the Kafka sink's open transaction and commits it, so the records and their
/// offsets become visible together or not at all. The store's own producer never writes them.
pub struct TxnStore {
    store: KafkaStore,
    txn: Arc<dyn Transactional>,
}

impl TxnStore {
    pub fn new(spec: &KafkaStoreSpec, txn: Arc<dyn Transactional>) -> Self {
        Self {
            store: KafkaStore::new(spec),
            txn,
        }
    }
}

#[async_trait]
impl OffsetStore for TxnStore {
    fn describe(&self) -> String {
        format!(
            "{} (exactly-once, through {})",
            self.store.describe(),
            self.txn.describe()
        )
    }

    async fn load(&self, namespace: &str) -> Result<CommittedOffsets, OffsetError> {
        self.store.load(namespace).await
    }

    async fn commit(&self, namespace: &str, offsets: &CommittedOffsets) -> Result<(), OffsetError> {
        let entries = KafkaStore::entries(namespace, offsets);
        self.txn
            .commit(&self.store.cfg.topic, entries)
            .await
            .map_err(|e| match e {
                TxnError::Aborted(message) => OffsetError::Aborted {
                    store: self.store.describe(),
                    message,
                },
                TxnError::Fatal(message) => OffsetError::TxnFatal {
                    store: self.store.describe(),
                    message,
                },
            })
    }

    async fn list(&self, namespace: Option<&str>) -> Result<Vec<OffsetRow>, OffsetError> {
        self.store.list(namespace).await
    }

    async fn reset(&self, req: &Reset) -> Result<Vec<OffsetRow>, OffsetError> {
        self.store.reset(req).await
    }

    async fn prune(&self, req: &Prune) -> Result<Vec<OffsetRow>, OffsetError> {
        self.store.prune(req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The store contract against the broker `scripts/test.sh` starts (SLUICE_TEST_KAFKA_BROKERS),
    /// on a fresh topic.
    #[tokio::test]
    async fn contract() {
        let brokers = sluice_test_kit::emulator::kafka_brokers();
        let topic = sluice_test_kit::unique_name("sluice-offsets-test");
        let spec: KafkaStoreSpec = serde_json::from_value(serde_json::json!({
            "brokers": [brokers], "topic": topic
        }))
        .expect("spec");
        let store = KafkaStore::new(&spec);
        super::super::contract::check(&store).await;
        // A second store on the same topic (another worker, a later run) reads the same rows.
        let mut c = CommittedOffsets::new();
        c.insert(
            "orders/0".into(),
            sluice_connectors::Committed {
                offset: "41".into(),
                finished: false,
            },
        );
        store.commit("again", &c).await.expect("commit");
        let other = KafkaStore::new(&spec);
        assert_eq!(
            other.load("again").await.expect("load")["orders/0"]
                .offset
                .as_str(),
            "41"
        );
    }
}
