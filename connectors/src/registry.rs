//! Every source and sink a spec can name, in one place. Adding a connector adds one line to each
//! enum it implements (and one arm to the `match`es below).

use schemars::JsonSchema;
use serde::Deserialize;

use crate::api::{LagProbe, Sink, Source};
use crate::error::ConnectorError;
use crate::{ConfigIssue, discard, dynamodb, file, generator, kafka, kinesis, stdio};

/// Where records come from. `type:` picks the connector.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceConfig {
    /// Deterministic `user_behavior` records, for demos, tests and benchmarks.
    Generator(generator::GeneratorConfig),
    /// Lines of one or more files.
    File(file::FileSourceConfig),
    /// Lines of standard input.
    Stdin(stdio::StdinConfig),
    /// A DynamoDB table: a parallel-Scan snapshot, its DynamoDB Stream, or both.
    Dynamodb(dynamodb::DynamoSourceConfig),
    /// Kafka topics, read as a member of a consumer group.
    Kafka(kafka::KafkaSourceConfig),
    /// A Kinesis data stream, shard by shard (polling or enhanced fan-out).
    Kinesis(kinesis::KinesisSourceConfig),
}

/// Where records go. `type:` picks the connector.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SinkConfig {
    /// Appends records to a file, one per line.
    File(file::FileSinkConfig),
    /// Writes records to standard output, one per line.
    Stdout(stdio::StdoutConfig),
    /// A DynamoDB table, written with BatchWriteItem (puts and deletes).
    Dynamodb(dynamodb::DynamoSinkConfig),
    /// Discards records (benchmarks, dry runs).
    Discard(discard::DiscardConfig),
    /// A Kafka topic, through an idempotent producer.
    Kafka(kafka::KafkaSinkConfig),
    /// A Kinesis data stream, written with PutRecords.
    Kinesis(kinesis::KinesisSinkConfig),
}

impl SourceConfig {
    /// The connector's name as written in `type:`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Generator(_) => "generator",
            Self::File(_) => "file",
            Self::Stdin(_) => "stdin",
            Self::Dynamodb(_) => "dynamodb",
            Self::Kafka(_) => "kafka",
            Self::Kinesis(_) => "kinesis",
        }
    }

    /// Checks beyond the schema, without I/O.
    pub fn check(&self) -> Vec<ConfigIssue> {
        match self {
            Self::Generator(c) => c.check(),
            Self::File(c) => c.check(),
            Self::Stdin(_) => Vec::new(),
            Self::Dynamodb(c) => c.check(),
            Self::Kafka(c) => c.check(),
            Self::Kinesis(c) => c.check(),
        }
    }

    /// Why this source cannot run with `sluice run --until-caught-up`, if it cannot: it has no
    /// tip to stop at. Kinesis, DynamoDB Streams and Kafka stop at the tip each partition had
    /// when the run started; files and snapshots end at their end anyway; a generator with a
    /// `count` ends after it.
    pub fn until_caught_up_issue(&self) -> Option<ConfigIssue> {
        match self {
            Self::Generator(c) if c.count.is_none() => Some(ConfigIssue::new(
                "type",
                "--until-caught-up needs a source with a tip to stop at: this generator is endless; give it a `count`",
            )),
            Self::Stdin(_) => Some(ConfigIssue::new(
                "type",
                "--until-caught-up needs a source with a tip to stop at: standard input has none (it ends when its writer closes it); run without --until-caught-up, or read a file",
            )),
            Self::Generator(_)
            | Self::File(_)
            | Self::Dynamodb(_)
            | Self::Kafka(_)
            | Self::Kinesis(_) => None,
        }
    }

    /// What keeps the source's lag current while its pipeline is paused, for sources that can
    /// tell it without reading (Kinesis). `None` for the others: their lag stays as last
    /// reported.
    pub async fn lag_probe(&self) -> Option<Box<dyn LagProbe>> {
        match self {
            Self::Kinesis(c) => match kinesis::ShardLagProbe::connect(c.clone()).await {
                Ok(p) => Some(Box::new(p)),
                Err(e) => {
                    tracing::warn!(stream = %c.stream, error = %e, "kinesis source: cannot watch the lag while paused");
                    None
                }
            },
            Self::Generator(_)
            | Self::File(_)
            | Self::Stdin(_)
            | Self::Dynamodb(_)
            | Self::Kafka(_) => None,
        }
    }

    /// Builds the source (may connect to its system).
    pub async fn build(&self) -> Result<Box<dyn Source>, ConnectorError> {
        Ok(match self {
            Self::Generator(c) => Box::new(generator::GeneratorSource::new(c.clone())),
            Self::File(c) => Box::new(file::FileSource::new(c.clone())?),
            Self::Stdin(c) => Box::new(stdio::StdinSource::new(c.clone())),
            Self::Dynamodb(c) => Box::new(dynamodb::DynamoSource::new(c.clone()).await?),
            Self::Kafka(c) => Box::new(kafka::KafkaSource::new(c.clone())),
            Self::Kinesis(c) => Box::new(kinesis::KinesisSource::connect(c.clone()).await?),
        })
    }
}

/// Checks of a source and sink together, without I/O (paths relative to the spec's root).
pub fn check_pair(source: &SourceConfig, sink: &SinkConfig) -> Vec<ConfigIssue> {
    match (source, sink) {
        (SourceConfig::Dynamodb(from), SinkConfig::Dynamodb(to)) => {
            dynamodb::check_table_to_table(from, to)
        }
        _ => Vec::new(),
    }
}

impl SinkConfig {
    /// The connector's name as written in `type:`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::File(_) => "file",
            Self::Stdout(_) => "stdout",
            Self::Dynamodb(_) => "dynamodb",
            Self::Discard(_) => "discard",
            Self::Kafka(_) => "kafka",
            Self::Kinesis(_) => "kinesis",
        }
    }

    /// Where records go, for people: `file out/clicks.jsonl`.
    pub fn target(&self) -> String {
        match self {
            Self::File(c) => format!("file {}", c.path.display()),
            Self::Stdout(_) => "stdout".into(),
            Self::Dynamodb(c) => format!("dynamodb table {}", c.table),
            Self::Discard(_) => "discard (records dropped)".into(),
            Self::Kafka(c) => format!("kafka topic {}", c.topic),
            Self::Kinesis(c) => format!("kinesis stream {}", c.stream),
        }
    }

    /// Checks beyond the schema, without I/O.
    pub fn check(&self) -> Vec<ConfigIssue> {
        match self {
            Self::File(c) => c.check(),
            Self::Dynamodb(c) => c.check(),
            Self::Stdout(_) | Self::Discard(_) => Vec::new(),
            Self::Kafka(c) => c.check(),
            Self::Kinesis(c) => c.check(),
        }
    }

    /// Builds the sink (may connect to its system).
    pub async fn build(&self) -> Result<Box<dyn Sink>, ConnectorError> {
        Ok(match self {
            Self::File(c) => Box::new(file::FileSink::open(c).await?),
            Self::Stdout(c) => Box::new(stdio::StdoutSink::new(c.clone())),
            Self::Dynamodb(c) => Box::new(dynamodb::DynamoSink::new(c.clone()).await?),
            Self::Discard(_) => Box::new(discard::DiscardSink),
            Self::Kafka(c) => Box::new(kafka::KafkaSink::connect(c).await?),
            Self::Kinesis(c) => Box::new(kinesis::KinesisSink::connect(c.clone()).await?),
        })
    }
}
