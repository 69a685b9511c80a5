//! The connector spec: what a YAML spec file holds.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize};
use sluice_connectors::aws::CredentialsConfig;
use sluice_connectors::kafka::Properties;
use sluice_connectors::{SinkConfig, SourceConfig};

use crate::spec::plugin::PluginSpec;
use crate::spec::units::Dur;
use sluice_connectors::units::{millis, secs};

/// A Sluice connector spec: one pipeline from a source, through an optional format, transforms
/// and a partitioner, into a sink.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Sluice connector spec")]
pub struct Spec {
    /// Version of the spec format. Always `1`.
    pub version: SpecVersion,
    /// The pipeline's name: it namespaces the pipeline's offsets, so renaming a pipeline starts
    /// it from scratch. Letters, digits, `.`, `_` and `-`.
    #[schemars(extend("pattern" = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"))]
    pub name: String,
    /// Where records come from.
    pub source: SourceConfig,
    /// How source bytes become the pipeline's JSON (`decode`) and JSON becomes sink bytes
    /// (`encode`). Omit to pass bytes through unchanged.
    pub format: Option<FormatSpec>,
    /// Transforms, applied in order: jq programs run natively (`jq: <program>`) or WebAssembly
    /// transform plugins (`wasm: <path>`).
    #[serde(default)]
    pub transforms: Vec<TransformSpec>,
    /// How records are spread over the sink's partitions.
    #[serde(default)]
    pub partitioner: PartitionerSpec,
    /// Where records go.
    pub sink: SinkConfig,
    /// Where progress is stored. Default: the `file` store under `.sluice/offsets` in the spec
    /// file's folder.
    #[serde(default)]
    pub offsets: OffsetsSpec,
    /// What happens to a record that cannot be processed.
    #[serde(default)]
    pub errors: ErrorsSpec,
    /// Tuning of the pipeline's internal batching and buffering.
    #[serde(default)]
    pub pipeline: PipelineOptions,
    /// What `sluice run` does when the pipeline fails. Default: retriable failures (a broker or
    /// endpoint unreachable, a lost connection, commits failing for too long) rebuild it from its
    /// committed offsets, forever, with backoff up to 1 minute; fatal ones (bad config, fenced
    /// offsets, a bad record with `errors.tolerance: none`) stop it for good.
    #[serde(default)]
    pub restart: RestartSpec,
}

/// The restart policy of a pipeline.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RestartSpec {
    /// Restarts after retriable failures before the pipeline fails for good. Omit for no limit;
    /// `0` never restarts.
    pub attempts: Option<u32>,
    /// Wait before the first restart; each further one waits twice as long (with jitter).
    pub initial_backoff: Dur,
    /// Longest wait between restarts.
    pub max_backoff: Dur,
}

impl Default for RestartSpec {
    fn default() -> Self {
        Self {
            attempts: None,
            initial_backoff: secs::<1>(),
            max_backoff: secs::<60>(),
        }
    }
}

impl Spec {
    /// Makes every relative path in the spec relative to `base` (the spec file's folder), so a
    /// spec means the same files whatever the working directory: the file source's patterns,
    /// the file sink, the file offset store, the dead-letter file, AWS credential files and
    /// librdkafka's SSL/Kerberos files. (Plugin paths are resolved against the same folder when
    /// the plugins are loaded.)
    pub fn resolve_paths(&mut self, base: &Path) {
        // A spec in the working directory needs no change (and keeps its paths short in logs).
        let here = base.as_os_str().is_empty() || base == Path::new(".");
        let resolve = |p: &mut PathBuf| {
            if !here && p.is_relative() && !p.as_os_str().is_empty() && p != Path::new("-") {
                *p = base.join(&*p);
            }
        };
        match &mut self.source {
            SourceConfig::File(f) => f.root = base.to_path_buf(),
            SourceConfig::Kafka(k) => resolve_kafka_files(&mut k.properties, &resolve),
            SourceConfig::Kinesis(k) => resolve_aws_files(&mut k.aws.credentials, &resolve),
            SourceConfig::Dynamodb(d) => resolve_aws_files(&mut d.aws.credentials, &resolve),
            SourceConfig::Generator(_) | SourceConfig::Stdin(_) => {}
        }
        match &mut self.sink {
            SinkConfig::File(f) => resolve(&mut f.path),
            SinkConfig::Kafka(k) => resolve_kafka_files(&mut k.properties, &resolve),
            SinkConfig::Kinesis(k) => resolve_aws_files(&mut k.aws.credentials, &resolve),
            SinkConfig::Dynamodb(d) => resolve_aws_files(&mut d.aws.credentials, &resolve),
            SinkConfig::Stdout(_) | SinkConfig::Discard(_) => {}
        }
        match &mut self.offsets {
            OffsetsSpec::File(f) => resolve(&mut f.path),
            OffsetsSpec::Kafka(k) => resolve_kafka_files(&mut k.properties, &resolve),
            OffsetsSpec::Dynamodb(d) => resolve_aws_files(&mut d.aws.credentials, &resolve),
            OffsetsSpec::Memory(_) => {}
        }
        let dead_letter = self.errors.dead_letter.get_or_insert_with(|| {
            DeadLetterSpec::File(DeadLetterFile {
                path: PathBuf::from(format!(".sluice/dead-letter/{}.jsonl", self.name)),
            })
        });
        match dead_letter {
            DeadLetterSpec::File(f) => resolve(&mut f.path),
        }
    }
}

