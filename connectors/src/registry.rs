//! Every source and sink a spec can name, in one place. Adding a connector adds one line to each
//! `registry!` it implements (its `type:` name is written there only) and one arm to the
//! `check`/`build` `match`es below (the compiler lists them).

use schemars::JsonSchema;
use serde::Deserialize;

use crate::api::{LagProbe, Sink, Source};
use crate::error::ConnectorError;
use crate::{ConfigIssue, discard, dynamodb, file, generator, kafka, kinesis, stdio};

/// Declares a `type:`-tagged choice of connectors: each line is the `type:` name (written only
/// here), the variant and its config. Generates the enum and `kind()`.
macro_rules! registry {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $tag:literal => $variant:ident($config:ty), )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Deserialize, JsonSchema)]
        #[serde(tag = "type")]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $tag)] $variant($config), )*
        }

        impl $name {
            /// Every connector's name as written in `type:`.
            pub const KINDS: &[&str] = &[$($tag),*];

            /// The connector's name as written in `type:`.
            pub fn kind(&self) -> &'static str {
                match self {
                    $( Self::$variant(_) => $tag, )*
                }
            }
        }
    };
}

registry! {
    /// Where records come from. `type:` picks the connector.
    pub enum SourceConfig {
        /// Deterministic `user_behavior` records, for demos, tests and benchmarks.
        "generator" => Generator(generator::GeneratorConfig),
        /// Lines of one or more files.
        "file" => File(file::FileSourceConfig),
        /// Lines of standard input.
        "stdin" => Stdin(stdio::StdinConfig),
        /// A DynamoDB table: a parallel-Scan snapshot, its DynamoDB Stream, or both.
        "dynamodb" => Dynamodb(dynamodb::DynamoSourceConfig),
        /// Kafka topics, read as a member of a consumer group.
        "kafka" => Kafka(kafka::KafkaSourceConfig),
        /// A Kinesis data stream, shard by shard (polling or enhanced fan-out).
        "kinesis" => Kinesis(kinesis::KinesisSourceConfig),
    }
}

registry! {
    /// Where records go. `type:` picks the connector.
    pub enum SinkConfig {
        /// Appends records to a file, one per line.
        "file" => File(file::FileSinkConfig),
        /// Writes records to standard output, one per line.
        "stdout" => Stdout(stdio::StdoutConfig),
        /// A DynamoDB table, written with BatchWriteItem (puts and deletes).
        "dynamodb" => Dynamodb(dynamodb::DynamoSinkConfig),
        /// Discards records (benchmarks, dry runs).
        "discard" => Discard(discard::DiscardConfig),
        /// A Kafka topic, through an idempotent producer.
        "kafka" => Kafka(kafka::KafkaSinkConfig),
        /// A Kinesis data stream, written with PutRecords.
        "kinesis" => Kinesis(kinesis::KinesisSinkConfig),
    }
}

impl SourceConfig {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The `type:` values the generated schema accepts, in order.
    fn schema_tags(schema: schemars::Schema) -> Vec<String> {
        let v = serde_json::to_value(schema).unwrap();
        v["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                let t = &b["properties"]["type"];
                t.get("const")
                    .or_else(|| t["enum"].get(0))
                    .and_then(|x| x.as_str())
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn kind_is_the_type_tag_of_every_source_and_sink() {
        assert_eq!(
            schema_tags(schemars::schema_for!(SourceConfig)),
            SourceConfig::KINDS
        );
        assert_eq!(
            schema_tags(schemars::schema_for!(SinkConfig)),
            SinkConfig::KINDS
        );
        let s: SourceConfig = serde_json::from_str(r#"{"type": "stdin"}"#).unwrap();
        assert_eq!(s.kind(), "stdin");
        let s: SinkConfig = serde_json::from_str(r#"{"type": "discard"}"#).unwrap();
        assert_eq!(s.kind(), "discard");
    }
}
