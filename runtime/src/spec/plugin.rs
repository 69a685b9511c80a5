//! How a spec refers to a WebAssembly plugin.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::units::{ByteSize, Dur};
use sluice_connectors::units::millis;

/// A WebAssembly component built with the `sluice-sdk`, with its config and sandbox limits.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginSpec {
    /// Path of the `.wasm` component, relative to the spec file.
    pub wasm: PathBuf,
    /// The plugin's configuration, checked against the JSON Schema the plugin exports.
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
    /// Longest time one call (one batch) may run before the plugin is stopped, waits in WASI
    /// (sleeps, polls) included.
    #[serde(default = "millis::<200>")]
    pub timeout: Dur,
    /// Most linear memory the plugin may grow to, all its memories together. Decoding one call's
    /// output may take up to 4 times this in the host.
    #[serde(default = "default_memory")]
    pub memory: ByteSize,
    /// Optional fuel (roughly, wasm instructions) per call; off by default, as epoch timeouts
    /// cost less.
    pub fuel: Option<u64>,
    /// Swap in a rebuilt `.wasm` while the pipeline runs: the file is looked at between batches
    /// (at most once a second), and a changed one is checked (kind, WIT version, config against
    /// its schema, `init`) before it replaces the running version, without losing position. A
    /// version that fails the check is refused with a log line and the running one goes on.
    /// `sluice run --watch-plugins` turns this on for every plugin.
    #[serde(default)]
    pub reload: bool,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}
fn default_memory() -> ByteSize {
    ByteSize(64 * 1024 * 1024)
}
