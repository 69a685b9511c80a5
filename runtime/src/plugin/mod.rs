//! The WebAssembly plugin host.
//!
//! Plugins are components built with `sluice-sdk` against one world of the WIT package in
//! `sdk/wit` (`transform`, `format` or `partitioner`). One [`PluginHost`] per process owns a
//! shared `wasmtime::Engine` (epoch interruption on, a ticker thread advancing it every 10 ms),
//! compiles each component once (cached in memory and on disk, see [`engine::cache_dir`]) and
//! hands out pipeline stages. Each stage owns one instance in its own store, with the limits of
//! its spec: a call timeout (an epoch deadline, which WASI waits honour too, see `wait`), one memory cap over all linear memories (trapping on growth failure) and
//! optional fuel. Decoding a call's output is bounded too (host memory at a multiple of the
//! memory cap, a number of output records), and so is the store's WASI resource table. The
//! sandbox grants no WASI capability: no files, sockets, environment or arguments; stdin is
//! closed and stdout/stderr go to the host's log.
//!
//! A trap, timeout or memory overrun fails only the batch being processed (a
//! [`StageError`](crate::stage::StageError) naming the plugin); the instance is discarded and the
//! next batch runs in a fresh one. So does malformed or oversized output (a wrong number of
//! outcomes or routes, invalid JSON from a decoder, more output than the limits allow).

mod bindings;
mod codec;
pub mod engine;
mod format;
mod instance;
mod limits;
mod partitioner;
pub mod scaffold;
mod test_run;
mod transform;
mod wait;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

use self::engine::EngineCtx;
use self::instance::{
    FormatWorld, Live, PartitionerWorld, PrepareError, Prepared, Reload, TransformWorld, World,
};
use self::limits::Limits;
use crate::spec::plugin::PluginSpec;
use crate::stage::{Partitioner, Stage};

pub use self::test_run::{TestRun, run_test};

/// The version of the `sluice:plugin` WIT package (`sdk/wit/plugin.wit`) this host runs. A macro
/// so the export names below are `&'static str` constants.
macro_rules! wit_version {
    () => {
        "0.1.0"
    };
}

/// The version of the `sluice:plugin` WIT package this host runs; a plugin built against another
/// version is refused with both versions named.
pub const WIT_VERSION: &str = wit_version!();

/// The kind of a plugin, as its WIT world says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginKind {
    Transform,
    Format,
    Partitioner,
}

impl PluginKind {
    pub const ALL: [PluginKind; 3] = [
        PluginKind::Transform,
        PluginKind::Format,
        PluginKind::Partitioner,
    ];

    /// The interface a component of this kind exports.
    pub fn wit_export(self) -> &'static str {
        match self {
            PluginKind::Transform => concat!("sluice:plugin/transform-plugin@", wit_version!()),
            PluginKind::Format => concat!("sluice:plugin/format-plugin@", wit_version!()),
            PluginKind::Partitioner => {
                concat!("sluice:plugin/partitioner-plugin@", wit_version!())
            }
        }
    }

    fn from_wit_export(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.wit_export() == name)
    }
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

impl std::str::FromStr for PluginKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "transform" => Ok(PluginKind::Transform),
            "format" => Ok(PluginKind::Format),
            "partitioner" => Ok(PluginKind::Partitioner),
            _ => Err(format!(
                "unknown plugin kind `{s}` (use transform, format or partitioner)"
            )),
        }
    }
}

/// The `sluice:plugin` interface a component exports, if any.
fn kind_of(engine: &Engine, component: &Component) -> Option<String> {
    component
        .component_type()
        .exports(engine)
        .find(|(name, item)| {
            name.starts_with("sluice:plugin/")
                && matches!(item.ty, ComponentItem::ComponentInstance(_))
        })
        .map(|(name, _)| name.to_string())
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
    /// The component was built against another version of the plugin contract.
    #[error(
        "plugin was built for sluice:plugin@{found}, but this sluice runs sluice:plugin@{WIT_VERSION}; \
         rebuild it against the matching sluice-sdk (a crate made by `sluice plugin new` uses it)"
    )]
    WitVersion { found: String },
    /// The plugin's `init` rejected the config.
    #[error("plugin rejected its config: {0}")]
    Init(String),
}

impl PluginCheckError {
    /// The error with every config error spelled out (`config/fields: ...`), joined by `sep`.
    pub fn detail(&self, sep: &str) -> String {
        match self {
            PluginCheckError::Config(errors) => errors
                .iter()
                .map(|(at, message)| format!("config{at}: {message}"))
                .collect::<Vec<_>>()
                .join(sep),
            e => e.to_string(),
        }
    }
}

/// One per process: compiles, caches and instantiates plugins. Cheap to clone.
#[derive(Clone)]
pub struct PluginHost {
    inner: Arc<HostInner>,
}

