use schemars::JsonSchema;
use serde::Deserialize;

use crate::ConfigIssue;
use crate::units::{ByteSize, int};

/// Deterministic `user_behavior` records: `seq`, `user_id`, `item_id`, `category_id`, `behavior`,
/// `ts`, `email`, and an optional `pad` to reach `record_size`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GeneratorConfig {
    /// Records to emit over all partitions; omit for an endless stream.
    pub count: Option<u64>,
    /// Partitions to spread records over: partition `p` emits `seq` `p`, `p + partitions`, …
    #[serde(default = "int::<u32, 1>")]
    #[schemars(range(min = 1, max = 4096))]
    pub partitions: u32,
    /// Records per second over all partitions; omit to go as fast as the sink takes them.
    pub rate: Option<f64>,
    /// Pads each record with a `pad` field so its JSON is about this size.
    pub record_size: Option<ByteSize>,
    /// Records per batch.
    #[serde(default = "int::<usize, 1000>")]
    #[schemars(range(min = 1, max = 100000))]
    pub batch_size: usize,
    /// Seed of the pseudo-random fields (the same seed gives the same records).
    #[serde(default)]
    pub seed: u64,
}

impl GeneratorConfig {
    pub fn check(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if let Some(rate) = self.rate
            && !(rate > 0.0 && rate.is_finite())
        {
            issues.push(ConfigIssue::new(
                "rate",
                format!("rate must be a positive number of records per second, found {rate}"),
            ));
        }
        if let Some(size) = self.record_size
            && size.0 > 16 * 1024 * 1024
        {
            issues.push(ConfigIssue::new(
                "record_size",
                "record_size must be at most 16MiB",
            ));
        }
        issues
    }
}
