//! Spec options of the Kinesis source and sink. Names and defaults follow Flink's Kinesis
//! connector where it has the option.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ConfigIssue;
use crate::aws::AwsConfig;
use crate::retry::RetryPolicy;
pub use crate::units::parse_timestamp;
use crate::units::{ByteSize, Dur, int, millis, secs};

/// Reads a Kinesis data stream: every shard is a partition, a record's offset is its sequence
/// number (`<seq>:<sub>` inside a KPL aggregate). Child shards are read only after their parents
/// are read to the end and committed; closed shards are recorded as finished.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KinesisSourceConfig {
    /// The stream: its name, or its full ARN (`arn:aws:kinesis:REGION:ACCOUNT:stream/NAME`).
    #[schemars(length(min = 1))]
    pub stream: String,
    /// How to reach Kinesis: region, endpoint, credentials.
    #[serde(default)]
    pub aws: AwsConfig,
    /// Where to start reading a shard that has no committed offset. A committed offset always
    /// wins: reading resumes right after it.
    #[serde(default)]
    pub start_position: StartPosition,
    /// The start time for `start_position: at_timestamp`: RFC 3339
    /// (`2016-04-04T19:58:46.480-00:00`), a date (`2016-04-04`), a date and time in UTC
    /// (`2016-04-04T19:58:46`), epoch seconds with an optional fraction (`1459799926.480`), or a
    /// value in `timestamp_format`.
    pub timestamp: Option<String>,
    /// A strftime-style format for `timestamp`, e.g. `%Y-%m-%d %H:%M:%S` (UTC unless the format
    /// has an offset).
    pub timestamp_format: Option<String>,
    /// How often the stream is asked for new shards (after a split or a merge).
    #[serde(default = "secs::<10>")]
    pub shard_discovery_interval: Dur,
    /// How records are read: `polling` (GetRecords) or `efo` (enhanced fan-out,
    /// SubscribeToShard, with a consumer of its own).
    #[serde(default)]
    pub reader: ReaderKind,
    /// Polling: the most records one GetRecords call asks for (Kinesis allows 10000).
    #[serde(default = "int::<i32, 10_000>")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_records: i32,
    /// Polling: the time between two GetRecords calls on a shard. Kinesis allows five calls per
    /// second per shard, so shorter values read as `200ms`.
    #[serde(default = "millis::<200>")]
    pub interval: Dur,
    /// Polling: size each GetRecords request from the average record size seen, so a shard is
    /// read at up to its 2 MiB/s limit (Flink's adaptive reads).
    #[serde(default)]
    pub adaptive: bool,
    /// EFO: the consumer's name (required with `reader: efo` unless `consumer_arn` is given).
    pub consumer_name: Option<String>,
    /// EFO: how the consumer is registered. `lazy`: when the pipeline starts, reusing an
    /// existing one, and deregistered on a clean shutdown; `eager`: the same, but kept after
    /// shutdown; `none`: registered by someone else and named by `consumer_arn`.
    #[serde(default)]
    pub registration: Registration,
    /// EFO: the ARN of a consumer registered outside Sluice (`registration: none`).
    pub consumer_arn: Option<String>,
    /// EFO: a subscription is renewed after this long; Kinesis ends each one after 5 minutes.
    #[serde(default = "secs::<290>")]
    pub subscription_renewal: Dur,
    /// Retries of each kind of call.
    #[serde(default)]
    pub retries: Box<SourceRetries>,
}

/// Where a shard without a committed offset is read from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StartPosition {
    /// Records written after the pipeline starts.
    #[default]
    Latest,
    /// The oldest record still in the stream.
    TrimHorizon,
    /// Records written at or after `timestamp`.
    AtTimestamp,
}

/// How shards are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReaderKind {
    /// GetRecords calls every `interval` per shard; shares the shard's read limit with other
    /// consumers.
    #[default]
    Polling,
    /// Enhanced fan-out: SubscribeToShard pushes records to a registered consumer with its own
    /// read limit.
    Efo,
}

/// How the EFO consumer is registered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Registration {
    /// Registered (or reused) at start; deregistered on a clean shutdown.
    #[default]
    Lazy,
    /// Registered (or reused) at start and kept.
    Eager,
    /// Not registered by Sluice: `consumer_arn` names it.
    None,
}