struct HostInner {
    /// Every plugin reloads when its file changes (`sluice run --watch-plugins`).
    watch: bool,
    plain: Arc<EngineCtx>,
    /// A second engine that meters fuel, started the first time a spec asks for fuel.
    fueled: OnceLock<Result<Arc<EngineCtx>, String>>,
}

impl PluginHost {
    pub fn new() -> Result<Self, PluginError> {
        Self::with_watch(false)
    }

    /// A host whose plugins all reload when their `.wasm` changes (as `reload: true` does for
    /// one plugin).
    pub fn with_watch(watch: bool) -> Result<Self, PluginError> {
        Ok(Self {
            inner: Arc::new(HostInner {
                watch,
                plain: EngineCtx::new(false)?,
                fueled: OnceLock::new(),
            }),
        })
    }

    fn ctx(&self, spec: &PluginSpec) -> Result<Arc<EngineCtx>, String> {
        if spec.fuel.is_none() {
            return Ok(self.inner.plain.clone());
        }
        self.inner
            .fueled
            .get_or_init(|| EngineCtx::new(true).map_err(|e| e.0))
            .clone()
    }

    fn prepare<W: World>(
        &self,
        spec: &PluginSpec,
        base_dir: &Path,
    ) -> Result<(Prepared<W>, PathBuf), PluginCheckError> {
        let path = base_dir.join(&spec.wasm);
        let ctx = self.ctx(spec).map_err(PluginCheckError::Load)?;
        let component = ctx.component(&path).map_err(PluginCheckError::Load)?;
        match Prepared::<W>::new(ctx, &component) {
            Ok(p) => Ok((p, path)),
            Err(PrepareError::WrongKind(found)) => Err(PluginCheckError::WrongKind {
                expected: W::KIND,
                found,
            }),
            Err(PrepareError::WitVersion(found)) => Err(PluginCheckError::WitVersion { found }),
            Err(PrepareError::Other(msg)) => {
                Err(PluginCheckError::Load(format!("{}: {msg}", path.display())))
            }
        }
    }

    /// Loads the plugin, checks that it is a `kind` plugin (from the component's type), checks
    /// `spec.config` against the JSON Schema the plugin exports, then lets the plugin's `init`
    /// judge the config. Runs nothing else.
    pub fn check(
        &self,
        spec: &PluginSpec,
        base_dir: &Path,
        kind: PluginKind,
    ) -> Result<(), PluginCheckError> {
        wait::off_runtime(|| match kind {
            PluginKind::Transform => self.check_world::<TransformWorld>(spec, base_dir),
            PluginKind::Format => self.check_world::<FormatWorld>(spec, base_dir),
            PluginKind::Partitioner => self.check_world::<PartitionerWorld>(spec, base_dir),
        })
    }

