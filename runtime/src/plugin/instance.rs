//! A live plugin instance with its limits: instantiates from an `InstancePre`, calls it under an
//! epoch deadline (and fuel), and throws the instance away after any failure so that the next
//! batch gets a fresh one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use wasmtime::component::{Component, InstancePre};
use wasmtime::{Store, Trap};

use super::bindings::{format, partitioner, transform};
use sluice_connectors::Record;

use super::codec::{self, OutputLimits};
use super::engine::EngineCtx;
use super::limits::{
    HostState, Limits, MAX_OUTPUT_RECORDS, MAX_WASI_RESOURCES, MemoryCapExceeded, WaitTimedOut,
};
use super::wait::off_runtime;
use super::{PluginKind, kind_of};
use crate::stage::StageError;

/// One WIT world: how to check, instantiate and initialise a component that implements it.
pub(crate) trait World: 'static {
    const KIND: PluginKind;
    type Pre: Clone + Send + Sync + 'static;
    type Bindings: Send + 'static;
    fn pre(ip: InstancePre<HostState>) -> wasmtime::Result<Self::Pre>;
    fn instantiate(
        pre: &Self::Pre,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<Self::Bindings>;
    fn config_schema(b: &Self::Bindings, store: &mut Store<HostState>) -> wasmtime::Result<String>;
    fn init(
        b: &Self::Bindings,
        store: &mut Store<HostState>,
        config: &str,
    ) -> wasmtime::Result<Result<(), String>>;
}

/// Implements [`World`] for one generated binding: the three worlds differ only in names.
macro_rules! world {
    ($world:ident, $kind:ident, $module:ident, $pre:ident, $bindings:ident, $export:ident) => {
        pub(crate) struct $world;

        impl World for $world {
            const KIND: PluginKind = PluginKind::$kind;
            type Pre = $module::$pre<HostState>;
            type Bindings = $module::$bindings;
            fn pre(ip: InstancePre<HostState>) -> wasmtime::Result<Self::Pre> {
                $module::$pre::new(ip)
            }
            fn instantiate(
                pre: &Self::Pre,
                store: &mut Store<HostState>,
            ) -> wasmtime::Result<Self::Bindings> {
                pre.instantiate(store)
            }
            fn config_schema(
                b: &Self::Bindings,
                store: &mut Store<HostState>,
            ) -> wasmtime::Result<String> {
                b.$export().call_config_schema(store)
            }
            fn init(
                b: &Self::Bindings,
                store: &mut Store<HostState>,
                config: &str,
            ) -> wasmtime::Result<Result<(), String>> {
                b.$export().call_init(store, config)
            }
        }
    };
}

world!(
    TransformWorld,
    Transform,
    transform,
    TransformPre,
    Transform,
    sluice_plugin_transform_plugin
);
world!(
    FormatWorld,
    Format,
    format,
    FormatPre,
    Format,
    sluice_plugin_format_plugin
);
world!(
    PartitionerWorld,
    Partitioner,
    partitioner,
    PartitionerPre,
    Partitioner,
    sluice_plugin_partitioner_plugin
);

/// A component checked against world `W`, ready to instantiate.
pub(crate) struct Prepared<W: World> {
    pub(crate) ctx: Arc<EngineCtx>,
    pub(crate) pre: W::Pre,
}

/// Why a component could not be prepared as world `W`.
pub(crate) enum PrepareError {
    WrongKind(String),
    /// It exports a `sluice:plugin` interface of another package version (the version).
    WitVersion(String),
    Other(String),
}

impl<W: World> Prepared<W> {
    /// Checks from the component's type (nothing runs) that it implements `W`.
    pub(crate) fn new(ctx: Arc<EngineCtx>, component: &Component) -> Result<Self, PrepareError> {
        let found = kind_of(&ctx.engine, component);
        if let Some(version) = found
            .as_deref()
            .and_then(|export| export.rsplit_once('@'))
            .map(|(_, version)| version)
            .filter(|version| *version != super::WIT_VERSION)
        {
            return Err(PrepareError::WitVersion(version.to_string()));
        }
        if found.as_deref() != Some(W::KIND.wit_export()) {
            let found = match found {
                Some(export) => PluginKind::from_wit_export(&export)
                    .map(|k| k.to_string())
                    .unwrap_or(export),
                None => "not a Sluice plugin (it exports no sluice:plugin interface)".to_string(),
            };
            return Err(PrepareError::WrongKind(found));
        }
        let ip = ctx
            .linker
            .instantiate_pre(component)
            .map_err(|e| PrepareError::Other(format!("cannot link the plugin: {e}")))?;
        let pre = W::pre(ip).map_err(|e| {
            PrepareError::Other(format!(
                "the plugin does not match the {} world of sluice:plugin@{}: {e}",
                W::KIND,
                super::WIT_VERSION
            ))
        })?;
        Ok(Self { ctx, pre })
    }