/// Retries of each kind of Kinesis call the source makes (Flink's `scan.*.maxretries` and
/// `backoff.*`). Retriable errors are throttling, timeouts and 5xx; others fail at once.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SourceRetries {
    /// DescribeStreamSummary and DescribeStreamConsumer.
    pub describe: RetryPolicy,
    /// ListShards.
    pub list_shards: RetryPolicy,
    /// GetRecords.
    pub get_records: RetryPolicy,
    /// GetShardIterator.
    pub get_iterator: RetryPolicy,
    /// SubscribeToShard.
    pub subscribe: RetryPolicy,
    /// RegisterStreamConsumer.
    pub register: RetryPolicy,
    /// DeregisterStreamConsumer.
    pub deregister: RetryPolicy,
}

impl Default for SourceRetries {
    fn default() -> Self {
        Self {
            describe: RetryPolicy::new(50, ms(2000), ms(5000), 1.5),
            list_shards: RetryPolicy::new(10, ms(1000), ms(5000), 1.5),
            get_records: RetryPolicy::new(3, ms(300), ms(1000), 1.5),
            get_iterator: RetryPolicy::new(3, ms(300), ms(1000), 1.5),
            subscribe: RetryPolicy::new(10, ms(1000), ms(2000), 1.5),
            register: RetryPolicy::new(10, ms(500), ms(2000), 1.5),
            deregister: RetryPolicy::new(10, ms(500), ms(2000), 1.5),
        }
    }
}

/// Writes records to a Kinesis data stream with PutRecords (at most 500 records and 5 MiB per
/// call, `max_in_flight` calls at once). Only the failed entries of a partial failure are sent
/// again; a record is acknowledged once Kinesis has accepted it.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KinesisSinkConfig {
    /// The stream: its name, or its full ARN.
    #[schemars(length(min = 1))]
    pub stream: String,
    /// How to reach Kinesis: region, endpoint, credentials.
    #[serde(default)]
    pub aws: AwsConfig,
    /// PutRecords calls in flight at once, at most one per target shard, so records of one
    /// partition key are written in order. Only an entry Kinesis refused and that is sent again
    /// can land after later records of its key.
    #[serde(default = "int::<usize, 50>")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_in_flight: usize,
    /// Records held (waiting or in flight) before `write` waits for calls to complete
    /// (backpressure).
    #[serde(default = "int::<usize, 10_000>")]
    #[schemars(range(min = 1))]
    pub max_buffered: usize,
    /// A partial batch is sent once its oldest record has waited this long.
    #[serde(default = "secs::<5>")]
    pub flush_interval: Dur,
    /// Records per PutRecords call (Kinesis allows 500).
    #[serde(default = "int::<usize, 500>")]
    #[schemars(range(min = 1, max = 500))]
    pub max_batch_records: usize,
    /// Bytes (data and partition keys) per PutRecords call (Kinesis allows 5 MiB).
    #[serde(default = "default_batch_size")]
    pub max_batch_size: ByteSize,
    /// `false`: entries Kinesis refuses (throttled, internal errors) are sent again with backoff
    /// until they are written. `true`: the first refused entry stops the pipeline.
    #[serde(default)]
    pub fail_on_error: bool,
    /// Pack many records into one Kinesis record in the KPL aggregation format (readable by the
    /// KCL, Flink and this source). Records are grouped by their target shard.
    #[serde(default)]
    pub aggregate: bool,
    /// With `aggregate`: the most user records in one aggregated record.
    #[serde(default = "default_aggregation_max_records")]
    #[schemars(range(min = 1))]
    pub aggregation_max_records: usize,
    /// With `aggregate`: the largest aggregated record (the KPL's default is 50 KiB; Kinesis
    /// allows 1 MiB).
    #[serde(default = "default_aggregation_max_size")]
    pub aggregation_max_size: ByteSize,
    /// Retries of each kind of Kinesis call the sink makes.
    #[serde(default)]
    pub retries: SinkRetries,
}

/// Retries of each kind of Kinesis call the sink makes.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SinkRetries {
    /// A whole PutRecords call that fails (throttling, timeouts, 5xx). Failed entries of a
    /// call that succeeded are retried with this backoff without a limit unless
    /// `fail_on_error`.
    pub put_records: RetryPolicy,
    /// DescribeStreamSummary and ListShards at start.
    pub describe: RetryPolicy,
}