    fn check_world<W: World>(
        &self,
        spec: &PluginSpec,
        base_dir: &Path,
    ) -> Result<(), PluginCheckError> {
        let (prepared, path) = self.prepare::<W>(spec, base_dir)?;
        let limits = Limits::from_spec(spec);
        let failed = |what: &str, e: wasmtime::Error| {
            PluginCheckError::Load(format!(
                "{}: {what}: {}",
                path.display(),
                instance::describe(&e, &limits, "")
            ))
        };
        let (mut store, bindings) = prepared
            .instantiate(&limits)
            .map_err(|e| failed("cannot instantiate", e))?;
        let schema = W::config_schema(&bindings, &mut store)
            .map_err(|e| failed("config-schema failed", e))?;
        let schema: serde_json::Value = serde_json::from_str(&schema).map_err(|e| {
            PluginCheckError::Load(format!(
                "{}: the plugin's config schema is not JSON: {e}",
                path.display()
            ))
        })?;
        let errors = config_errors(&schema, &spec.config).map_err(|e| {
            PluginCheckError::Load(format!(
                "{}: the plugin's config schema is invalid: {e}",
                path.display()
            ))
        })?;
        if !errors.is_empty() {
            return Err(PluginCheckError::Config(errors));
        }
        match W::init(&bindings, &mut store, &spec.config.to_string()) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(msg)) => Err(PluginCheckError::Init(msg)),
            Err(e) => Err(PluginCheckError::Init(instance::describe(
                &e,
                &limits,
                &store.data().output.take(),
            ))),
        }
    }

    /// The JSON Schema of a plugin's config (for docs and `sluice plugin` tooling).
    pub fn config_schema(
        &self,
        spec: &PluginSpec,
        base_dir: &Path,
        kind: PluginKind,
    ) -> Result<serde_json::Value, PluginCheckError> {
        fn get<W: World>(
            host: &PluginHost,
            spec: &PluginSpec,
            base_dir: &Path,
        ) -> Result<serde_json::Value, PluginCheckError> {
            let (prepared, _) = host.prepare::<W>(spec, base_dir)?;
            let limits = Limits::from_spec(spec);
            let err =
                |e: wasmtime::Error| PluginCheckError::Load(instance::describe(&e, &limits, ""));
            let (mut store, bindings) = prepared.instantiate(&limits).map_err(err)?;
            let schema = W::config_schema(&bindings, &mut store).map_err(err)?;
            serde_json::from_str(&schema)
                .map_err(|e| PluginCheckError::Load(format!("config schema is not JSON: {e}")))
        }
        wait::off_runtime(|| match kind {
            PluginKind::Transform => get::<TransformWorld>(self, spec, base_dir),
            PluginKind::Format => get::<FormatWorld>(self, spec, base_dir),
            PluginKind::Partitioner => get::<PartitionerWorld>(self, spec, base_dir),
        })
    }

    fn live<W: World>(
        &self,
        spec: &PluginSpec,
        base_dir: &Path,
        role: &str,
    ) -> Result<Live<W>, PluginError> {
        let (prepared, path) = self
            .prepare::<W>(spec, base_dir)
            .map_err(|e| PluginError(format!("{}: {e}", spec.wasm.display())))?;
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let name = format!("{role} {file}");
        let reload = (spec.reload || self.inner.watch).then(|| {
            let (host, spec, base_dir) = (self.clone(), spec.clone(), base_dir.to_path_buf());
            Reload::new(
                path.clone(),
                Box::new(move || {
                    // The whole check `validate` runs (kind, WIT version, config schema, init),
                    // then the checked component ready to instantiate.
                    host.check_world::<W>(&spec, &base_dir)
                        .map_err(|e| match e {
                            PluginCheckError::Config(errors) => errors
                                .iter()
                                .map(|(at, message)| format!("config{at}: {message}"))
                                .collect::<Vec<_>>()
                                .join("; "),
                            e => e.to_string(),
                        })?;
                    host.prepare::<W>(&spec, &base_dir)
                        .map(|(prepared, _)| prepared)
                        .map_err(|e| e.to_string())
                }),
            )
        });
        Live::start(
            name.clone(),
            prepared,
            Limits::from_spec(spec),
            spec.config.to_string(),
            reload,
        )
        .map_err(|e| PluginError(format!("{name}: {e}")))
    }

    /// A transform stage running the plugin of `spec` (relative paths from `base_dir`).
    pub fn transform(
        &self,
        spec: &PluginSpec,
        base_dir: &Path,
    ) -> Result<Box<dyn Stage>, PluginError> {
        let live = self.live::<TransformWorld>(spec, base_dir, "transform")?;
        Ok(Box::new(transform::WasmTransform::new(live)))
    }

    /// A decode stage running the format plugin of `spec`.
    pub fn decoder(
        &self,
        spec: &PluginSpec,
        base_dir: &Path,
    ) -> Result<Box<dyn Stage>, PluginError> {
        self.format(spec, base_dir, format::Direction::Decode)
    }

    /// An encode stage running the format plugin of `spec`.
    pub fn encoder(
        &self,
        spec: &PluginSpec,
        base_dir: &Path,
    ) -> Result<Box<dyn Stage>, PluginError> {
        self.format(spec, base_dir, format::Direction::Encode)
    }

    fn format(
        &self,
        spec: &PluginSpec,
        base_dir: &Path,
        direction: format::Direction,
    ) -> Result<Box<dyn Stage>, PluginError> {
        let live = self.live::<FormatWorld>(spec, base_dir, direction.label())?;
        Ok(Box::new(format::WasmFormat::new(live, direction)))
    }

    /// A partitioner running the plugin of `spec`.
    pub fn partitioner(
        &self,
        spec: &PluginSpec,
        base_dir: &Path,
    ) -> Result<Box<dyn Partitioner>, PluginError> {
        let live = self.live::<PartitionerWorld>(spec, base_dir, "partitioner")?;
        Ok(Box::new(partitioner::WasmPartitioner::new(live)))
    }
}

/// Validates `config` against `schema`: every violation as (JSON pointer inside the config,
/// message).
fn config_errors(
    schema: &serde_json::Value,
    config: &serde_json::Value,
) -> Result<Vec<(String, String)>, String> {
    let validator = jsonschema::validator_for(schema).map_err(|e| e.to_string())?;
    Ok(validator
        .iter_errors(config)
        .map(|e| (e.instance_path().to_string(), e.to_string()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_are_located() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {"fields": {"type": "array", "items": {"type": "string"}}},
            "required": ["fields"],
            "additionalProperties": false
        });
        let errs =
            config_errors(&schema, &serde_json::json!({"fields": ["a", 3], "x": 1})).unwrap();
        let pointers: Vec<_> = errs.iter().map(|(p, _)| p.as_str()).collect();
        assert!(pointers.contains(&"/fields/1"), "{errs:?}");
        assert!(pointers.contains(&""), "{errs:?}");
        assert!(
            config_errors(&schema, &serde_json::json!({"fields": []}))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn kinds_parse_and_print() {
        for k in PluginKind::ALL {
            assert_eq!(k.to_string().parse::<PluginKind>(), Ok(k));
            assert_eq!(PluginKind::from_wit_export(k.wit_export()), Some(k));
        }
        assert!("filter".parse::<PluginKind>().is_err());
    }
}