/// Files named in AWS credentials (a profile's credentials file, a web identity token).
fn resolve_aws_files(c: &mut CredentialsConfig, resolve: &dyn Fn(&mut PathBuf)) {
    match c {
        CredentialsConfig::Profile { path: Some(p), .. } => resolve(p),
        CredentialsConfig::WebIdentity { token_file, .. } => resolve(token_file),
        CredentialsConfig::AssumeRole { source, .. } => resolve_aws_files(source, resolve),
        _ => {}
    }
}

/// librdkafka properties that name files: `ssl.*.location` (except the special
/// `ssl.ca.location: probe`) and `sasl.kerberos.keytab`.
fn resolve_kafka_files(props: &mut Properties, resolve: &dyn Fn(&mut PathBuf)) {
    for (k, v) in props.0.iter_mut() {
        let names_a_file = (k.starts_with("ssl.") && k.ends_with(".location") && v != "probe")
            || k == "sasl.kerberos.keytab";
        if names_a_file {
            let mut p = PathBuf::from(&*v);
            resolve(&mut p);
            *v = p.to_string_lossy().into_owned();
        }
    }
}

/// The spec format version (only `1` exists).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecVersion;

impl<'de> Deserialize<'de> for SpecVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u64::deserialize(d)? {
            1 => Ok(SpecVersion),
            v => Err(serde::de::Error::custom(format!(
                "unsupported spec version {v}; this Sluice reads version 1"
            ))),
        }
    }
}

impl JsonSchema for SpecVersion {
    fn schema_name() -> Cow<'static, str> {
        "SpecVersion".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "integer", "const": 1 })
    }
}

/// Decoding of source bytes and encoding of sink bytes.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FormatSpec {
    /// How source record values are read: `json` (validated), `csv` (a line to a JSON object),
    /// `raw` (unchanged), or a wasm format plugin.
    pub decode: Option<FormatChoice>,
    /// How values are written to the sink: `json`, `csv` (a JSON object to a line), `raw`, or a
    /// wasm format plugin.
    pub encode: Option<FormatChoice>,
    /// Options of the `csv` format (needed when `decode` or `encode` is `csv`).
    pub csv: Option<CsvOptions>,
}

/// One transform: a jq program or a wasm transform plugin.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum TransformSpec {
    /// A jq program run natively on each JSON record.
    Jq(JqSpec),
    /// A WebAssembly transform plugin.
    Wasm(PluginSpec),
}

/// A jq program (the jq language as jaq implements it) run on each JSON record. Its outputs
/// replace the record: none drops it, several make several records; a runtime error sends the
/// record to the error policy with jq's message. The record's envelope is `$meta`: `key`,
/// `timestamp` (ms), `headers`, `metadata` (source metadata such as `shard-id`), `partition`,
/// `offset`. Needs JSON records, so the spec must have `format.decode`. The process environment
/// (`env`, `$ENV`) is not available: it holds credentials. Each record may yield at most 10,000
/// outputs.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JqSpec {
    /// The program, e.g. `.email = "***"` or `select(.type == "click")`.
    #[schemars(length(min = 1))]
    pub jq: String,
    /// What each output is: `value` (the new record value; key, timestamp and headers are kept)
    /// or `envelope` (an object `{value, key?, timestamp?, headers?}`: a field left out keeps the
    /// input's, `null` removes it; `headers` replaces all headers).
    #[serde(default)]
    pub output: JqOutput,
}

/// What each output of a jq program is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JqOutput {
    /// The record's new value.
    #[default]
    Value,
    /// `{value, key?, timestamp?, headers?}`.
    Envelope,
}

/// A built-in format or a wasm format plugin.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum FormatChoice {
    Builtin(BuiltinFormat),
    Wasm(PluginSpec),
}

/// A built-in format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BuiltinFormat {
    /// JSON values, checked to be well-formed.
    Json,
    /// Delimited text lines, read as JSON objects keyed by `csv.columns`.
    Csv,
    /// Bytes passed through unchanged.
    Raw,
}

