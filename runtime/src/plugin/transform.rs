//! A wasm transform as a pipeline [`Stage`].

use sluice_connectors::Record;

use super::codec;
use super::instance::{Live, TransformWorld};
use crate::stage::{Outcome, Stage, StageError};

pub(crate) struct WasmTransform {
    live: Live<TransformWorld>,
    buf: Vec<u8>,
}

impl WasmTransform {
    pub(crate) fn new(live: Live<TransformWorld>) -> Self {
        Self {
            live,
            buf: Vec::new(),
        }
    }
}

impl Stage for WasmTransform {
    fn name(&self) -> &str {
        self.live.name()
    }

    fn process(&mut self, batch: &[Record]) -> Result<Vec<Outcome>, StageError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        codec::encode_batch(batch, &mut self.buf);
        let input = &self.buf;
        let out = self.live.call(|b, store| {
            b.sluice_plugin_transform_plugin()
                .call_process(store, input)
        })?;
        codec::decode_outcomes(out, batch, false, self.live.output_limits())
            .map_err(|e| self.live.discard(format!("broke the plugin contract: {e}")))
    }
}
