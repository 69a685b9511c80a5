//! The Sluice host: connector specs, the pipeline engine, the plugin host, offset stores, the CLI.

pub mod offsets;
pub mod pipeline;
pub mod plugin;
pub mod spec;
pub mod stage;
