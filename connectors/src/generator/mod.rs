//! The `generator` source: deterministic `user_behavior` JSON records.
//!
//! Partition `p` of `P` emits `seq` values `p, p+P, p+2P, …` (below `count`), so a test can check
//! exactly which records arrived. A record's offset is its index within its partition.

mod config;
mod source;

pub use config::GeneratorConfig;
pub use source::GeneratorSource;