    /// A fresh store with `limits` and an instance in it (not yet initialised).
    pub(crate) fn instantiate(
        &self,
        limits: &Limits,
    ) -> wasmtime::Result<(Store<HostState>, W::Bindings)> {
        let mut store = Store::new(
            &self.ctx.engine,
            HostState::new(limits, self.ctx.ticks.clone()),
        );
        store.limiter(|s| s.limiter());
        store.set_epoch_deadline(limits.deadline_ticks());
        store.epoch_deadline_trap();
        if self.ctx.fuel {
            store.set_fuel(limits.fuel.unwrap_or(u64::MAX))?;
        }
        let bindings = W::instantiate(&self.pre, &mut store)?;
        Ok((store, bindings))
    }
}

/// How a plugin with `reload` swaps in a rebuilt `.wasm`: the file's modification time and
/// length are looked at between calls, at most once per [`Reload::EVERY`]; a changed file is
/// checked in full by `check` before it replaces the running version.
pub(crate) struct Reload<W: World> {
    path: PathBuf,
    /// The file as the running version (or the last refused one) was read from it.
    seen: Option<(Option<SystemTime>, u64)>,
    next_look: Instant,
    check: Box<dyn FnMut() -> Result<Prepared<W>, String> + Send>,
}

impl<W: World> Reload<W> {
    const EVERY: Duration = Duration::from_secs(1);

    pub(crate) fn new(
        path: PathBuf,
        check: Box<dyn FnMut() -> Result<Prepared<W>, String> + Send>,
    ) -> Self {
        let seen = Self::stamp(&path);
        Self {
            path,
            seen,
            next_look: Instant::now() + Self::EVERY,
            check,
        }
    }

    fn stamp(path: &Path) -> Option<(Option<SystemTime>, u64)> {
        std::fs::metadata(path)
            .ok()
            .map(|m| (m.modified().ok(), m.len()))
    }

    /// A new checked version when the file changed since it was last read, else `None`.
    fn changed(&mut self, name: &str) -> Option<Prepared<W>> {
        let now = Instant::now();
        if now < self.next_look {
            return None;
        }
        self.next_look = now + Self::EVERY;
        let stamp = Self::stamp(&self.path);
        if stamp.is_none() || stamp == self.seen {
            return None;
        }
        self.seen = stamp;
        match (self.check)() {
            Ok(prepared) => {
                tracing::info!(plugin = %name, path = %self.path.display(), "plugin reloaded: the new version runs from the next batch");
                Some(prepared)
            }
            Err(e) => {
                tracing::warn!(plugin = %name, path = %self.path.display(), error = %e, "new plugin version refused; the running version goes on");
                None
            }
        }
    }
}

/// An initialised instance that is recreated after any failure.
pub(crate) struct Live<W: World> {
    name: String,
    prepared: Prepared<W>,
    limits: Limits,
    config: String,
    current: Option<(Store<HostState>, W::Bindings)>,
    reload: Option<Reload<W>>,
    /// The encoded batch of [`Live::call_batch`], reused from call to call.
    buf: Vec<u8>,
}

