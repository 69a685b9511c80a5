//! Pipeline stages: the traits that decoders, transforms, encoders and partitioners implement,
//! natively or as WebAssembly plugins.

use sluice_connectors::{Record, Route};

/// What a stage made of one input record.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The input record passes on unchanged.
    Keep,
    /// Zero (filtered), one (mapped) or many (flat-mapped) records replace the input. Each output
    /// keeps the input's partition, offset and metadata (use [`Record::derive`]).
    Records(Vec<Record>),
    /// The record is bad: it goes to the pipeline's error policy with this message.
    Error(String),
}

/// A whole batch failed: a plugin trapped, ran out of time or memory, or broke its contract.
/// The batch's records go to the error policy; the stage must be usable again afterwards (a wasm
/// stage re-instantiates its plugin).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{stage}: {message}")]
pub struct StageError {
    /// The stage's name, e.g. `transform mask-fields.wasm`.
    pub stage: String,
    pub message: String,
}

/// A decode, transform or encode step: records in, one [`Outcome`] per input record out.
pub trait Stage: Send {
    /// Names the stage in errors and dead-letter entries (`decode json`, `transform mask.wasm`).
    fn name(&self) -> &str;
    /// Processes a batch; the result has exactly one outcome per input record, in order.
    fn process(&mut self, batch: &[Record]) -> Result<Vec<Outcome>, StageError>;
}

/// Chooses where each record goes in a partitioned sink.
pub trait Partitioner: Send {
    fn name(&self) -> &str;
    /// One route (or a per-record error) per input record, in order. `partition_count` is the
    /// sink's number of partitions when it has them.
    fn partition(
        &mut self,
        batch: &[Record],
        partition_count: Option<u32>,
    ) -> Result<Vec<Result<Route, String>>, StageError>;
}
