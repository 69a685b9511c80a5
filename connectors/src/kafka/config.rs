use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use rdkafka::ClientConfig;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize};

use super::properties::{LIBRDKAFKA_PROPERTIES, LIBRDKAFKA_TOPIC_PROPERTIES};
use crate::ConfigIssue;
use crate::retry::RetryPolicy;
use crate::units::{ByteSize, Dur, int, millis, secs};

/// librdkafka's sensitive properties (`_RK_SENSITIVE` in librdkafka 2.12.1's `rdkafka_conf.c`,
/// which librdkafka itself redacts). The Java client's `sasl.jaas.config` and
/// `ssl.truststore.password`, which users carry over, are covered by [`is_secret_property`]'s
/// name parts.
pub const SECRET_PROPERTIES: &[&str] = &[
    "sasl.oauthbearer.assertion.private.key.file",
    "sasl.oauthbearer.assertion.private.key.passphrase",
    "sasl.oauthbearer.assertion.private.key.pem",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.config",
    "sasl.password",
    "sasl.username",
    "ssl.ca.pem",
    "ssl.key.location",
    "ssl.key.password",
    "ssl.key.pem",
    "ssl.keystore.password",
    "ssl_key",
];

/// Parts of a key name that mark its value as secret wherever the key appears.
const SECRET_NAME_PARTS: &[&str] = &[
    "password",
    "passphrase",
    "secret",
    "token",
    "private.key",
    "private_key",
    "key.pem",
    "ssl.key",
    "ssl_key",
    "sasl.jaas",
];

/// The one rule for which values Sluice never shows (logs, errors, `validate --print`, `Debug`):
/// a librdkafka sensitive property ([`SECRET_PROPERTIES`], also under librdkafka's `topic.`
/// prefix), or any key whose name contains `password`, `passphrase`, `secret`, `token`,
/// `private.key`/`private_key`, `key.pem`, `ssl.key`/`ssl_key` or `sasl.jaas`
/// (case-insensitive).
pub fn is_secret_property(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    let bare = n.strip_prefix("topic.").unwrap_or(&n);
    SECRET_PROPERTIES.contains(&bare) || SECRET_NAME_PARTS.iter().any(|s| n.contains(s))
}

/// True for a property name librdkafka 2.12.1 knows (global or topic-level, with or without
/// librdkafka's `topic.` prefix for topic-level ones).
pub fn is_librdkafka_property(name: &str) -> bool {
    LIBRDKAFKA_PROPERTIES.binary_search(&name).is_ok()
        || name
            .strip_prefix("topic.")
            .is_some_and(|n| LIBRDKAFKA_TOPIC_PROPERTIES.binary_search(&n).is_ok())
}

/// librdkafka configuration properties (`name: value`) passed to the client as they are, after
/// Sluice's own settings, so they can override them. Secret-looking values are never logged.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Properties(pub BTreeMap<String, String>);

impl Properties {
    /// The properties with secret values replaced by `<redacted>`, for logs and errors.
    pub fn redacted(&self) -> BTreeMap<&str, &str> {
        self.0
            .iter()
            .map(|(k, v)| {
                let shown = if is_secret_property(k) {
                    "<redacted>"
                } else {
                    v.as_str()
                };
                (k.as_str(), shown)
            })
            .collect()
    }
}

impl fmt::Debug for Properties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.redacted()).finish()
    }
}

impl<'de> Deserialize<'de> for Properties {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Scalar {
            S(String),
            // A number keeps the digits it was written with (`5.0` stays `5.0`).
            N(serde_json::Number),
            B(bool),
        }
        let raw = BTreeMap::<String, Scalar>::deserialize(d)?;
        Ok(Self(
            raw.into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        Scalar::S(s) => s,
                        Scalar::N(n) => n.to_string(),
                        Scalar::B(b) => b.to_string(),
                    };
                    (k, v)
                })
                .collect(),
        ))
    }
}

