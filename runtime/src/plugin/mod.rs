//! The WebAssembly plugin host. (Placeholder until the plugin host lands: every call reports
//! that wasm plugins are not available, so specs that use them fail validation cleanly.)

use std::path::Path;

use crate::spec::plugin::PluginSpec;
use crate::stage::{Partitioner, Stage};

/// The kind of a plugin, as its WIT world says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginKind {
    Transform,
    Format,
    Partitioner,
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PluginKind::Transform => "transform",
            PluginKind::Format => "format",
            PluginKind::Partitioner => "partitioner",
        })
    }
}

/// Why a plugin could not be loaded or started.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PluginError(pub String);

/// What `sluice validate` finds wrong with a plugin reference.
#[derive(Debug, thiserror::Error)]
pub enum PluginCheckError {
    /// The file is missing or not a component.
    #[error("{0}")]
    Load(String),
    /// The component implements another world.
    #[error("plugin is a {found} plugin, but a {expected} plugin is needed here")]
    WrongKind { expected: PluginKind, found: String },
    /// The config breaks the plugin's schema: (JSON pointer inside `config`, message).
    #[error("config does not match the plugin's schema")]
    Config(Vec<(String, String)>),
    /// The plugin's `init` rejected the config.
    #[error("plugin rejected its config: {0}")]
    Init(String),
}

/// One per process: compiles, caches and instantiates plugins.
#[derive(Clone)]
pub struct PluginHost {}

const UNAVAILABLE: &str = "wasm plugins are not available in this build";

impl PluginHost {
    pub fn new() -> Result<Self, PluginError> {
        Ok(Self {})
    }
    pub fn check(
        &self,
        _spec: &PluginSpec,
        _base_dir: &Path,
        _kind: PluginKind,
    ) -> Result<(), PluginCheckError> {
        Err(PluginCheckError::Load(UNAVAILABLE.into()))
    }
    pub fn transform(&self, _: &PluginSpec, _: &Path) -> Result<Box<dyn Stage>, PluginError> {
        Err(PluginError(UNAVAILABLE.into()))
    }
    pub fn decoder(&self, _: &PluginSpec, _: &Path) -> Result<Box<dyn Stage>, PluginError> {
        Err(PluginError(UNAVAILABLE.into()))
    }
    pub fn encoder(&self, _: &PluginSpec, _: &Path) -> Result<Box<dyn Stage>, PluginError> {
        Err(PluginError(UNAVAILABLE.into()))
    }
    pub fn partitioner(
        &self,
        _: &PluginSpec,
        _: &Path,
    ) -> Result<Box<dyn Partitioner>, PluginError> {
        Err(PluginError(UNAVAILABLE.into()))
    }
}
