//! The `discard` sink: discards records and acknowledges them at once (benchmarks, dry runs).

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::api::{Sink, SinkRecord};
use crate::error::ConnectorError;

/// Discards every record (acknowledging it), for benchmarks and dry runs of transforms.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscardConfig {}

pub struct DiscardSink;

#[async_trait]
impl Sink for DiscardSink {
    async fn write(&mut self, batch: Vec<SinkRecord>) -> Result<(), ConnectorError> {
        for r in batch {
            r.ack.ack();
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }
}
