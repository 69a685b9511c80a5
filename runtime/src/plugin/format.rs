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

impl Direction {
    /// The stage's role, as a plugin's stage name shows it.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Direction::Decode => "decode",
            Direction::Encode => "encode",
        }
    }
}

pub(crate) struct WasmFormat {
    live: Live<FormatWorld>,
    direction: Direction,
}

impl WasmFormat {
    pub(crate) fn new(live: Live<FormatWorld>, direction: Direction) -> Self {
        Self { live, direction }
    }
}

impl Stage for WasmFormat {
    fn name(&self) -> &str {
        self.live.name()
    }

    fn process(&mut self, batch: &[Record]) -> Result<Vec<Outcome>, StageError> {
        let direction = self.direction;
        self.live.call_batch(
            batch,
            |b, store, input| {
                let f = b.sluice_plugin_format_plugin();
                match direction {
                    Direction::Decode => f.call_decode(store, input),
                    Direction::Encode => f.call_encode(store, input),
                }
            },
            // A decoder promises JSON: anything else is the plugin's fault, reported as such.
            |out, limits| {
                codec::decode_outcomes(out, batch, direction == Direction::Decode, limits)
            },
        )
    }
}
