//! The pipeline engine: source → processing → sink, with bounded channels between them,
//! acknowledgements flowing back to the offset tracker, and commits of contiguous progress.
//!
//! ```text
//!  source task ──SourceBatch──► processor thread ──Vec<SinkRecord>──► sink task
//!       ▲            (bounded)   admission, then       (bounded)         │ acks
//!       │                        decode/transforms/                      │
//!       │                        partitioner/encode                      │
//!       │                        (here, or on `pipeline.workers`         │
//!       │                         threads by partition: workers.rs)      ▼
//!       └──── start offsets ◄── offset store ◄── tracker (contiguous commits)
//! ```

mod dlq;
pub mod formats;
pub mod jq;
pub mod metrics;
pub mod partition;
mod process;
pub mod supervisor;
#[cfg(test)]
mod tests;
mod tracker;
mod workers;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_connectors::{
    ConnectorError, PartitionId, Sink, SinkConfig, SinkRecord, Source, SourceContext, Transactional,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use metrics::{ErrorStage, Exposition, Metrics, Snapshot};

use crate::offsets::leases::Leases;
use crate::offsets::{self, OffsetError, OffsetStore};
use crate::plugin::{PluginError, PluginHost};
use crate::spec::{
    DeadLetterSpec, FormatChoice, LoadedSpec, OffsetsSpec, PartitionerSpec, Tolerance,
    TransformSpec,
};
use crate::stage::{Partitioner, Stage};
use process::{Admission, ErrorPolicy, Processor, Stages, Work, handle_rejects};

/// Why a pipeline stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(
        "bad record at partition {partition} offset {offset} in {stage}: {message} (errors.tolerance is none: stopping; nothing past it is committed)"
    )]
    BadRecord {
        partition: String,
        offset: String,
        stage: String,
        message: String,
    },
    #[error("source: {0}")]
    Source(ConnectorError),
    #[error("sink: {0}")]
    Sink(ConnectorError),
    #[error("the sink stopped taking records")]
    SinkGone,
    #[error(transparent)]
    Offsets(#[from] OffsetError),
    #[error("dead-letter file: {0}")]
    DeadLetter(String),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("{0}")]
    Internal(String),
}

/// Options of one run.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Stop once this many source records are delivered and committed.
    pub max_records: Option<u64>,
    /// Stop each partition at the tip it had when the run started (`--until-caught-up`).
    pub until_caught_up: bool,
}

/// The outcome of a run that ended cleanly.
#[derive(Debug, Clone)]
pub struct Summary {
    pub name: String,
    pub counts: Snapshot,
    pub elapsed: Duration,
    pub dead_letter: Option<PathBuf>,
}

/// A built pipeline, ready to run.
pub struct Pipeline {
    name: String,
    source: Box<dyn Source>,
    sink: Box<dyn Sink>,
    /// Each processing worker's own stage instances (at least one).
    stages: Vec<Stages>,
    store: Arc<dyn OffsetStore>,
    start: sluice_connectors::CommittedOffsets,
    tolerance: Tolerance,
    dead_letter: Option<PathBuf>,
    commit_interval: Duration,
    channel_capacity: usize,
    max_buffered: usize,
    flush_interval: Duration,
    metrics: Arc<Metrics>,
    /// Set when the pipeline's workers share partitions through DynamoDB leases.
    leases: Option<Arc<Leases>>,
    /// Exactly-once: the sink's transaction, which the offset store commits through.
    txn: Option<Arc<dyn Transactional>>,
}

impl Pipeline {
    /// Builds every part of a validated spec: plugins are instantiated and connectors connect.
    pub async fn build(loaded: &LoadedSpec, host: &PluginHost) -> Result<Self, PipelineError> {
        Self::build_with(loaded, host, Arc::default()).await
    }

