use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ConfigIssue;
use crate::aws::AwsConfig;
use crate::retry::RetryPolicy;
use crate::units::{Dur, int, secs};

/// How records are read as items, or items written as records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ItemFormat {
    /// Plain JSON: string → S, number → N (exact text), bool → BOOL, null → NULL, array → L,
    /// object → M.
    #[default]
    Json,
    /// DynamoDB-JSON: every value tagged with its type, `{"id": {"S": "a"}, "n": {"N": "1"}}`.
    DynamodbJson,
}

/// What the sink does with each record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SinkMode {
    /// Every record is put as an item (replacing the item with the same key).
    #[default]
    Put,
    /// Each record says whether it is a put or a delete, so a change stream can be mirrored: a
    /// `dynamodb` source's stream record (`event: REMOVE` deletes `keys`, others put `new`), or a
    /// record whose `op_field` is `delete` (deletes the item with the record's key attributes).
    Mirror,
}

/// Writes records as items of a DynamoDB table with BatchWriteItem (or conditional PutItem with
/// `only_newer_by`). Records are acknowledged only once DynamoDB has written them.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DynamoSinkConfig {
    /// The table to write to (it must exist).
    #[schemars(length(min = 3, max = 255))]
    pub table: String,
    /// How to reach DynamoDB.
    #[serde(default)]
    pub aws: AwsConfig,
    /// How records become items. Default: `json`. DynamoDB → DynamoDB needs `dynamodb_json` at
    /// both ends to keep sets, binary and numbers as they are; `validate` says so.
    pub item_format: Option<ItemFormat>,
    /// Put every record, or mirror puts and deletes.
    #[serde(default)]
    pub mode: SinkMode,
    /// In `mirror` mode, the field that marks a delete (`"__op": "delete"`). It is never stored.
    #[serde(default = "default_op_field")]
    pub op_field: String,
    /// Top-level fields holding base64 text, stored as binary (`B`). Plain JSON only.
    #[serde(default)]
    pub binary_fields: Vec<String>,
    /// Top-level fields whose arrays are stored as sets: `SS` for strings, `NS` for numbers.
    /// Plain JSON only; an empty array leaves the attribute out (DynamoDB has no empty sets).
    #[serde(default)]
    pub sets: Vec<String>,
    /// Items per BatchWriteItem request (at most 25, the service limit).
    #[serde(default = "int::<usize, 25>")]
    #[schemars(range(min = 1, max = 25))]
    pub batch_size: usize,
    /// Requests in flight at once.
    #[serde(default = "int::<usize, 50>")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_in_flight: usize,
    /// Records held before the sink sends them and makes its caller wait (backpressure).
    #[serde(default = "int::<usize, 10_000>")]
    #[schemars(range(min = 1))]
    pub max_buffered: usize,
    /// The longest a record waits in the buffer before it is sent.
    #[serde(default = "secs::<5>")]
    pub flush_interval: Dur,
    /// Stop the pipeline on the first failed request or invalid item instead of retrying
    /// retriable failures and handing invalid items to the error policy.
    #[serde(default)]
    pub fail_on_error: bool,
    /// Key attributes that identify an item for deduplication: within a flush only the latest
    /// record per key is written (Flink's `PARTITIONED BY`). Without it, records with the same
    /// table key are written in order in separate requests, never together.
    #[serde(default)]
    pub overwrite_by_keys: Vec<String>,
    /// Source metadata stored as attributes: metadata name → attribute name, e.g.
    /// `{shard-id: kinesis_shard_id, sequence-number: shard_sequence_number}`. `partition` and
    /// `offset` name the record's source position.
    #[serde(default)]
    pub include_metadata: BTreeMap<String, String>,
    /// A metadata name (one of `include_metadata`) holding a decimal position such as a Kinesis
    /// `sequence-number`: an item is written only if the stored one has a lower or equal value
    /// or none, so a replay never overwrites newer data with older. An equal value is the same
    /// record again, or another user record of the same KPL aggregate (they share a sequence
    /// number and arrive in order, so the last one wins); store `sub-sequence-number` too to
    /// order those strictly. Uses conditional PutItem/DeleteItem.
    pub only_newer_by: Option<String>,
    /// Retries of failed requests (throttling, timeouts, 5xx). Unprocessed items of a batch are
    /// retried with this backoff until written.
    #[serde(default)]
    pub retry: RetryPolicy,
}

fn default_op_field() -> String {
    "__op".into()
}

impl DynamoSinkConfig {
    /// The item format, `json` unless set.
    pub fn item_format(&self) -> ItemFormat {
        self.item_format.unwrap_or_default()
    }

    pub fn check(&self) -> Vec<ConfigIssue> {
        let mut issues = self.aws.timeouts.check("aws");
        if self.item_format() == ItemFormat::DynamodbJson {
            if !self.binary_fields.is_empty() {
                issues.push(ConfigIssue::new(
                    "binary_fields",
                    "binary_fields applies to plain JSON; DynamoDB-JSON says `B` itself",
                ));
            }
            if !self.sets.is_empty() {
                issues.push(ConfigIssue::new(
                    "sets",
                    "sets applies to plain JSON; DynamoDB-JSON says `SS`/`NS` itself",
                ));
            }
        }
        if let Some(g) = &self.only_newer_by
            && !self.include_metadata.contains_key(g)
        {
            issues.push(ConfigIssue::new(
                "only_newer_by",
                format!(
                    "`{g}` must also be stored: add it to include_metadata (e.g. `{g}: {}`)",
                    g.replace('-', "_")
                ),
            ));
        }
        let mut attrs: Vec<&String> = self.include_metadata.values().collect();
        attrs.sort();
        if attrs.windows(2).any(|w| w[0] == w[1]) {
            issues.push(ConfigIssue::new(
                "include_metadata",
                "two metadata entries are stored in the same attribute",
            ));
        }
        issues
    }
}

