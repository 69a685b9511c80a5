//! A wasm format as two pipeline [`Stage`]s: a decoder (source bytes -> JSON records) and an
//! encoder (JSON records -> sink bytes).

use sluice_connectors::Record;

use super::codec;
use super::instance::{FormatWorld, Live};
use crate::stage::{Outcome, Stage, StageError};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Decode,
    Encode,
}

pub(crate) struct WasmFormat {
    live: Live<FormatWorld>,
    direction: Direction,
    buf: Vec<u8>,
}

impl WasmFormat {
    pub(crate) fn new(live: Live<FormatWorld>, direction: Direction) -> Self {
        Self {
            live,
            direction,
            buf: Vec::new(),
        }
    }
}

impl Stage for WasmFormat {
    fn name(&self) -> &str {
        self.live.name()
    }

    fn process(&mut self, batch: &[Record]) -> Result<Vec<Outcome>, StageError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        codec::encode_batch(batch, &mut self.buf);
        let input = &self.buf;
        let direction = self.direction;
        let out = self.live.call(|b, store| {
            let f = b.sluice_plugin_format_plugin();
            match direction {
                Direction::Decode => f.call_decode(store, input),
                Direction::Encode => f.call_encode(store, input),
            }
        })?;
        // A decoder promises JSON: anything else is the plugin's fault, reported as such.
        codec::decode_outcomes(
            out,
            batch,
            direction == Direction::Decode,
            self.live.output_limits(),
        )
        .map_err(|e| self.live.discard(format!("broke the plugin contract: {e}")))
    }
}
