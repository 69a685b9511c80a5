//! A wasm partitioner as a pipeline [`Partitioner`].

use sluice_connectors::{Record, Route};

use super::codec;
use super::instance::{Live, PartitionerWorld};
use crate::stage::{Partitioner, StageError};

pub(crate) struct WasmPartitioner {
    live: Live<PartitionerWorld>,
    buf: Vec<u8>,
}

impl WasmPartitioner {
    pub(crate) fn new(live: Live<PartitionerWorld>) -> Self {
        Self {
            live,
            buf: Vec::new(),
        }
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
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        codec::encode_batch(batch, &mut self.buf);
        let input = &self.buf;
        let out = self.live.call(|b, store| {
            b.sluice_plugin_partitioner_plugin()
                .call_partition(store, input, partition_count)
        })?;
        codec::decode_routes(out, batch.len(), partition_count)
            .map_err(|e| self.live.discard(format!("broke the plugin contract: {e}")))
    }
}
