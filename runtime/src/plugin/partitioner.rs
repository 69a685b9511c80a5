//! A wasm partitioner as a pipeline [`Partitioner`].

use sluice_connectors::{Record, Route};

use super::codec;
use super::instance::{Live, PartitionerWorld};
use crate::stage::{Partitioner, StageError};

pub(crate) struct WasmPartitioner {
    live: Live<PartitionerWorld>,
}

impl WasmPartitioner {
    pub(crate) fn new(live: Live<PartitionerWorld>) -> Self {
        Self { live }
    }
}

impl Partitioner for WasmPartitioner {
    fn name(&self) -> &str {
        self.live.name()
    }

    fn partition(
        &mut self,
        batch: &[Record],
        partition_count: Option<u32>,
    ) -> Result<Vec<Result<Route, String>>, StageError> {
        self.live.call_batch(
            batch,
            |b, store, input| {
                b.sluice_plugin_partitioner_plugin()
                    .call_partition(store, input, partition_count)
            },
            |out, _| codec::decode_routes(out, batch.len(), partition_count),
        )
    }
}