/// Options of the `csv` format.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    /// Column names, in order: the JSON object's keys.
    #[schemars(length(min = 1))]
    pub columns: Vec<String>,
    /// The field delimiter, one ASCII character.
    #[serde(default = "default_delimiter")]
    #[schemars(length(min = 1, max = 1))]
    pub delimiter: String,
    /// Line 1 of each file (or of stdin) is a header row to skip when decoding, whatever it says;
    /// only for the `file` and `stdin` sources.
    #[serde(default)]
    pub header: bool,
}

fn default_delimiter() -> String {
    ",".into()
}

/// How records are spread over the sink's partitions.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum PartitionerSpec {
    /// `random` (a random key per record) or `fixed` (the source partition's id as the key, so
    /// one source partition maps to one sink partition).
    Builtin(BuiltinPartitioner),
    /// The key is the listed JSON fields joined by `delimiter` (Flink's PARTITION BY rule).
    Fields(FieldsPartitioner),
    /// A wasm partitioner plugin.
    Wasm(PluginSpec),
}

impl Default for PartitionerSpec {
    fn default() -> Self {
        Self::Builtin(BuiltinPartitioner::Random)
    }
}

/// A built-in partitioner without options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BuiltinPartitioner {
    Random,
    Fixed,
}

/// Partition by JSON fields.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldsPartitioner {
    /// Top-level JSON fields whose values make the partition key, in order.
    #[schemars(length(min = 1))]
    pub fields: Vec<String>,
    /// Joins the fields' values.
    #[serde(default = "default_key_delimiter")]
    pub delimiter: String,
}

fn default_key_delimiter() -> String {
    "|".into()
}

pub use crate::offsets::leases::LeaseSpec;
pub use crate::offsets::{DynamoStoreSpec, FileStoreSpec, KafkaStoreSpec, MemoryStoreSpec};

/// Where the pipeline's offsets are stored.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(tag = "store", rename_all = "snake_case")]
pub enum OffsetsSpec {
    /// In memory only: a restart starts over. For tests and one-off runs.
    Memory(MemoryStoreSpec),
    /// A local folder with one JSON file per pipeline (atomic write-then-rename, fsynced).
    File(FileStoreSpec),
    /// A compacted Kafka topic, one record per pipeline partition (Kafka Connect's model):
    /// shared by every worker that reaches the brokers.
    Kafka(KafkaStoreSpec),
    /// A DynamoDB table, one item per pipeline partition, written with conditional updates so a
    /// stale worker never moves an offset back; shared by every worker that reaches the table.
    Dynamodb(DynamoStoreSpec),
}

impl Default for OffsetsSpec {
    fn default() -> Self {
        Self::File(FileStoreSpec {
            path: crate::offsets::default_offsets_path(),
            commit_interval: crate::offsets::default_commit_interval(),
        })
    }
}

impl OffsetsSpec {
    pub fn commit_interval(&self) -> Duration {
        match self {
            Self::Memory(s) => s.commit_interval.0,
            Self::File(s) => s.commit_interval.0,
            Self::Kafka(s) => s.commit_interval.0,
            Self::Dynamodb(s) => s.commit_interval.0,
        }
    }
}

/// The error policy for bad records.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorsSpec {
    /// `none`: stop at the first bad record, committing nothing past it. `all`: send bad records
    /// to the dead-letter file and go on.
    #[serde(default)]
    pub tolerance: Tolerance,
    /// Where bad records go with `tolerance: all`. Default: `.sluice/dead-letter/<name>.jsonl`
    /// in the spec file's folder.
    pub dead_letter: Option<DeadLetterSpec>,
}

/// How many bad records a pipeline tolerates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Tolerance {
    #[default]
    None,
    All,
}

/// A dead-letter destination.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DeadLetterSpec {
    /// A JSON-lines file: one entry per bad record, with the error, the stage and the record.
    File(DeadLetterFile),
}

/// A dead-letter file.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterFile {
    /// The file to append to, relative to the spec file's folder. A torn last line left by a
    /// crash (no final newline) is cut off when the file is opened.
    pub path: PathBuf,
}

/// Tuning of the pipeline.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineOptions {
    /// Batches buffered between stages before the source is slowed down (backpressure): between
    /// the source and processing, for each processing worker, and before the sink.
    #[schemars(range(min = 1, max = 1024))]
    pub channel_capacity: usize,
    /// Records the sink may hold unflushed before the pipeline flushes it.
    #[schemars(range(min = 1))]
    pub max_buffered: usize,
    /// Longest time records wait in the sink's buffer before a flush.
    pub flush_interval: Dur,
    /// Threads that decode, transform, partition and encode, each with its own instances of the
    /// stages (a wasm plugin's memory limit holds per instance). A source partition always goes
    /// to the same worker, so each partition's records reach the sink in order. Default: one per
    /// core.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub workers: Option<usize>,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            channel_capacity: 8,
            max_buffered: 10_000,
            flush_interval: millis::<500>(),
            workers: None,
        }
    }
}