impl<W: World> Live<W> {
    /// Instantiates and initialises the plugin once, so that a bad config fails at start.
    pub(crate) fn start(
        name: String,
        prepared: Prepared<W>,
        limits: Limits,
        config: String,
        reload: Option<Reload<W>>,
    ) -> Result<Self, String> {
        let mut live = Self {
            name,
            prepared,
            limits,
            config,
            current: None,
            reload,
            buf: Vec::new(),
        };
        live.ensure().map_err(|e| e.message)?;
        Ok(live)
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// What decoding one call's output may cost the host.
    fn output_limits(&self) -> OutputLimits {
        OutputLimits {
            bytes: self.limits.output_budget(),
            records: MAX_OUTPUT_RECORDS,
        }
    }

    fn fail(&self, message: String) -> StageError {
        StageError {
            stage: self.name.clone(),
            message,
        }
    }

    fn ensure(&mut self) -> Result<(), StageError> {
        if self.current.is_some() {
            return Ok(());
        }
        let (store, bindings, res) = off_runtime(|| {
            let (mut store, bindings) = self.prepared.instantiate(&self.limits)?;
            let res = W::init(&bindings, &mut store, &self.config);
            Ok((store, bindings, res))
        })
        .map_err(|e: wasmtime::Error| self.fail(describe(&e, &self.limits, "")))?;
        let output = store.data().output.take();
        log_output(&self.name, &output);
        match res {
            Ok(Ok(())) => {
                self.current = Some((store, bindings));
                Ok(())
            }
            Ok(Err(msg)) => Err(self.fail(format!("plugin rejected its config: {msg}"))),
            Err(e) => Err(self.fail(describe(&e, &self.limits, &output))),
        }
    }

    /// Runs one call under the limits. On a trap, a timeout or a memory overrun the instance is
    /// discarded (the next call gets a fresh one) and the error names the plugin; so does a
    /// contract violation found by `check`.
    pub(crate) fn call<R>(
        &mut self,
        f: impl FnOnce(&W::Bindings, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, StageError> {
        // Between batches: a rebuilt plugin that passed its checks replaces this one.
        if let Some(prepared) = self.reload.as_mut().and_then(|r| r.changed(&self.name)) {
            self.prepared = prepared;
            self.current = None;
        }
        self.ensure()?;
        let (store, bindings) = self.current.as_mut().ok_or_else(|| StageError {
            stage: self.name.clone(),
            message: "plugin instance is missing".into(),
        })?;
        let ticks = self.limits.deadline_ticks();
        store.set_epoch_deadline(ticks);
        store.data_mut().start_call(ticks);
        if let Some(fuel) = self.limits.fuel
            && self.prepared.ctx.fuel
        {
            store.set_fuel(fuel).map_err(|e| StageError {
                stage: self.name.clone(),
                message: format!("cannot set fuel: {e}"),
            })?;
        }
        let res = f(bindings, store);
        match res {
            Ok(r) => {
                if !store.data().output.is_empty() {
                    log_output(&self.name, &store.data().output.take());
                }
                Ok(r)
            }
            Err(e) => {
                let output = store.data().output.take();
                log_output(&self.name, &output);
                self.current = None;
                Err(self.fail(describe(&e, &self.limits, &output)))
            }
        }
    }

    /// One batch through the plugin: `batch` is encoded once, `f` passes the bytes to the plugin's
    /// function and `decode` reads its answer. An answer that breaks the contract discards the
    /// instance. An empty batch calls nothing.
    pub(crate) fn call_batch<T: Default>(
        &mut self,
        batch: &[Record],
        f: impl FnOnce(&W::Bindings, &mut Store<HostState>, &[u8]) -> wasmtime::Result<Vec<u8>>,
        decode: impl FnOnce(Vec<u8>, OutputLimits) -> Result<T, String>,
    ) -> Result<T, StageError> {
        if batch.is_empty() {
            return Ok(T::default());
        }
        let mut buf = std::mem::take(&mut self.buf);
        codec::encode_batch(batch, &mut buf);
        let out = self.call(|b, store| f(b, store, &buf));
        self.buf = buf;
        decode(out?, self.output_limits())
            .map_err(|e| self.discard(format!("broke the plugin contract: {e}")))
    }

    /// Throws the instance away after a contract violation.
    fn discard(&mut self, message: String) -> StageError {
        self.current = None;
        self.fail(message)
    }
}

fn log_output(plugin: &str, output: &str) {
    for line in output.lines().filter(|l| !l.trim().is_empty()) {
        tracing::info!(plugin = %plugin, "{line}");
    }
}

/// The panic message in a plugin's captured stderr, if it panicked.
fn panic_message(output: &str) -> Option<String> {
    let at = output.rfind("panicked at ")?;
    let rest = &output[at + "panicked at ".len()..];
    let rest = rest.split("\nnote:").next().unwrap_or(rest);
    let text = rest.split_whitespace().collect::<Vec<_>>().join(" ");
    Some(text)
}

/// A readable reason for a failed call.
pub(crate) fn describe(e: &wasmtime::Error, limits: &Limits, output: &str) -> String {
    let timed_out = format!(
        "plugin timed out: a call ran longer than {:?} (the `timeout` limit)",
        limits.timeout
    );
    if e.downcast_ref::<WaitTimedOut>().is_some() {
        return timed_out;
    }
    if e.downcast_ref::<MemoryCapExceeded>().is_some() {
        return format!(
            "plugin exceeded its memory limit of {} bytes (the `memory` limit)",
            limits.memory
        );
    }
    if let Some(wasmtime::component::ResourceTableError::Full) =
        e.downcast_ref::<wasmtime::component::ResourceTableError>()
    {
        return format!(
            "plugin holds more than {MAX_WASI_RESOURCES} WASI resources (streams, pollables) at once (the host's limit)"
        );
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => {
            return timed_out;
        }
        Some(Trap::OutOfFuel) => {
            return format!(
                "plugin ran out of fuel ({} units, the `fuel` limit)",
                limits.fuel.unwrap_or_default()
            );
        }
        Some(Trap::StackOverflow) => return "plugin trapped: stack overflow".into(),
        _ => {}
    }
    let text = format!("{e:#}");
    if text.contains("forcing trap when growing memory")
        || text.contains("exceeded its memory limit")
    {
        return format!(
            "plugin exceeded its memory limit of {} bytes (the `memory` limit)",
            limits.memory
        );
    }
    if let Some(msg) = panic_message(output) {
        return format!("plugin panicked at {msg}");
    }
    match e.downcast_ref::<Trap>() {
        Some(trap) => format!("plugin trapped: {trap}"),
        None => format!("plugin failed: {text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_panic_message() {
        let out = "thread '<unnamed>' panicked at src/lib.rs:4:9:\nboom here\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(
            panic_message(out).as_deref(),
            Some("src/lib.rs:4:9: boom here")
        );
        assert_eq!(panic_message("hello"), None);
    }
}
