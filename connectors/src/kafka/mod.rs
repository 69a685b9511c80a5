//! Kafka: the `kafka` source (a consumer-group member; partition `topic/partition`, offset the
//! Kafka offset), the `kafka` sink (an idempotent producer whose delivery reports are the acks),
//! and [`OffsetLog`], the compacted topic behind the Kafka offset store.
//!
//! Built on librdkafka (rdkafka, vendored and built with cmake).

mod client;
mod config;
mod group;
mod offset_log;
mod properties;
mod sink;
mod source;
mod tips;
mod txn;

pub use client::TopicState;
pub use config::{
    Acks, Compression, CreateTopic, FieldRef, KafkaSinkConfig, KafkaSourceConfig, KeyFrom,
    PartitionBy, Properties, StartAt, glob_match, is_librdkafka_property, is_secret_property,
};
pub use offset_log::{OffsetLog, OffsetLogConfig};
pub use properties::LIBRDKAFKA_PROPERTIES;
pub use sink::KafkaSink;
pub use source::{KafkaSource, parse_partition_id, partition_id};
// Public for connectors/tests/kafka.rs, which checks it against a real broker's fencing.
pub use txn::is_fenced;
