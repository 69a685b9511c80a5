//! Sluice's connector API and built-in connectors.
//!
//! A connector is one module with a config struct (`Deserialize + JsonSchema`, `///` docs that
//! become the spec reference) and a [`Source`] and/or [`Sink`] implementation. The spec's
//! `source:` and `sink:` choices are listed once, in [`registry`].
//!
//! ```
//! use sluice_connectors::{Offset, Record};
//! let r = Record::new("0".into(), Offset::from(7), &b"{\"seq\":7}"[..]);
//! assert_eq!(r.offset.as_str(), "7");
//! ```

pub mod ack;
pub mod api;
pub mod aws;
pub mod discard;
pub mod dynamodb;
pub mod error;
pub mod file;
pub mod generator;
pub mod kafka;
pub mod kinesis;
pub mod record;
pub mod registry;
pub mod retry;
pub mod secret;
pub mod shards;
pub mod stdio;
pub mod units;

pub use ack::{Ack, Completion, Rejected, Ticket};
pub use api::{
    BatchSender, Committed, CommittedOffsets, Granted, Grants, Lag, LagProbe, Sink, SinkRecord,
    Source, SourceBatch, SourceContext, Transactional, TxnError,
};
pub use error::ConnectorError;
pub use record::{Metadata, Offset, PartitionId, Record, Route, hex32};
pub use registry::{SinkConfig, SourceConfig};

/// A problem with a connector's config found before anything starts: a path relative to the
/// connector's config (`count`, `paths/0`) and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub path: String,
    pub message: String,
}

impl ConfigIssue {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}