impl JsonSchema for Properties {
    fn schema_name() -> Cow<'static, str> {
        "KafkaProperties".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let mut secret = serde_json::Map::new();
        // `ssl_key` is librdkafka-internal: not settable by name, so not offered.
        for name in SECRET_PROPERTIES
            .iter()
            .filter(|n| is_librdkafka_property(n))
        {
            secret.insert(
                (*name).to_string(),
                serde_json::json!({ "type": ["string", "number", "boolean"], "writeOnly": true }),
            );
        }
        json_schema!({
            "type": "object",
            "description": "librdkafka properties (https://github.com/confluentinc/librdkafka/blob/master/CONFIGURATION.md), e.g. `security.protocol: SASL_SSL`. Names are checked against librdkafka 2.12.1's properties. Secret values (`sasl.password`, `ssl.key.password`, `sasl.oauthbearer.client.secret`, names containing `password`, `secret`, `token`, ...) are never logged or printed: write them as `${VAR}`.",
            "properties": secret,
            "additionalProperties": { "type": ["string", "number", "boolean"] },
        })
    }
}

/// How to reach the brokers: what the source, the sink and the offset store share.
pub(crate) fn client_config(brokers: &[String], properties: &Properties) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers.join(","));
    c.set("client.id", "sluice");
    c.set("log_level", "4");
    // Topics are created on purpose (`create_topic`, the offset store), never by a metadata
    // lookup with the broker's defaults.
    c.set("allow.auto.create.topics", "false");
    for (k, v) in &properties.0 {
        c.set(k, v);
    }
    c
}

pub(crate) fn check_brokers(brokers: &[String]) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    if brokers.is_empty() {
        issues.push(ConfigIssue::new(
            "brokers",
            "at least one broker is needed (host:port)",
        ));
    }
    for (i, b) in brokers.iter().enumerate() {
        let hostport = b.rsplit("://").next().unwrap_or(b);
        let ok = hostport
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !ok {
            issues.push(ConfigIssue::new(
                format!("brokers/{i}"),
                format!("`{b}` is not host:port"),
            ));
        }
    }
    issues
}

/// Writes records to a Kafka topic with an idempotent producer (`acks=all`): a record is
/// acknowledged, and its source offset committed, only after Kafka confirmed it.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Bootstrap brokers, `host:port`.
    #[schemars(length(min = 1))]
    pub brokers: Vec<String>,
    /// The topic records go to (and the topic whose partition count partitioners see).
    #[schemars(length(min = 1, max = 249))]
    pub topic: String,
    /// Takes the topic per record from a header or a metadata field (set by the source or a
    /// transform); records without it go to `topic`.
    pub topic_from: Option<FieldRef>,
    /// With `topic_from`: the topics a record may name, as names or patterns with `*`
    /// (`orders-*`). A record naming any other topic is rejected to the error policy. Empty:
    /// any topic, except that Kafka's internal topics (`__*`) and the Kafka offset store's
    /// topic are always refused.
    #[serde(default)]
    pub allowed_topics: Vec<String>,
    /// Topics `topic_from` may never name, whatever `allowed_topics` says: the pipeline's Kafka
    /// offset-store topic (filled in by the runtime, not part of the spec).
    #[serde(skip)]
    #[schemars(skip)]
    pub reserved_topics: Vec<String>,
    /// Where the message key comes from: `record` (the record's key), `partition_key` (the
    /// partitioner's key), or `none`.
    #[serde(default)]
    pub key: KeyFrom,
    /// How the Kafka partition is chosen: `partitioner` (the partitioner's index when it gives
    /// one, otherwise librdkafka's hash of the key) or `hash` (always librdkafka's hash of the
    /// key: murmur2 like the Java client, random without a key).
    #[serde(default)]
    pub partition: PartitionBy,
    /// Source metadata written as headers with the same names, e.g. `[shard-id,
    /// sequence-number]` (Kinesis) or `[topic, partition, offset]` (Kafka).
    #[serde(default)]
    pub include_metadata: Vec<String>,
    /// Acknowledgements Kafka gives before a record counts as written: `all` (every in-sync
    /// replica), `leader`, or `none` (no guarantee; not idempotent).
    #[serde(default)]
    pub acks: Acks,
    /// Idempotent producer: no duplicates from producer retries, order kept per partition.
    #[serde(default = "default_true")]
    pub idempotent: bool,
    /// Batch compression.
    #[serde(default)]
    pub compression: Compression,
    /// How long the producer waits to fill a batch (`linger.ms`).
    #[serde(default = "millis::<5>")]
    pub linger: Dur,
    /// Largest batch per partition in bytes (`batch.size`).
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: ByteSize,
    /// Most records per batch (`batch.num.messages`).
    #[serde(default = "int::<u32, 10_000>")]
    #[schemars(range(min = 1, max = 1000000))]
    pub batch_records: u32,
    /// How long a record may take to be delivered, retries included (`message.timeout.ms`).
    /// Past it the record fails, its batch is not committed and the pipeline stops, so a restart
    /// replays it.
    #[serde(default = "secs::<120>")]
    pub delivery_timeout: Dur,
    /// Creates the topic when it does not exist. Without it, a missing topic is an error.
    pub create_topic: Option<CreateTopic>,
    /// Retries of the start-up checks (broker reachable, topic present).
    #[serde(default = "default_connect_retry")]
    pub retry: RetryPolicy,
    /// Exactly-once delivery: a transactional producer writes the records of each commit
    /// interval together with the pipeline's new offsets (records in the Kafka offset store's
    /// topic, which must be on the same cluster) in one Kafka transaction; committing the
    /// transaction is the offset commit. Consumers that read with `isolation.level =
    /// read_committed` see every record once. Needs `offsets: {kafka: ...}` on the sink's
    /// brokers. See docs/delivery.md.
    #[serde(default)]
    pub exactly_once: bool,
    /// With `exactly_once`: the producer's `transactional.id`. Default `sluice-<pipeline name>`.
    /// A new instance with the same id fences the earlier one (it stops and writes nothing
    /// more) and aborts its open transaction: give every pipeline its own, and keep it stable
    /// across restarts.
    pub transactional_id: Option<String>,
    /// Other librdkafka producer properties (SASL, SSL, tuning); they override the above.
    #[serde(default)]
    pub properties: Properties,
}

