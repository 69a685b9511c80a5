//! `stdin` source and `stdout` sink: lines in, lines out.

use std::io::Write;
use std::sync::Arc;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::ack::Ack;
use crate::api::{Sink, SinkRecord, Source, SourceContext};
use crate::error::ConnectorError;
use crate::file::{read_lines, render_line};
use crate::units::int;

/// Reads standard input line by line (partition `stdin`, offset = line number). Standard input
/// cannot be re-read, so a restart starts with whatever comes next.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StdinConfig {
    /// Records per batch.
    #[serde(default = "int::<usize, 1000>")]
    #[schemars(range(min = 1, max = 100000))]
    pub batch_size: usize,
}

/// Writes records to standard output, one per line.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StdoutConfig {
    /// Write a JSON envelope per line (key, value, headers, timestamp, metadata).
    #[serde(default)]
    pub envelope: bool,
}

pub struct StdinSource {
    cfg: StdinConfig,
}

impl StdinSource {
    pub fn new(cfg: StdinConfig) -> Self {
        Self { cfg }
    }
}

#[async_trait]
impl Source for StdinSource {
    /// Reading standard input blocks until a line or EOF comes, and cannot be interrupted. So
    /// the blocking reader feeds a small channel of its own, and this task forwards its batches:
    /// when the pipeline stops, this task returns at once and the reader, still waiting for
    /// input, is left behind holding nothing of the pipeline (the process exits without it).
    async fn run(&mut self, ctx: SourceContext) -> Result<(), ConnectorError> {
        let batch = self.cfg.batch_size.max(1);
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let stop = ctx.shutdown.clone();
        // Lines already consumed in an earlier run are gone: start fresh.
        let reader = tokio::task::spawn_blocking(move || {
            let stdin = std::io::stdin();
            read_lines(stdin.lock(), Arc::from("stdin"), None, batch, &tx, &stop)
                .map(|_| ())
                .map_err(|e| ConnectorError::io("stdin source: read", e))
        });
        loop {
            tokio::select! {
                biased;
                _ = ctx.shutdown.cancelled() => return Ok(()),
                b = rx.recv() => match b {
                    Some(b) => {
                        if !ctx.send(b).await {
                            return Ok(());
                        }
                    }
                    // The reader is done: end of input, or a read error.
                    None => break,
                },
            }
        }
        reader.await.map_err(|e| {
            ConnectorError::fatal(format!("stdin source: reader thread failed: {e}"))
        })?
    }
}

pub struct StdoutSink {
    cfg: StdoutConfig,
    buf: Vec<u8>,
    pending: Vec<Ack>,
}

impl StdoutSink {
    pub fn new(cfg: StdoutConfig) -> Self {
        Self {
            cfg,
            buf: Vec::new(),
            pending: Vec::new(),
        }
    }
}

#[async_trait]
impl Sink for StdoutSink {
    async fn write(&mut self, batch: Vec<SinkRecord>) -> Result<(), ConnectorError> {
        for r in batch {
            render_line(&r.record, &r.route, self.cfg.envelope, &mut self.buf);
            self.buf.push(b'\n');
            self.pending.push(r.ack);
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ConnectorError> {
        let mut out = std::io::stdout().lock();
        out.write_all(&self.buf)
            .and_then(|_| out.flush())
            .map_err(|e| ConnectorError::io("stdout sink: write", e))?;
        self.buf.clear();
        for a in self.pending.drain(..) {
            a.ack();
        }
        Ok(())
    }
}
