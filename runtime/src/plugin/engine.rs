//! The process-wide wasmtime engine: configuration, the epoch ticker, the on-disk compilation
//! cache and the in-memory cache of compiled components.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use wasmtime::component::{Component, Linker};
use wasmtime::{Cache, CacheConfig, Config, Engine};

use super::PluginError;
use super::limits::HostState;

/// How often the ticker thread advances the engine epoch; a call's timeout is rounded up to a
/// whole number of ticks.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// One engine with everything that is shared by the plugins it runs.
pub(crate) struct EngineCtx {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    pub(crate) fuel: bool,
    components: Mutex<HashMap<PathBuf, CachedComponent>>,
}

#[derive(Clone)]
struct CachedComponent {
    modified: Option<SystemTime>,
    len: u64,
    component: Component,
}

/// Sluice's cache folder: `$SLUICE_CACHE_DIR`, else `$XDG_CACHE_HOME/sluice`, else
/// `~/.cache/sluice`.
pub fn cache_root() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SLUICE_CACHE_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("sluice"));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|home| PathBuf::from(home).join(".cache").join("sluice"))
}

/// Where compiled components are kept between runs: `wasmtime/` in [`cache_root`].
pub fn cache_dir() -> Option<PathBuf> {
    cache_root().map(|root| root.join("wasmtime"))
}

fn disk_cache() -> Option<Cache> {
    let dir = cache_dir()?;
    let dir = if dir.is_absolute() {
        dir
    } else {
        std::env::current_dir().ok()?.join(dir)
    };
    let mut config = CacheConfig::new();
    config.with_directory(&dir);
    match Cache::new(config) {
        Ok(cache) => Some(cache),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "wasm compilation cache disabled");
            None
        }
    }
}

impl EngineCtx {
    /// Builds an engine. `fuel` turns on fuel metering for all code it compiles (about a third
    /// slower), so the host keeps a second engine for the plugins whose spec asks for fuel.
    pub(crate) fn new(fuel: bool) -> Result<Arc<Self>, PluginError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.consume_fuel(fuel);
        // Plugins are called synchronously, one batch at a time: without the component-model
        // concurrency machinery a call costs about a third as much.
        config.concurrency_support(false);
        config.cache(disk_cache());
        let engine = Engine::new(&config)
            .map_err(|e| PluginError(format!("cannot start the wasm engine: {e}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| PluginError(format!("cannot link WASI: {e}")))?;
        start_ticker(&engine)?;
        Ok(Arc::new(Self {
            engine,
            linker,
            fuel,
            components: Mutex::new(HashMap::new()),
        }))
    }

    /// Loads (compiles, or fetches from the caches) the component at `path`.
    pub(crate) fn component(&self, path: &Path) -> Result<Component, String> {
        let meta =
            std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let modified = meta.modified().ok();
        {
            let cache = self.components.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = cache.get(&key)
                && c.modified == modified
                && c.len == meta.len()
            {
                return Ok(c.component.clone());
            }
        }
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if !bytes.starts_with(b"\0asm") {
            return Err(format!("{} is not a WebAssembly file", path.display()));
        }
        let component = Component::new(&self.engine, &bytes).map_err(|e| {
            format!(
                "{} is not a WebAssembly component built for Sluice: {e}",
                path.display()
            )
        })?;
        let mut cache = self.components.lock().unwrap_or_else(|p| p.into_inner());
        cache.insert(
            key,
            CachedComponent {
                modified,
                len: meta.len(),
                component: component.clone(),
            },
        );
        Ok(component)
    }
}

/// Starts the thread that advances the epoch of `engine` every [`EPOCH_TICK`]; it ends when the
/// engine is dropped.
fn start_ticker(engine: &Engine) -> Result<(), PluginError> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("sluice-wasm-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .map(|_| ())
        .map_err(|e| PluginError(format!("cannot start the epoch ticker thread: {e}")))
}