/// librdkafka properties that `exactly_once` sets itself.
const MANAGED_BY_EXACTLY_ONCE: &[&str] = &[
    "transactional.id",
    "transaction.timeout.ms",
    "enable.idempotence",
];

/// A header or a metadata field of a record.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum FieldRef {
    /// A record header.
    Header(String),
    /// A source metadata field (`topic`, `shard-id`, ...).
    Metadata(String),
}

/// Where a Kafka message key comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyFrom {
    /// The record's key (a Kafka source's key, a Kinesis partition key), none if it has none.
    #[default]
    Record,
    /// The partitioner's key (`fields`, a wasm partitioner).
    PartitionKey,
    /// No key.
    None,
}

/// How the Kafka partition is chosen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PartitionBy {
    /// The partitioner's index when it gives one, else librdkafka's hash of the key.
    #[default]
    Partitioner,
    /// librdkafka's hash of the key (`murmur2_random`, the Java client's rule).
    Hash,
}

/// Producer acknowledgements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Acks {
    /// All in-sync replicas (`acks=all`).
    #[default]
    All,
    /// The partition leader only (`acks=1`).
    Leader,
    /// No acknowledgement (`acks=0`): records count as written once sent.
    None,
}

/// Batch compression codecs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }
}

/// A topic to create when it is missing.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTopic {
    /// Number of partitions.
    #[serde(default = "int::<u32, 1>")]
    #[schemars(range(min = 1, max = 100000))]
    pub partitions: u32,
    /// Replicas per partition.
    #[serde(default = "int::<u32, 1>")]
    #[schemars(range(min = 1, max = 32))]
    pub replication: u32,
}

fn default_true() -> bool {
    true
}
fn default_batch_bytes() -> ByteSize {
    ByteSize(1024 * 1024)
}
fn default_connect_retry() -> RetryPolicy {
    RetryPolicy::new(8, Duration::from_millis(250), Duration::from_secs(5), 2.0)
}

impl KafkaSinkConfig {
    pub fn check(&self) -> Vec<ConfigIssue> {
        let mut issues = check_brokers(&self.brokers);
        if self.idempotent && self.acks != Acks::All {
            issues.push(ConfigIssue::new(
                "acks",
                "an idempotent producer needs `acks: all` (or set `idempotent: false`)",
            ));
        }
        if self.delivery_timeout.0 < Duration::from_millis(1) {
            issues.push(ConfigIssue::new("delivery_timeout", "must be at least 1ms"));
        }
        if self.topic_from.is_none() && !self.allowed_topics.is_empty() {
            issues.push(ConfigIssue::new(
                "allowed_topics",
                "`allowed_topics` is used only with `topic_from`",
            ));
        }
        if self.exactly_once {
            if !self.idempotent {
                issues.push(ConfigIssue::new(
                    "idempotent",
                    "`exactly_once` needs the idempotent producer (remove `idempotent: false`)",
                ));
            }
            for name in MANAGED_BY_EXACTLY_ONCE {
                if self.properties.0.contains_key(*name) {
                    issues.push(ConfigIssue::new(
                        format!("properties/{name}"),
                        format!(
                            "`{name}` is set by `exactly_once`; use `transactional_id` to choose the id"
                        ),
                    ));
                }
            }
        } else if self.transactional_id.is_some() {
            issues.push(ConfigIssue::new(
                "transactional_id",
                "`transactional_id` is used only with `exactly_once: true`",
            ));
        }
        if let Some(id) = &self.transactional_id
            && id.trim().is_empty()
        {
            issues.push(ConfigIssue::new("transactional_id", "must not be empty"));
        }
        issues
    }

