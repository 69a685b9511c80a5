//! The process-wide wasmtime engine: configuration, the epoch ticker, the on-disk compilation
//! cache and the in-memory cache of compiled components.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use wasmtime::component::{Component, Linker};
use wasmtime::{Cache, CacheConfig, Config, Engine, ProfilingStrategy};

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
    /// Ticks of [`EPOCH_TICK`] since the first component was loaded, advanced with the engine's epoch (which
    /// wasmtime does not expose): the clock of WASI waits' deadlines.
    pub(crate) ticks: Arc<AtomicU64>,
    /// Set once the ticker thread runs: it starts with the first component loaded, so a run
    /// without plugins has no thread waking 100 times a second.
    ticker: OnceLock<Result<(), String>>,
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
    if let Err(why) = trusted_cache_dir(&dir) {
        tracing::warn!(dir = %dir.display(), reason = %why, "wasm compilation cache disabled: the folder is not private to this user");
        return None;
    }
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

/// The compilation cache holds native code that the host loads and runs without further checks,
/// so it is only used from a folder that no other user can write: owned by this user and not
/// writable by group or others. A missing folder is created private (`0700`).
fn trusted_cache_dir(dir: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("cannot create it: {e}"))?;
        }
        let meta = std::fs::metadata(dir).map_err(|e| format!("cannot read it: {e}"))?;
        if !meta.is_dir() {
            return Err("it is not a folder".into());
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(format!(
                "it is owned by uid {}, not by this user (uid {me})",
                meta.uid()
            ));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(format!(
                "it is writable by group or others (mode {:o})",
                meta.mode() & 0o777
            ));
        }
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create it: {e}"))?;
    }
    Ok(())
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
        if profiling_requested() {
            // Names the JIT code of plugins for `perf` (docs/plugins.md, "Profiling a plugin").
            config.profiler(ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config)
            .map_err(|e| PluginError(format!("cannot start the wasm engine: {e}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .and_then(|()| super::wait::link_deadline_poll(&mut linker))
            .map_err(|e| PluginError(format!("cannot link WASI: {e}")))?;
        Ok(Arc::new(Self {
            engine,
            linker,
            fuel,
            ticks: Arc::new(AtomicU64::new(0)),
            ticker: OnceLock::new(),
            components: Mutex::new(HashMap::new()),
        }))
    }

    /// Loads (compiles, or fetches from the caches) the component at `path`.
    pub(crate) fn component(&self, path: &Path) -> Result<Component, String> {
        // Every instance comes from a component: deadlines tick from the first one on.
        self.ticker
            .get_or_init(|| start_ticker(&self.engine, self.ticks.clone()).map_err(|e| e.0))
            .clone()?;
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

/// `SLUICE_WASM_PERFMAP=1`: the engine writes `/tmp/perf-<pid>.map`, so `perf report` names the
/// plugin functions it sampled.
fn profiling_requested() -> bool {
    std::env::var_os("SLUICE_WASM_PERFMAP").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Starts the thread that advances the epoch of `engine` and `ticks` every [`EPOCH_TICK`]; it
/// ends when the engine is dropped.
fn start_ticker(engine: &Engine, ticks: Arc<AtomicU64>) -> Result<(), PluginError> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("sluice-wasm-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => {
                        ticks.fetch_add(1, Ordering::Relaxed);
                        engine.increment_epoch();
                    }
                    None => break,
                }
            }
        })
        .map(|_| ())
        .map_err(|e| PluginError(format!("cannot start the epoch ticker thread: {e}")))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn cache_dir_writable_by_others_is_not_trusted() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/wasmtime");
        trusted_cache_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "a new cache folder is private");
        for (mode, trusted) in [
            (0o755, true),
            (0o775, false),
            (0o777, false),
            (0o1777, false),
        ] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
            let got = trusted_cache_dir(&dir);
            assert_eq!(got.is_ok(), trusted, "mode {mode:o}: {got:?}");
        }
    }
}