    /// Like [`Pipeline::build`], counting into `metrics` (a supervisor keeps one handle over
    /// restarts, so counters only grow).
    pub async fn build_with(
        loaded: &LoadedSpec,
        host: &PluginHost,
        metrics: Arc<Metrics>,
    ) -> Result<Self, PipelineError> {
        let spec = &loaded.spec;
        let base = &loaded.base_dir;
        let workers = spec.pipeline.workers.unwrap_or_else(default_workers).max(1);
        let stages = (0..workers)
            .map(|_| build_stages(spec, base, host))
            .collect::<Result<Vec<_>, _>>()?;
        let dead_letter = dead_letter_path(spec, base);
        let exactly_once = matches!(&spec.sink, SinkConfig::Kafka(k) if k.exactly_once);
        let mut leases = None;
        let (store, start, source, sink, txn) = if exactly_once {
            // The sink first: its `init_transactions` fences an earlier instance and aborts its
            // open transaction, which a read_committed read of the offsets would wait behind.
            let sink = spec.sink.build().await.map_err(PipelineError::Sink)?;
            let (Some(txn), OffsetsSpec::Kafka(k)) = (sink.transaction(), &spec.offsets) else {
                return Err(PipelineError::Internal(
                    "exactly_once needs the Kafka sink's transaction and the Kafka offset store (validate refuses anything else)".into(),
                ));
            };
            let store: Arc<dyn OffsetStore> = Arc::new(offsets::TxnStore::new(k, txn.clone()));
            let start = store.load(&spec.name).await?;
            let source = spec.source.build().await.map_err(PipelineError::Source)?;
            (store, start, source, sink, Some(txn))
        } else {
            // Offsets first: a store that cannot be read stops the pipeline before any
            // connector creates or touches anything.
            let store: Arc<dyn OffsetStore> = match &spec.offsets {
                OffsetsSpec::Dynamodb(d) if d.leases.is_some() => {
                    let dynamo = Arc::new(offsets::DynamoStore::new(d));
                    leases = d.leases.as_ref().map(|l| {
                        Arc::new(Leases::new(dynamo.clone(), &spec.name, l, metrics.clone()))
                    });
                    dynamo
                }
                other => Arc::from(offsets::open(other)),
            };
            let start = store.load(&spec.name).await?;
            let source = spec.source.build().await.map_err(PipelineError::Source)?;
            let sink = spec.sink.build().await.map_err(PipelineError::Sink)?;
            (store, start, source, sink, None)
        };
        Ok(Self {
            name: spec.name.clone(),
            source,
            sink,
            stages,
            store,
            start,
            tolerance: spec.errors.tolerance,
            dead_letter,
            commit_interval: spec.offsets.commit_interval(),
            channel_capacity: spec.pipeline.channel_capacity.max(1),
            max_buffered: spec.pipeline.max_buffered.max(1),
            flush_interval: spec.pipeline.flush_interval.0,
            metrics,
            leases,
            txn,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Live counters, for progress display.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Runs until the source is exhausted, `max_records` are committed, `shutdown` fires, or an
    /// error stops it. In every case, what the sink acknowledged is committed before returning.
    pub async fn run(
        self,
        shutdown: CancellationToken,
        opts: RunOptions,
    ) -> Result<Summary, PipelineError> {
        let started = Instant::now();
        let Pipeline {
            name,
            mut source,
            mut sink,
            stages,
            store,
            start,
            tolerance,
            dead_letter,
            commit_interval,
            channel_capacity,
            max_buffered,
            flush_interval,
            metrics,
            leases,
            txn,
        } = self;
        tracing::info!(pipeline = %name, store = %store.describe(), partitions = start.len(), "starting from committed offsets");
        let dl = match &dead_letter {
            Some(path) => Some(dlq::DeadLetter::open(path).map_err(|e| {
                PipelineError::DeadLetter(format!("cannot open {}: {e}", path.display()))
            })?),
            None => None,
        };
        let partition_count = sink.partition_count().await.map_err(PipelineError::Sink)?;
        // Source and sink are connected: records flow until `run` returns.
        metrics.set_up(true);
        let _down = Down(metrics.clone());

        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (assigned_tx, assigned_rx) = mpsc::unbounded_channel();
        let (mut tracker, committed) =
            tracker::Tracker::new(name.clone(), store, start.clone(), metrics.clone());
        tracker.claims(assigned_rx);
        // With leases: the manager grants partitions to the source and renews, takes and hands
        // over leases until the final commit is done.
        let mut grants = None;
        let mut manager = None;
        let stop_leases = CancellationToken::new();
        // Whatever part fails or panics stops the source, so the rest drains and `run` returns:
        // a part that ends with an error (or unwinds) drops its guard, which cancels.
        let stop_source = shutdown.child_token();
        if let Some(l) = &leases {
            let (discovered_tx, discovered_rx) = tokio::sync::watch::channel(Arc::default());
            let (released_tx, released_rx) = mpsc::unbounded_channel();
            let (drain_tx, drain_rx) = mpsc::unbounded_channel();
            tracker.leases(l.clone(), drain_rx);
            grants = Some(sluice_connectors::Grants {
                granted: l.subscribe(),
                discovered: discovered_tx,
                released: released_tx,
            });
            manager = Some(tokio::spawn(l.clone().run(
                discovered_rx,
                released_rx,
                drain_tx,
                stop_source.clone(),
                stop_leases.clone(),
            )));
        }
        let (src_tx, src_rx) = mpsc::channel(channel_capacity);
        let (sink_tx, sink_rx) = mpsc::channel(channel_capacity);
        let (eos, eos_tracker) = match &txn {
            Some(_) => {
                let (requests, requests_rx) = mpsc::unbounded_channel();
                let (done, done_rx) = oneshot::channel();
                let eos = Eos {
                    interval: commit_interval,
                    requests,
                    done,
                };
                (Some(eos), Some((requests_rx, done_rx)))
            }
            None => (None, None),
        };
        let tracker_task = {
            let guard = stop_source.clone().drop_guard();
            tokio::spawn(async move {
                let r = match eos_tracker {
                    Some((requests, sink_done)) => {
                        tracker
                            .run_transactional(done_rx, requests, sink_done)
                            .await
                    }
                    None => tracker.run(done_rx, commit_interval).await,
                };
                if r.is_ok() {
                    guard.disarm();
                }
                r
            })
        };
        let policy = Arc::new(ErrorPolicy {
            pipeline: name.clone(),
            tolerance,
            dead_letter: dl.map(std::sync::Mutex::new),
            metrics: metrics.clone(),
        });
        let (reject_tx, reject_rx) = mpsc::unbounded_channel();
        let reject_task = {
            let (policy, stop) = (policy.clone(), stop_source.clone());
            tokio::task::spawn_blocking(move || handle_rejects(reject_rx, policy, stop))
        };
        let ctx = SourceContext {
            start,
            output: src_tx,
            shutdown: stop_source.clone(),
            committed,
            assigned: Some(assigned_tx),
            lag: metrics.source_lag.clone(),
            grants,
            until_caught_up: opts.until_caught_up,
        };
        let source_task = tokio::spawn(async move { source.run(ctx).await });
        let processor = Processor {
            admission: Admission::new(
                opts.max_records,
                metrics.clone(),
                reject_tx,
                done_tx,
                stop_source.clone(),
            ),
            workers: stages
                .into_iter()
                .map(|stages| Work {
                    stages,
                    partition_count,
                    policy: policy.clone(),
                })
                .collect(),
            queue_capacity: channel_capacity,
        };
        let proc_task = {
            let guard = stop_source.clone().drop_guard();
            tokio::task::spawn_blocking(move || {
                let r = processor.run(src_rx, sink_tx);
                if r.is_ok() {
                    guard.disarm();
                }
                r
            })
        };
        let sink_task = {
            let guard = stop_source.clone().drop_guard();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let r = drive_sink(
                    sink.as_mut(),
                    sink_rx,
                    max_buffered,
                    flush_interval,
                    &metrics,
                    eos,
                )
                .await;
                // Dropping the sink drops the acks of anything it still holds (failing their
                // tickets), so the tracker can finish.
                drop(sink);
                if r.is_ok() {
                    guard.disarm();
                }
                r
            })
        };

        let joined = |what: &str, e: tokio::task::JoinError| {
            PipelineError::Internal(format!("the {what} task failed: {e}"))
        };
        let source_res = source_task.await;
        if !matches!(source_res, Ok(Ok(()))) {
            stop_source.cancel();
        }
        let proc_res = proc_task.await;
        let sink_res = sink_task.await;
        let tracker_res = tracker_task.await;
        let reject_res = reject_task.await;
        // The final commit is done (or failed): release the leases so that other workers take
        // them at once, from that commit.
        stop_leases.cancel();
        if let Some(m) = manager
            && let Err(e) = m.await
        {
            tracing::warn!(pipeline = %name, error = %e, "the lease manager failed");
        }
        if let Some(txn) = &txn {
            // Whatever the sink wrote after the last commit (nothing after a clean end) never
            // becomes visible; a fenced producer has nothing left to abort.
            txn.abort().await;
        }

        // The most telling error first: a bad record or a sink failure explains the others.
        // "The sink stopped taking records" is only a symptom when the sink says why.
        if matches!(proc_res, Ok(Err(PipelineError::SinkGone)))
            && let Ok(Err(e)) = sink_res
        {
            return Err(PipelineError::Sink(e));
        }
        // A refused commit (fenced, reset) or commits failing for too long stopped everything.
        let tracker_res = match tracker_res {
            Ok(Err(e)) if !e.is_transient() => return Err(e.into()),
            other => other,
        };
        proc_res.map_err(|e| joined("processing", e))??;
        reject_res.map_err(|e| joined("sink error policy", e))??;
        sink_res
            .map_err(|e| joined("sink", e))?
            .map_err(PipelineError::Sink)?;
        source_res
            .map_err(|e| joined("source", e))?
            .map_err(PipelineError::Source)?;
        tracker_res.map_err(|e| joined("offset", e))??;
        Ok(Summary {
            name,
            counts: metrics.snapshot(),
            elapsed: started.elapsed(),
            dead_letter,
        })
    }
}

/// One processing worker per core when `pipeline.workers` is not set.
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// One worker's instances of the spec's stages (plugins are instantiated again for each).
fn build_stages(
    spec: &crate::spec::Spec,
    base: &std::path::Path,
    host: &PluginHost,
) -> Result<Stages, PipelineError> {
    let mut pre: Vec<Box<dyn Stage>> = Vec::new();
    let mut post: Vec<Box<dyn Stage>> = Vec::new();
    if let Some(f) = &spec.format {
        match &f.decode {
            Some(FormatChoice::Builtin(b)) => pre.push(formats::stage(*b, true, f.csv.as_ref())),
            Some(FormatChoice::Wasm(p)) => pre.push(host.decoder(p, base)?),
            None => {}
        }
        match &f.encode {
            Some(FormatChoice::Builtin(b)) => post.push(formats::stage(*b, false, f.csv.as_ref())),
            Some(FormatChoice::Wasm(p)) => post.push(host.encoder(p, base)?),
            None => {}
        }
    }
    for t in &spec.transforms {
        match t {
            // `validate` compiled the program already: an error here is not expected.
            TransformSpec::Jq(jq) => pre.push(Box::new(
                jq::JqStage::new(jq).map_err(PipelineError::Internal)?,
            )),
            TransformSpec::Wasm(p) => pre.push(host.transform(p, base)?),
        }
    }
    let partitioner: Box<dyn Partitioner> = match &spec.partitioner {
        PartitionerSpec::Builtin(b) => partition::builtin(*b),
        PartitionerSpec::Fields(f) => Box::new(partition::Fields::new(f.clone())),
        PartitionerSpec::Wasm(p) => host.partitioner(p, base)?,
    };
    Ok(Stages {
        pre,
        partitioner,
        post,
    })
}

/// Where bad records go: only with `tolerance: all`.
pub(crate) fn dead_letter_path(
    spec: &crate::spec::Spec,
    base: &std::path::Path,
) -> Option<PathBuf> {
    (spec.errors.tolerance == Tolerance::All).then(|| match &spec.errors.dead_letter {
        Some(DeadLetterSpec::File(f)) => f.path.clone(),
        // `spec::load` fills in the default (resolved against the spec's folder).
        None => base.join(format!(".sluice/dead-letter/{}.jsonl", spec.name)),
    })
}

/// Clears `sluice_pipeline_up` when a run ends, however it ends.
struct Down(Arc<Metrics>);

impl Drop for Down {
    fn drop(&mut self) {
        self.0.set_up(false);
    }
}

/// How an exactly-once sink task drives commits: every `interval` it flushes the sink and asks
/// the tracker to commit through the tickets it wrote; at a clean end it says so on `done`.
struct Eos {
    interval: Duration,
    requests: mpsc::UnboundedSender<tracker::CommitRequest>,
    done: oneshot::Sender<bool>,
}

impl Eos {
    /// Asks for a commit through `through` and waits for it.
    async fn commit(&self, through: HashMap<PartitionId, u64>) -> Result<(), ConnectorError> {
        let gone = || ConnectorError::retriable("the offset tracker stopped");
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(tracker::CommitRequest { through, reply })
            .map_err(|_| gone())?;
        match answer.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((message, retriable))) => Err(ConnectorError {
                message,
                retriable,
                source: None,
            }),
            Err(_) => Err(gone()),
        }
    }
}