    /// Whether a record may be written to `topic` (taken from `topic_from`): `Err` says why not.
    pub fn check_record_topic(&self, topic: &str) -> Result<(), String> {
        if topic == self.topic {
            return Ok(());
        }
        if self.reserved_topics.iter().any(|t| t == topic) {
            return Err(format!(
                "topic `{topic}` is the Kafka offset store's topic; `topic_from` may never name it"
            ));
        }
        if topic.starts_with("__") {
            return Err(format!(
                "topic `{topic}` is internal to Kafka; `topic_from` may never name it"
            ));
        }
        if !self.allowed_topics.is_empty()
            && !self.allowed_topics.iter().any(|p| glob_match(p, topic))
        {
            return Err(format!(
                "topic `{topic}` is not in `allowed_topics` ({})",
                self.allowed_topics.join(", ")
            ));
        }
        Ok(())
    }

    /// The producer's librdkafka configuration.
    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.brokers.join(","));
        c.set("client.id", "sluice");
        c.set("log_level", "4");
        c.set("allow.auto.create.topics", "false");
        c.set(
            "acks",
            match self.acks {
                Acks::All => "all",
                Acks::Leader => "1",
                Acks::None => "0",
            },
        );
        c.set("enable.idempotence", self.idempotent.to_string());
        c.set("compression.codec", self.compression.as_str());
        c.set("linger.ms", ms(self.linger.0));
        c.set(
            "batch.size",
            self.batch_bytes.0.min(i32::MAX as u64).to_string(),
        );
        c.set("batch.num.messages", self.batch_records.to_string());
        c.set("message.timeout.ms", ms(self.delivery_timeout.0));
        if self.exactly_once {
            if let Some(id) = &self.transactional_id {
                c.set("transactional.id", id);
            }
            // librdkafka needs message.timeout.ms <= transaction.timeout.ms.
            c.set(
                "transaction.timeout.ms",
                ms(self.delivery_timeout.0.max(Duration::from_secs(60))),
            );
        }
        // The Java client's partitioner, so keys land where Kafka Connect would put them.
        c.set("partitioner", "murmur2_random");
        c.set("queue.buffering.max.messages", "1000000");
        c.set("queue.buffering.max.kbytes", "1048576");
        for (k, v) in &self.properties.0 {
            c.set(k, v);
        }
        c
    }
}

/// `pattern` with `*` matching any run of characters (`orders-*`), else an exact name.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    // `split` yields at least one part.
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for p in middle {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

pub(crate) fn ms(d: Duration) -> String {
    d.as_millis().min(i32::MAX as u128).to_string()
}

/// Reads Kafka topics as a member of a consumer group. Each topic-partition is a source
/// partition named `topic/partition` (`orders/3`); its offset is the Kafka offset.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Bootstrap brokers, `host:port`.
    #[schemars(length(min = 1))]
    pub brokers: Vec<String>,
    /// Topics to read. A name starting with `^` is a regular expression (`^orders-.*`) matched
    /// against every topic, including ones created later.
    #[schemars(length(min = 1))]
    pub topics: Vec<String>,
    /// The consumer group: workers running the same pipeline with the same group share the
    /// partitions, and committed progress is visible to Kafka tools as the group's offsets.
    #[schemars(length(min = 1))]
    pub group: String,
    /// Where partitions start that have no offset in the pipeline's store or the group:
    /// `earliest`, `latest`, or `timestamp` (with `start_timestamp`).
    #[serde(default)]
    pub start: StartAt,
    /// For `start: timestamp`: the first records read are the first at or after this time
    /// (RFC 3339 `2026-11-24T00:00:00Z`, a date `2026-11-24`, or epoch seconds, as the Kinesis
    /// source reads it).
    pub start_timestamp: Option<String>,
    /// Records per batch handed to the pipeline (a batch holds one partition's records).
    #[serde(default = "int::<usize, 1000>")]
    #[schemars(range(min = 1, max = 100000))]
    pub batch_size: usize,
    /// How long a partial batch waits for more records before it is handed on.
    #[serde(default = "millis::<50>")]
    pub batch_wait: Dur,
    /// On a rebalance, how long to wait for the records of revoked partitions already read to be
    /// acknowledged and committed, before giving the partitions up. The new owner resumes from
    /// the last commit, so a shorter wait means more records read twice.
    #[serde(default = "secs::<15>")]
    pub rebalance_drain: Dur,
    /// Other librdkafka consumer properties (SASL, SSL, `session.timeout.ms`, ...); they
    /// override the above.
    #[serde(default)]
    pub properties: Properties,
}

