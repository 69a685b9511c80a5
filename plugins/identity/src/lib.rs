//! Passes every record unchanged. Used to measure the cost of a plugin call.

use sluice_sdk::{NoConfig, Outcome, Record, Transform};

pub struct Identity;

impl Transform for Identity {
    type Config = NoConfig;

    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(Identity)
    }

    fn process(&mut self, _: &Record<'_>) -> Outcome {
        Outcome::Keep
    }
}

sluice_sdk::export_transform!(Identity);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_everything() {
        let out = sluice_sdk::testing::transform::<Identity>(
            sluice_sdk::serde_json::json!({}),
            &[Record::new(b"a"), Record::new(b"{}")],
        )
        .unwrap();
        assert_eq!(out, vec![Outcome::Keep, Outcome::Keep]);
    }
}