/// Feeds the sink: writes batches as they come, flushes when `max_buffered` records are waiting
/// or the oldest unflushed record has waited `flush_interval`, and at the end. Exactly-once
/// (`eos`): also flushes and commits every commit interval, writing nothing meanwhile.
async fn drive_sink(
    sink: &mut dyn Sink,
    mut input: mpsc::Receiver<Vec<SinkRecord>>,
    max_buffered: usize,
    flush_interval: Duration,
    metrics: &Metrics,
    eos: Option<Eos>,
) -> Result<(), ConnectorError> {
    let flush = async |sink: &mut dyn Sink| {
        let started = Instant::now();
        let r = sink.flush().await;
        metrics.sink_request(started.elapsed());
        r
    };
    let mut buffered = 0usize;
    let mut deadline: Option<tokio::time::Instant> = None;
    // Exactly-once: the next commit, and the last ticket written per partition since the last.
    let mut next_commit = eos
        .as_ref()
        .map(|e| tokio::time::Instant::now() + e.interval);
    let mut through: HashMap<PartitionId, u64> = HashMap::new();
    let idle = || tokio::time::Instant::now() + Duration::from_secs(3600);
    loop {
        let next = tokio::select! {
            b = input.recv() => b,
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(idle)), if deadline.is_some() => {
                flush(&mut *sink).await?;
                buffered = 0;
                deadline = None;
                continue;
            }
            _ = tokio::time::sleep_until(next_commit.unwrap_or_else(idle)), if next_commit.is_some() => {
                if let Some(eos) = &eos {
                    flush(&mut *sink).await?;
                    buffered = 0;
                    deadline = None;
                    eos.commit(std::mem::take(&mut through)).await?;
                    next_commit = Some(tokio::time::Instant::now() + eos.interval);
                }
                continue;
            }
        };
        let Some(batch) = next else { break };
        if eos.is_some()
            && let Some((partition, seq)) = batch.first().and_then(|r| r.ack.ticket())
        {
            through.insert(partition, seq);
        }
        let n = batch.len() as u64;
        buffered += batch.len();
        sink.write(batch).await?;
        Metrics::add(&metrics.sink_records, n);
        if buffered >= max_buffered {
            flush(&mut *sink).await?;
            buffered = 0;
            deadline = None;
        } else if deadline.is_none() {
            deadline = Some(tokio::time::Instant::now() + flush_interval);
        }
    }
    sink.close().await?;
    if let Some(eos) = eos {
        // The tracker makes the final commit only after a clean end.
        let _ = eos.done.send(true);
    }
    Ok(())
}