impl Default for SinkRetries {
    fn default() -> Self {
        Self {
            put_records: RetryPolicy::new(10, ms(100), ms(5000), 1.5),
            describe: RetryPolicy::new(10, ms(1000), ms(5000), 1.5),
        }
    }
}

/// Kinesis's limit on a record: data plus partition key.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Kinesis's limit on a PutRecords call.
pub const MAX_BATCH_BYTES: u64 = 5 * 1024 * 1024;
/// Kinesis's limit on a partition key, in Unicode characters.
pub const MAX_PARTITION_KEY_CHARS: usize = 256;
/// Kinesis's limit on GetRecords calls per shard and second is five.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(200);

fn default_batch_size() -> ByteSize {
    ByteSize(MAX_BATCH_BYTES)
}
fn default_aggregation_max_records() -> usize {
    4_294_967_295
}
fn default_aggregation_max_size() -> ByteSize {
    ByteSize(51_200)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
impl KinesisSourceConfig {
    /// Checks beyond the schema, without I/O.
    pub fn check(&self) -> Vec<ConfigIssue> {
        let mut issues = self.aws.timeouts.check("aws");
        if let Err(m) = super::StreamRef::parse(&self.stream) {
            issues.push(ConfigIssue::new("stream", m));
        }
        match (self.start_position, &self.timestamp) {
            (StartPosition::AtTimestamp, None) => issues.push(ConfigIssue::new(
                "timestamp",
                "start_position at_timestamp needs a `timestamp`",
            )),
            (StartPosition::AtTimestamp, Some(_)) => {
                if let Err(m) = self.start_timestamp() {
                    issues.push(ConfigIssue::new("timestamp", m));
                }
            }
            (_, Some(_)) => issues.push(ConfigIssue::new(
                "timestamp",
                "`timestamp` is only used with start_position: at_timestamp",
            )),
            (_, None) => {}
        }
        if self.timestamp_format.is_some() && self.timestamp.is_none() {
            issues.push(ConfigIssue::new(
                "timestamp_format",
                "`timestamp_format` needs a `timestamp`",
            ));
        }
        if self.shard_discovery_interval.0.is_zero() {
            issues.push(ConfigIssue::new(
                "shard_discovery_interval",
                "must be longer than 0s",
            ));
        }
        if self.reader == ReaderKind::Efo {
            match self.registration {
                Registration::None if self.consumer_arn.is_none() => issues.push(ConfigIssue::new(
                    "consumer_arn",
                    "registration: none needs the `consumer_arn` of a consumer registered outside Sluice",
                )),
                Registration::Lazy | Registration::Eager if self.consumer_name.is_none() => {
                    issues.push(ConfigIssue::new(
                        "consumer_name",
                        "reader: efo needs a `consumer_name` to register (or registration: none with a `consumer_arn`)",
                    ))
                }
                _ => {}
            }
            if self.subscription_renewal.0 >= Duration::from_secs(300)
                || self.subscription_renewal.0.is_zero()
            {
                issues.push(ConfigIssue::new(
                    "subscription_renewal",
                    "must be between 0s and 5m (Kinesis ends a subscription after 5 minutes)",
                ));
            }
        }
        issues
    }

    /// The `at_timestamp` start time.
    pub fn start_timestamp(&self) -> Result<chrono::DateTime<chrono::Utc>, String> {
        let Some(t) = &self.timestamp else {
            return Err("no `timestamp` given".into());
        };
        parse_timestamp(t, self.timestamp_format.as_deref())
    }
}

impl KinesisSinkConfig {
    /// Checks beyond the schema, without I/O.
    pub fn check(&self) -> Vec<ConfigIssue> {
        let mut issues = self.aws.timeouts.check("aws");
        if let Err(m) = super::StreamRef::parse(&self.stream) {
            issues.push(ConfigIssue::new("stream", m));
        }
        if self.max_batch_size.0 == 0 || self.max_batch_size.0 > MAX_BATCH_BYTES {
            issues.push(ConfigIssue::new(
                "max_batch_size",
                "must be between 1B and 5MiB (the PutRecords limit)",
            ));
        }
        if self.aggregate
            && (self.aggregation_max_size.0 < 64
                || self.aggregation_max_size.0 > MAX_RECORD_BYTES as u64)
        {
            issues.push(ConfigIssue::new(
                "aggregation_max_size",
                "must be between 64B and 1MiB (the Kinesis record limit)",
            ));
        }
        issues
    }
}
