//! Test only: a format whose `decode` returns invalid JSON for records whose value is `bad-json`
//! and passes other records through; `encode` passes everything through.

use sluice_sdk::{Format, NoConfig, Outcome, Record};

pub struct HostileFormat;

impl Format for HostileFormat {
    type Config = NoConfig;

    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(HostileFormat)
    }

    fn decode(&mut self, record: &Record<'_>) -> Outcome {
        if record.value == b"bad-json" {
            Outcome::Value(b"{not json".to_vec())
        } else {
            Outcome::Keep
        }
    }

    fn encode(&mut self, _: &Record<'_>) -> Outcome {
        Outcome::Keep
    }
}

sluice_sdk::export_format!(HostileFormat);
