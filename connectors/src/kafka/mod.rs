//! Kafka: the `kafka` source (a consumer-group member; partition `topic/partition`, offset the
//! Kafka offset), the `kafka` sink (an idempotent producer whose delivery reports are the acks),
//! and [`OffsetLog`], the compacted topic behind the Kafka offset store.
//!
//! Built on librdkafka (rdkafka, vendored and built with cmake).

mod client;
mod config;
mod log;
mod sink;
mod source;

pub use client::{TopicState, is_retriable};
pub use config::{
    Acks, Compression, CreateTopic, FieldRef, KafkaSinkConfig, KafkaSourceConfig, KeyFrom,
    PartitionBy, Properties, StartAt, is_secret_property,
};
pub use log::{OffsetLog, OffsetLogConfig};
pub use sink::KafkaSink;
pub use source::{KafkaSource, parse_partition_id, partition_id};
