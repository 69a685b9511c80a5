//! Per-plugin limits (call timeout, memory, fuel) and the sandbox a plugin runs in: a store whose
//! WASI context grants nothing (no files, sockets, env or args; stdin closed) and whose
//! stdout/stderr are captured into the host's logs.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
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

    fn store_limits(&self) -> StoreLimits {
        StoreLimitsBuilder::new()
            .memory_size(usize::try_from(self.memory).unwrap_or(usize::MAX))
            // A component built from Rust has one or two core instances and memories; the
            // margins keep a plugin from building huge instance graphs.
            .instances(16)
            .memories(4)
            .tables(16)
            .table_elements(100_000)
            .trap_on_grow_failure(true)
            .build()
    }
}

/// What a plugin's store holds.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    pub(crate) output: LogPipe,
}

impl HostState {
    pub(crate) fn new(limits: &Limits) -> Self {
        let output = LogPipe::default();
        let wasi = WasiCtxBuilder::new()
            .stdout(output.clone())
            .stderr(output.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limits: limits.store_limits(),
            output,
        }
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
