//! A wasm transform as a pipeline [`Stage`].

use sluice_connectors::Record;

use super::codec;
use super::instance::{Live, TransformWorld};
use crate::stage::{Outcome, Stage, StageError};

pub(crate) struct WasmTransform {
    live: Live<TransformWorld>,
}

impl WasmTransform {
    pub(crate) fn new(live: Live<TransformWorld>) -> Self {
        Self { live }
    }
}

impl Stage for WasmTransform {
    fn name(&self) -> &str {
        self.live.name()
    }

    fn process(&mut self, batch: &[Record]) -> Result<Vec<Outcome>, StageError> {
        self.live.call_batch(
            batch,
            |b, store, input| {
                b.sluice_plugin_transform_plugin()
                    .call_process(store, input)
            },
            |out, limits| codec::decode_outcomes(out, batch, false, limits),
        )
    }
}
