//! Per-plugin limits (call timeout, memory, fuel) and the sandbox a plugin runs in: a store whose
//! WASI context grants nothing (no files, sockets, env or args; stdin closed), whose
//! stdout/stderr are captured into the host's logs, whose WASI resource table is bounded, and
//! whose linear memories share one cap.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::engine::EPOCH_TICK;
use crate::spec::plugin::PluginSpec;

/// The limits of one plugin, from its spec.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) timeout: Duration,
    pub(crate) memory: u64,
    pub(crate) fuel: Option<u64>,
}

impl Limits {
    pub(crate) fn from_spec(spec: &PluginSpec) -> Self {
        Self {
            timeout: spec.timeout.0,
            memory: spec.memory.0,
            fuel: spec.fuel,
        }
    }

    /// The epoch deadline for one call: the timeout in ticks, rounded up, plus one because the
    /// current tick may end at once.
    pub(crate) fn deadline_ticks(&self) -> u64 {
        let tick = EPOCH_TICK.as_nanos();
        let ticks = self.timeout.as_nanos().div_ceil(tick);
        u64::try_from(ticks).unwrap_or(u64::MAX / 2).max(1) + 1
    }

    /// How many host bytes decoding one call's output may take: [`OUTPUT_MEMORY_FACTOR`] times
    /// the plugin's `memory`.
    pub(crate) fn output_budget(&self) -> usize {
        usize::try_from(self.memory.saturating_mul(OUTPUT_MEMORY_FACTOR)).unwrap_or(usize::MAX)
    }

    fn limiter(&self) -> SandboxLimiter {
        SandboxLimiter {
            counts: StoreLimitsBuilder::new()
                // A component built from Rust has one or two core instances and memories; the
                // margins keep a plugin from building huge instance graphs. Memory size is
                // capped below, over all memories together.
                .instances(16)
                .memories(4)
                .tables(16)
                .table_elements(100_000)
                .trap_on_grow_failure(true)
                .build(),
            memory_cap: usize::try_from(self.memory).unwrap_or(usize::MAX),
            memory_used: 0,
            last_grow: 0,
        }
    }
}

/// Host memory for decoding a call's output is capped at this multiple of the plugin's `memory`
/// (the output buffer itself, every output record and what it inherits from its input).
pub(crate) const OUTPUT_MEMORY_FACTOR: u64 = 4;

/// At most this many output records per call (one batch); more fails the batch.
pub(crate) const MAX_OUTPUT_RECORDS: usize = 1_000_000;

/// At most this many WASI resources (streams, pollables, ...) live in a plugin's store at once.
/// A Rust guest uses a handful; a plugin that leaks them fails its call instead of growing the
/// host's heap.
pub(crate) const MAX_WASI_RESOURCES: usize = 4096;

/// A call's linear memories grew past the `memory` limit (all memories of the store together).
#[derive(Debug, thiserror::Error)]
#[error("plugin exceeded its memory limit of {cap} bytes")]
pub(crate) struct MemoryCapExceeded {
    pub(crate) cap: usize,
}

/// A WASI wait (`wasi:io/poll`, `pollable.block`) reached the call's deadline.
#[derive(Debug, thiserror::Error)]
#[error("plugin call reached its deadline while waiting in wasi:io/poll")]
pub(crate) struct WaitTimedOut;

/// The store's resource limiter: wasmtime's `StoreLimits` for the counts of instances, tables and
/// memories, and one byte cap shared by all linear memories (`StoreLimits` caps each memory on
/// its own, so a component with four memories could use four times `memory`).
pub(crate) struct SandboxLimiter {
    counts: StoreLimits,
    memory_cap: usize,
    memory_used: usize,
    /// The bytes of the last growth allowed, taken back if the growth then fails.
    last_grow: usize,
}

impl ResourceLimiter for SandboxLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        let grow = desired.saturating_sub(current);
        let total = self.memory_used.saturating_add(grow);
        if total > self.memory_cap {
            return Err(MemoryCapExceeded {
                cap: self.memory_cap,
            }
            .into());
        }
        self.memory_used = total;
        self.last_grow = grow;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_used = self.memory_used.saturating_sub(self.last_grow);
        self.last_grow = 0;
        self.counts.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.counts.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.counts.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.counts.instances()
    }

    fn tables(&self) -> usize {
        self.counts.tables()
    }

    fn memories(&self) -> usize {
        self.counts.memories()
    }
}

