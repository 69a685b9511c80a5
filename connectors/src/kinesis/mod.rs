//! The `kinesis` source and sink (Amazon Kinesis Data Streams).
//!
//! - [`config`]: spec options (Flink's names and defaults where Flink has the option).
//! - [`source`]: shard discovery and lineage, one reader task per shard ([`polling`] GetRecords
//!   or [`efo`] SubscribeToShard), KPL de-aggregation, offsets `<seq>` or `<seq>:<sub>`.
//! - [`probe`]: the lag of a paused pipeline's shards, from their committed offsets.
//! - [`responses`]: GetRecords and PutRecords responses read faster than the SDK's generic reader.
//! - [`sink`]: PutRecords batches with bounded concurrency, partial-failure retries, optional
//!   KPL aggregation ([`aggregation`]).

pub mod aggregation;
mod config;
mod efo;
mod polling;
mod probe;
mod records;
mod responses;
mod sink;
mod source;

#[cfg(test)]
mod tests;

pub use config::{
    KinesisSinkConfig, KinesisSourceConfig, ReaderKind, Registration, SinkRetries, SourceRetries,
    StartPosition, parse_timestamp,
};
pub use probe::ShardLagProbe;
pub use sink::KinesisSink;
pub use source::KinesisSource;

use aws_sdk_kinesis::Client;

use crate::aws::AwsConfig;
use crate::error::ConnectorError;

/// A stream as the spec names it: by name, or by ARN (which also gives the name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRef {
    pub name: String,
    pub arn: Option<String>,
}

impl StreamRef {
    /// `my-stream` or `arn:aws:kinesis:us-east-1:123456789012:stream/my-stream`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("arn:") {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            let name = match parts.as_slice() {
                [_, "kinesis", _, _, res] => res.strip_prefix("stream/"),
                _ => None,
            };
            return match name {
                Some(n) if valid_name(n) => Ok(Self {
                    name: n.to_string(),
                    arn: Some(s.to_string()),
                }),
                _ => Err(format!(
                    "`{s}` is not a Kinesis stream ARN (arn:aws:kinesis:REGION:ACCOUNT:stream/NAME)"
                )),
            };
        }
        if valid_name(s) {
            Ok(Self {
                name: s.to_string(),
                arn: None,
            })
        } else {
            Err(format!(
                "`{s}` is not a stream name (1-128 letters, digits, `_`, `-`, `.`) or ARN"
            ))
        }
    }

    /// The name, when requests should carry the name (no ARN given).
    pub fn name_param(&self) -> Option<String> {
        self.arn.is_none().then(|| self.name.clone())
    }

    /// The ARN, when the spec gave one.
    pub fn arn_param(&self) -> Option<String> {
        self.arn.clone()
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// A shard of a stream, as ListShards describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedShard {
    pub id: String,
    /// The sequence number the shard starts at.
    pub first: String,
}

/// The shards a stream still holds (ListShards, every page), reached with a source's `aws`
/// settings and `retries.list_shards`.
pub async fn shards_of(cfg: &KinesisSourceConfig) -> Result<Vec<ListedShard>, ConnectorError> {
    let stream = StreamRef::parse(&cfg.stream)
        .map_err(|m| ConnectorError::fatal(format!("kinesis source: {m}")))?;
    let c = client(&cfg.aws).await?;
    let shards = source::list_shards(&c, &stream, &cfg.retries.list_shards, "source").await?;
    Ok(shards
        .iter()
        .map(|s| ListedShard {
            id: s.shard_id().to_string(),
            first: s
                .sequence_number_range()
                .map(|r| r.starting_sequence_number().to_string())
                .unwrap_or_default(),
        })
        .collect())
}

/// A Kinesis client for the spec's `aws` settings.
pub async fn client(aws: &AwsConfig) -> Result<Client, ConnectorError> {
    let sdk = aws.sdk_config_without_sdk_retries().await?;
    Ok(Client::new(&sdk))
}

/// Where a Kinesis call happens, for [`ConnectorError::call`]: the role, the stream and the
/// shard (if any).
pub(crate) fn at(role: &str, stream: &str, shard: Option<&str>) -> String {
    match shard {
        Some(s) => format!("kinesis {role}: stream {stream} shard {s}"),
        None => format!("kinesis {role}: stream {stream}"),
    }
}