/// Where a partition without committed offsets starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    /// The oldest record Kafka still has.
    #[default]
    Earliest,
    /// Only records written after the partition was assigned.
    Latest,
    /// The first record at or after `start_timestamp`.
    Timestamp,
}

impl KafkaSourceConfig {
    pub fn check(&self) -> Vec<ConfigIssue> {
        let mut issues = check_brokers(&self.brokers);
        match (self.start, &self.start_timestamp) {
            (StartAt::Timestamp, None) => issues.push(ConfigIssue::new(
                "start_timestamp",
                "`start: timestamp` needs `start_timestamp` (e.g. 2026-11-24T00:00:00Z)",
            )),
            (StartAt::Earliest | StartAt::Latest, Some(_)) => issues.push(ConfigIssue::new(
                "start_timestamp",
                "`start_timestamp` is used only with `start: timestamp`",
            )),
            (StartAt::Timestamp, Some(t)) => {
                if let Err(e) = parse_timestamp(t) {
                    issues.push(ConfigIssue::new("start_timestamp", e));
                }
            }
            _ => {}
        }
        for (i, t) in self.topics.iter().enumerate() {
            if t.is_empty() {
                issues.push(ConfigIssue::new(format!("topics/{i}"), "empty topic name"));
            }
        }
        issues
    }

    /// `start_timestamp` in milliseconds since the epoch, when `start: timestamp`.
    pub(crate) fn start_millis(&self) -> Option<i64> {
        match (self.start, &self.start_timestamp) {
            (StartAt::Timestamp, Some(t)) => parse_timestamp(t).ok(),
            _ => None,
        }
    }

    /// The consumer's librdkafka configuration.
    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut c = client_config(&self.brokers, &Properties::default());
        c.set("group.id", &self.group);
        c.set("enable.auto.commit", "false");
        c.set("enable.auto.offset.store", "false");
        c.set("enable.partition.eof", "false");
        // Kafka Connect's session timeout: a dead worker's partitions move within 10 s, and a
        // group forms quickly (some brokers wait for a fraction of it on the first join).
        c.set("session.timeout.ms", "10000");
        c.set("heartbeat.interval.ms", "1000");
        c.set(
            "auto.offset.reset",
            if self.start == StartAt::Latest {
                "latest"
            } else {
                "earliest"
            },
        );
        for (k, v) in &self.properties.0 {
            c.set(k, v);
        }
        c
    }
}