/// What a plugin's store holds.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: SandboxLimiter,
    pub(crate) output: LogPipe,
    /// The engine's tick count (see `engine::EPOCH_TICK`), advanced with its epoch.
    ticks: Arc<AtomicU64>,
    /// The tick at which the current call must end, the same deadline as the store's epoch
    /// deadline: WASI waits give up there (epoch interruption only stops wasm code, not a host
    /// call that blocks). A tick count rather than an `Instant`, because reading the clock costs
    /// ~0.3 µs per call on some virtual machines.
    deadline_tick: u64,
}

impl HostState {
    pub(crate) fn new(limits: &Limits, ticks: Arc<AtomicU64>) -> Self {
        let output = LogPipe::default();
        let wasi = WasiCtxBuilder::new()
            .stdout(output.clone())
            .stderr(output.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_WASI_RESOURCES);
        Self {
            wasi,
            table,
            limits: limits.limiter(),
            output,
            deadline_tick: ticks.load(Ordering::Relaxed) + limits.deadline_ticks(),
            ticks,
        }
    }

    /// Starts the deadline of a call; the caller sets the same number of ticks as the store's
    /// epoch deadline.
    pub(crate) fn start_call(&mut self, deadline_ticks: u64) {
        self.deadline_tick = self.ticks.load(Ordering::Relaxed) + deadline_ticks;
    }

    /// The resource table, the engine's tick count and the current call's deadline tick.
    pub(super) fn poll_parts(&mut self) -> (&mut ResourceTable, &AtomicU64, u64) {
        (&mut self.table, &self.ticks, self.deadline_tick)
    }

    pub(crate) fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.limits
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The plugin's stdout and stderr: kept in memory (at most [`LogPipe::CAPACITY`] bytes; older
/// output is dropped, writes never fail) until the host drains it into its logs.
#[derive(Clone, Default)]
pub(crate) struct LogPipe(Arc<Mutex<VecDeque<u8>>>);

impl LogPipe {
    const CAPACITY: usize = 64 * 1024;

    fn push(&self, bytes: &[u8]) {
        let mut buf = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = &bytes[bytes.len().saturating_sub(Self::CAPACITY)..];
        let overflow = (buf.len() + bytes.len()).saturating_sub(Self::CAPACITY);
        buf.drain(..overflow);
        buf.extend(bytes);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
    }

    /// Takes everything written so far.
    pub(crate) fn take(&self) -> String {
        let mut buf = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let bytes: Vec<u8> = buf.drain(..).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl IsTerminal for LogPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for LogPipe {
    async fn ready(&mut self) {}
}

impl OutputStream for LogPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(Self::CAPACITY)
    }
}

impl tokio::io::AsyncWrite for LogPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_rounds_up() {
        let l = |ms| Limits {
            timeout: Duration::from_millis(ms),
            memory: 0,
            fuel: None,
        };
        assert_eq!(l(200).deadline_ticks(), 21);
        assert_eq!(l(5).deadline_ticks(), 2);
        assert_eq!(l(0).deadline_ticks(), 2);
    }

    #[test]
    fn memory_cap_is_shared_by_all_memories() {
        let limits = Limits {
            timeout: Duration::from_millis(200),
            memory: 10 << 20,
            fuel: None,
        };
        let mut l = limits.limiter();
        // Four memories (what `memories(4)` allows) of 3 MiB each pass a 10 MiB cap together.
        let mib = 1 << 20;
        for _ in 0..3 {
            assert!(l.memory_growing(0, 3 * mib, None).unwrap());
        }
        let err = l.memory_growing(0, 3 * mib, None).unwrap_err();
        assert!(err.downcast_ref::<MemoryCapExceeded>().is_some(), "{err}");
        // Growing one of them by what is left is fine; a growth that then fails gives its bytes
        // back (and traps).
        assert!(l.memory_growing(3 * mib, 4 * mib, None).unwrap());
        assert!(l.memory_growing(4 * mib, 5 * mib, None).is_err());
        l.memory_grow_failed(wasmtime::Error::msg("mmap failed"))
            .expect_err("growth failures trap");
        assert_eq!(l.memory_used, 9 * mib);
        assert!(l.memory_growing(3 * mib, 4 * mib, None).unwrap());
        assert_eq!(l.memory_used, 10 * mib);
        // A memory's own maximum still applies.
        assert!(!l.memory_growing(0, 2 * mib, Some(mib)).unwrap());
    }

    #[test]
    fn log_pipe_keeps_the_tail() {
        let p = LogPipe::default();
        p.push(&vec![b'a'; LogPipe::CAPACITY]);
        p.push(b"end");
        let s = p.take();
        assert_eq!(s.len(), LogPipe::CAPACITY);
        assert!(s.ends_with("aend"));
        assert_eq!(p.take(), "");
    }
}
