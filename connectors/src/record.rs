//! What moves through a pipeline: records, their source position and metadata.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A source partition: a Kinesis or DynamoDB Streams shard, a Kafka topic-partition, a file.
pub type PartitionId = Arc<str>;

/// Read-only metadata a source attaches to a record (`shard-id`, `sequence-number`, `topic`, ...).
pub type Metadata = Vec<(Cow<'static, str>, String)>;

/// A position inside one source partition, as the source writes it (a line number, a Kinesis
/// sequence number, a Kafka offset). The runtime never interprets it; it only stores the offset of
/// the last record it delivered, and the source resumes *after* it.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Offset(pub String);

impl Offset {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<u64> for Offset {
    fn from(n: u64) -> Self {
        // itoa: a line or record number per record, without core::fmt.
        Self(itoa::Buffer::new().format(n).to_owned())
    }
}

/// `n` as 32 lowercase hex digits, like `format!("{n:032x}")` at a tenth of its cost: a random
/// partition key (the `random` partitioner, an unkeyed Kinesis record) per record.
pub fn hex32(n: u128) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(32);
    for i in (0..32).rev() {
        hex.push(char::from(DIGITS[((n >> (i * 4)) & 0xf) as usize]));
    }
    hex
}

impl From<&str> for Offset {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// One record with its source position.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub headers: Vec<(String, Bytes)>,
    /// Milliseconds since the Unix epoch.
    pub timestamp: Option<i64>,
    /// Source metadata; read-only for transforms.
    pub meta: Metadata,
    /// The source partition this record was read from.
    pub partition: PartitionId,
    /// The record's position in its partition.
    pub offset: Offset,
}

impl Record {
    /// A record with just a value, at `offset` of `partition`.
    pub fn new(partition: PartitionId, offset: Offset, value: impl Into<Bytes>) -> Self {
        Self {
            key: None,
            value: value.into(),
            headers: Vec::new(),
            timestamp: None,
            meta: Vec::new(),
            partition,
            offset,
        }
    }

    /// The value of a metadata entry.
    pub fn meta(&self, name: &str) -> Option<&str> {
        self.meta
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A copy of this record's position and metadata with new contents: what a transform's
    /// output record inherits from its input.
    pub fn derive(&self, value: Bytes) -> Self {
        Self {
            key: self.key.clone(),
            value,
            headers: self.headers.clone(),
            timestamp: self.timestamp,
            meta: self.meta.clone(),
            partition: self.partition.clone(),
            offset: self.offset.clone(),
        }
    }
}

/// Where the partitioner sends a record in a partitioned sink.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Route {
    /// A partition key (Kinesis partition key, Kafka message key when the sink uses it).
    pub key: Option<String>,
    /// An explicit partition index in `0..partition_count`.
    pub index: Option<u32>,
    /// A Kinesis explicit hash key (a decimal 128-bit integer).
    pub explicit_hash_key: Option<String>,
}