/// What the source reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceMode {
    /// The table's items, once, with a parallel Scan; the source ends when every segment is read.
    #[default]
    Snapshot,
    /// Changes from the table's DynamoDB Stream, without end.
    Cdc,
    /// Records the time, scans the table, then reads the stream from that time, so nothing
    /// written during the scan is lost.
    SnapshotThenCdc,
}

/// Where a stream is first read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StreamStart {
    /// The oldest record still in the stream (24 hours back).
    #[default]
    TrimHorizon,
    /// Only changes made after the source starts.
    Latest,
}

/// Reads a DynamoDB table: a snapshot (parallel Scan), its change stream (DynamoDB Streams), or
/// both. Snapshot records are the items as JSON; stream records are
/// `{"event", "keys", "new", "old", "sequence_number", "approximate_creation_time"}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DynamoSourceConfig {
    /// The table to read.
    #[schemars(length(min = 3, max = 255))]
    pub table: String,
    /// How to reach DynamoDB and DynamoDB Streams (one `endpoint` serves both).
    #[serde(default)]
    pub aws: AwsConfig,
    /// Snapshot, change stream, or both.
    #[serde(default)]
    pub mode: SourceMode,
    /// Parallel Scan segments; each is a partition (`scan-<i>-of-<n>`) whose offset is the key
    /// of the last item delivered. Changing it starts the snapshot over.
    #[serde(default = "int::<u32, 4>")]
    #[schemars(range(min = 1, max = 1000))]
    pub segments: u32,
    /// Items per Scan page.
    #[serde(default = "int::<u32, 1000>")]
    #[schemars(range(min = 1, max = 10000))]
    pub page_size: u32,
    /// Read capacity units per second the whole scan may consume (from `ConsumedCapacity`).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub rate_limit: Option<f64>,
    /// Strongly consistent Scan reads (twice the read capacity).
    #[serde(default)]
    pub consistent_read: bool,
    /// Where a stream shard with no committed offset is first read (`cdc` mode).
    #[serde(default)]
    pub start_position: StreamStart,
    /// How items and images are written: plain JSON or DynamoDB-JSON. Default: `json`, which
    /// loses attribute types (a string set becomes a list, binary becomes base64 text);
    /// `dynamodb_json` keeps them.
    pub item_format: Option<ItemFormat>,
    /// Wait between GetRecords calls on a shard that returned nothing.
    #[serde(default = "secs::<1>")]
    pub poll_interval: Dur,
    /// How often the stream is described to find new shards.
    #[serde(default = "secs::<10>")]
    pub shard_discovery_interval: Dur,
    /// Retries of failed calls (throttling, timeouts, 5xx).
    #[serde(default)]
    pub retry: RetryPolicy,
}

impl DynamoSourceConfig {
    /// The item format, `json` unless set.
    pub fn item_format(&self) -> ItemFormat {
        self.item_format.unwrap_or_default()
    }

    pub fn check(&self) -> Vec<ConfigIssue> {
        let mut issues = self.aws.timeouts.check("aws");
        if self.mode == SourceMode::SnapshotThenCdc && self.start_position == StreamStart::Latest {
            issues.push(ConfigIssue::new(
                "start_position",
                "snapshot_then_cdc reads the stream from the time the snapshot started; start_position applies to `cdc` only",
            ));
        }
        // A timer period: `tokio::time::interval` panics on zero.
        if self.shard_discovery_interval.0.is_zero() {
            issues.push(ConfigIssue::new(
                "shard_discovery_interval",
                "must be longer than 0s",
            ));
        }
        issues
    }
}

/// Checks a DynamoDB → DynamoDB pipeline (paths relative to the spec's root). Plain JSON cannot
/// say that an array was a string set or that a string was binary, so a copy made through it
/// differs from its source; both ends must use `dynamodb_json`, or say `json` explicitly at
/// both to accept that.
pub fn check_table_to_table(
    source: &DynamoSourceConfig,
    sink: &DynamoSinkConfig,
) -> Vec<ConfigIssue> {
    let (from, to) = (source.item_format(), sink.item_format());
    if from != to {
        let name = |f: ItemFormat| match f {
            ItemFormat::Json => "json",
            ItemFormat::DynamodbJson => "dynamodb_json",
        };
        return vec![ConfigIssue::new(
            "sink/item_format",
            format!(
                "the source writes items as `{}` but the sink reads `{}`: set `item_format: dynamodb_json` on both",
                name(from),
                name(to)
            ),
        )];
    }
    if from == ItemFormat::Json && (source.item_format.is_none() || sink.item_format.is_none()) {
        return vec![ConfigIssue::new(
            "sink/item_format",
            "copying DynamoDB items through plain JSON loses their types (string and number sets become lists, binary becomes base64 text): set `item_format: dynamodb_json` on both the source and the sink (or `item_format: json` on both to accept that)",
        )];
    }
    Vec::new()
}