/// A start time in milliseconds since the epoch, read the way every source reads one.
pub(crate) fn parse_timestamp(t: &str) -> Result<i64, String> {
    crate::units::parse_timestamp(t, None).map(|d| d.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_timestamps_are_read_as_the_kinesis_source_reads_them() {
        assert_eq!(
            parse_timestamp("2026-11-24T00:00:00Z"),
            Ok(1_795_478_400_000)
        );
        assert_eq!(parse_timestamp("2026-11-24"), Ok(1_795_478_400_000));
        assert_eq!(parse_timestamp("1795478400.5"), Ok(1_795_478_400_500));
        assert!(parse_timestamp("yesterday").is_err());
    }

    #[test]
    fn secret_properties_are_redacted_in_debug_output() {
        let p: Properties = serde_json::from_value(serde_json::json!({
            "sasl.password": "hunter2",
            "ssl.key.pem": "-----BEGIN",
            "security.protocol": "SASL_SSL",
            "linger.ms": 5,
        }))
        .expect("properties");
        let shown = format!("{p:?}");
        sluice_test_kit::assert_hidden(&shown, &["hunter2", "BEGIN"]);
        assert!(
            shown.contains("SASL_SSL") && shown.contains("\"5\""),
            "{shown}"
        );
    }

    #[test]
    fn librdkafka_sensitive_properties_are_redacted_in_debug_output() {
        let mut map = BTreeMap::new();
        for name in SECRET_PROPERTIES {
            map.insert((*name).to_string(), format!("hunter2-{name}"));
        }
        for name in [
            "sasl.oauthbearer.assertion.private.key.pem",
            "my.custom.token",
            "Some.PASSWORD.thing",
            "topic.ssl.key.pem",
        ] {
            map.insert(name.to_string(), "hunter2".into());
        }
        map.insert("client.rack".into(), "rack-1".into());
        let shown = format!("{:?}", Properties(map));
        sluice_test_kit::assert_hidden(&shown, &["hunter2"]);
        assert!(shown.contains("rack-1"), "{shown}");
    }

    #[test]
    fn every_librdkafka_sensitive_property_is_secret() {
        // `_RK_SENSITIVE` in librdkafka 2.12.1's rdkafka_conf.c.
        for name in [
            "ssl.key.location",
            "ssl.key.password",
            "ssl.key.pem",
            "ssl_key",
            "ssl.ca.pem",
            "ssl.keystore.password",
            "sasl.username",
            "sasl.password",
            "sasl.oauthbearer.config",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.assertion.private.key.file",
            "sasl.oauthbearer.assertion.private.key.passphrase",
            "sasl.oauthbearer.assertion.private.key.pem",
        ] {
            assert!(is_secret_property(name), "{name}");
        }
        assert!(!is_secret_property("security.protocol"));
        assert!(!is_secret_property("linger.ms"));
    }

    #[test]
    fn the_librdkafka_property_list_is_sorted_and_unique() {
        assert!(LIBRDKAFKA_PROPERTIES.len() > 150);
        for list in [LIBRDKAFKA_PROPERTIES, LIBRDKAFKA_TOPIC_PROPERTIES] {
            assert!(list.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
        }
        assert!(
            LIBRDKAFKA_TOPIC_PROPERTIES
                .iter()
                .all(|t| LIBRDKAFKA_PROPERTIES.contains(t))
        );
        assert!(!is_librdkafka_property("topic.sasl.password"));
        assert!(is_librdkafka_property("sasl.password"));
        assert!(is_librdkafka_property("message.timeout.ms"));
        assert!(is_librdkafka_property("topic.message.timeout.ms"));
        assert!(!is_librdkafka_property("sasl.pasword"));
        for name in SECRET_PROPERTIES {
            assert!(is_librdkafka_property(name) || *name == "ssl_key", "{name}");
        }
        assert!(is_secret_property("sasl.jaas.config"));
        assert!(is_secret_property("ssl.truststore.password"));
    }

    #[test]
    fn topic_from_never_names_reserved_or_unlisted_topics() {
        let mut c: KafkaSinkConfig = serde_json::from_value(serde_json::json!({
            "brokers": ["b:9092"], "topic": "main", "topic_from": {"header": "dest"},
        }))
        .expect("config");
        c.reserved_topics = vec!["sluice-offsets".into()];
        assert!(c.check_record_topic("main").is_ok());
        assert!(c.check_record_topic("anything").is_ok());
        assert!(c.check_record_topic("sluice-offsets").is_err());
        assert!(c.check_record_topic("__consumer_offsets").is_err());
        c.allowed_topics = vec!["orders-*".into(), "audit".into()];
        assert!(c.check_record_topic("orders-eu").is_ok());
        assert!(c.check_record_topic("audit").is_ok());
        assert!(c.check_record_topic("audit2").is_err());
        assert!(c.check_record_topic("main").is_ok());
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("a*a", "a"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
    }

    #[test]
    fn checks_need_no_io() {
        let c: KafkaSourceConfig = serde_json::from_value(serde_json::json!({
            "brokers": ["localhost"], "topics": ["t"], "group": "g", "start": "timestamp"
        }))
        .expect("config");
        let issues = c.check();
        assert_eq!(issues.len(), 2, "{issues:?}");
        assert_eq!(issues[0].path, "brokers/0");
        assert_eq!(issues[1].path, "start_timestamp");
    }
}
