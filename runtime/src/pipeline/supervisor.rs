//! The supervisor of one pipeline: it builds and runs the pipeline, owns its state (starting,
//! running, paused, restarting, failed, finished), applies the spec's `restart:` policy, and is
//! what the HTTP API's pause, resume and restart act on. Every (re)build starts from the
//! committed offsets; one handle of metrics is kept over restarts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::metrics::{ErrorStage, Metrics};
use super::{Pipeline, PipelineError, RunOptions, Summary};
use crate::offsets::OffsetError;
use crate::plugin::PluginHost;
use crate::spec::{LoadedSpec, RestartSpec};

/// Where a pipeline is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Being built (plugins instantiated, connectors connecting, offsets read).
    Starting,
    /// Built and running (records flow once `up` is true).
    Running,
    /// Stopped by an operator after committing what was delivered; `resume` rebuilds it.
    Paused,
    /// Failed with a retriable error; waiting for the next attempt.
    Restarting,
    /// Failed for good: a fatal error, or the restart attempts ran out.
    Failed,
    /// Ended cleanly: source exhausted, `--max-records` reached, or shutdown.
    Finished,
}

/// An operator's command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Pause,
    Resume,
    Restart,
}

/// What the API shows of a pipeline.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub name: String,
    pub state: State,
    /// Source and sink connected, records flowing.
    pub up: bool,
    pub restarts: u64,
    pub last_error: Option<String>,
    pub counts: Counts,
    /// Per-partition lag the source reports, in seconds (Kinesis: `MillisBehindLatest`).
    pub lag_seconds: std::collections::BTreeMap<String, f64>,
    /// Per-partition lag in records (Kafka: high watermark minus position).
    pub lag_records: std::collections::BTreeMap<String, u64>,
    /// Committed offsets by partition, as of the last commit.
    pub offsets: std::collections::BTreeMap<String, sluice_connectors::Committed>,
}

/// Record counts since the process started (over restarts).
#[derive(Debug, Clone, Serialize)]
pub struct Counts {
    pub read: u64,
    pub delivered: u64,
    pub committed: u64,
    pub dead_lettered: u64,
    pub bytes_read: u64,
    pub sink_records: u64,
    pub last_commit_unix_seconds: Option<f64>,
}

#[derive(Debug)]
struct Inner {
    state: State,
    last_error: Option<String>,
}

/// The shared view of a supervised pipeline: read by the API, commanded through [`Handle::send`].
#[derive(Debug)]
pub struct Handle {
    name: String,
    metrics: Arc<Metrics>,
    inner: Mutex<Inner>,
    commands: mpsc::UnboundedSender<Command>,
}

impl Handle {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn state(&self) -> State {
        self.lock().state
    }

    fn set(&self, state: State, error: Option<String>) {
        let mut inner = self.lock();
        inner.state = state;
        if error.is_some() {
            inner.last_error = error;
        }
    }

    /// Running with source and sink connected, or finished: nothing to wait for.
    pub fn is_ready(&self) -> bool {
        match self.state() {
            State::Running => self.metrics.is_up(),
            State::Finished => true,
            _ => false,
        }
    }

    /// Queues an operator's command; false once the supervisor has ended.
    pub fn send(&self, cmd: Command) -> bool {
        self.commands.send(cmd).is_ok()
    }

    /// Committed offsets by partition, as of the last commit.
    pub fn offsets(&self) -> std::collections::BTreeMap<String, sluice_connectors::Committed> {
        self.metrics
            .offsets()
            .iter()
            .map(|(p, c)| (p.to_string(), c.clone()))
            .collect()
    }

    pub fn status(&self) -> Status {
        let (state, last_error) = {
            let inner = self.lock();
            (inner.state, inner.last_error.clone())
        };
        let s = self.metrics.snapshot();
        Status {
            name: self.name.clone(),
            state,
            up: self.metrics.is_up(),
            restarts: self
                .metrics
                .restarts
                .load(std::sync::atomic::Ordering::Relaxed),
            last_error,
            counts: Counts {
                read: s.read,
                delivered: s.delivered,
                committed: s.committed,
                dead_lettered: s.dead_lettered,
                bytes_read: s.bytes_read,
                sink_records: self
                    .metrics
                    .sink_records
                    .load(std::sync::atomic::Ordering::Relaxed),
                last_commit_unix_seconds: self.metrics.committed_at(),
            },
            lag_seconds: self
                .metrics
                .source_lag
                .snapshot()
                .into_iter()
                .map(|(p, ms)| (p.to_string(), ms as f64 / 1000.0))
                .collect(),
            lag_records: self
                .metrics
                .source_lag
                .records_snapshot()
                .into_iter()
                .map(|(p, n)| (p.to_string(), n))
                .collect(),
            offsets: self.offsets(),
        }
    }
}

impl PipelineError {
    /// Whether rebuilding the pipeline from its committed offsets may get past this error: a
    /// connector that says so (unreachable, throttled, connection lost), an offset store that was
    /// unreachable. Bad records, bad config, plugins, and refused or fenced commits are final.
    pub fn is_retriable(&self) -> bool {
        match self {
            PipelineError::Source(e) | PipelineError::Sink(e) => e.retriable,
            PipelineError::SinkGone => true,
            PipelineError::Offsets(e) => {
                e.is_transient()
                    || matches!(
                        e,
                        OffsetError::Unavailable { .. } | OffsetError::Aborted { .. }
                    )
            }
            PipelineError::BadRecord { .. }
            | PipelineError::DeadLetter(_)
            | PipelineError::Plugin(_)
            | PipelineError::Internal(_) => false,
        }
    }

    fn stage(&self) -> ErrorStage {
        match self {
            PipelineError::Source(_) => ErrorStage::Source,
            PipelineError::Sink(_) | PipelineError::SinkGone => ErrorStage::Sink,
            PipelineError::Offsets(_) => ErrorStage::Offsets,
            _ => ErrorStage::Process,
        }
    }
}

/// Delays between restarts: `initial`, doubling up to `max`, with up to 25 % jitter off.
pub fn backoff(policy: &RestartSpec, attempt: u32) -> Duration {
    let initial = policy.initial_backoff.0;
    let max = policy.max_backoff.0.max(initial);
    let base = initial
        .checked_mul(1u32 << attempt.min(20))
        .unwrap_or(max)
        .min(max);
    let jitter = rand::random::<f64>() * 0.25;
    base.mul_f64(1.0 - jitter)
}

/// A pipeline under supervision, ready to [`Supervisor::run`].
pub struct Supervisor {
    handle: Arc<Handle>,
    commands: mpsc::UnboundedReceiver<Command>,
}

impl Supervisor {
    pub fn new(name: &str) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            handle: Arc::new(Handle {
                name: name.to_string(),
                metrics: Arc::default(),
                inner: Mutex::new(Inner {
                    state: State::Starting,
                    last_error: None,
                }),
                commands: tx,
            }),
            commands: rx,
        }
    }

    pub fn handle(&self) -> Arc<Handle> {
        self.handle.clone()
    }

    /// Builds and runs the pipeline until it finishes, fails for good, or `shutdown` fires.
    /// Returns the last run's summary (counts over all runs) or the error that ended it.
    pub async fn run(
        mut self,
        loaded: &LoadedSpec,
        host: &PluginHost,
        shutdown: CancellationToken,
        opts: RunOptions,
    ) -> Result<Summary, PipelineError> {
        let handle = self.handle.clone();
        let name = handle.name.clone();
        let policy = &loaded.spec.restart;
        let started = std::time::Instant::now();
        let mut failures = 0u32;
        loop {
            handle.set(State::Starting, None);
            let built = tokio::select! {
                b = Pipeline::build_with(loaded, host, handle.metrics.clone()) => b,
                _ = shutdown.cancelled() => return Ok(finished(&handle, loaded, started)),
            };
            let outcome = match built {
                Ok(p) => {
                    handle.set(State::Running, None);
                    // Committed records are never read again, so what is left of the limit is
                    // the limit minus what earlier runs committed.
                    let committed = handle.metrics.snapshot().committed;
                    let opts = RunOptions {
                        max_records: opts.max_records.map(|m| m.saturating_sub(committed)),
                        ..opts
                    };
                    let run_stop = shutdown.child_token();
                    let mut run = Box::pin(p.run(run_stop.clone(), opts));
                    let mut command = None;
                    let result = loop {
                        tokio::select! {
                            r = &mut run => break r,
                            Some(c) = self.commands.recv(), if command.is_none() => {
                                if matches!(c, Command::Pause | Command::Restart) {
                                    tracing::info!(pipeline = %name, command = ?c, "stopping the pipeline: draining and committing");
                                    command = Some(c);
                                    run_stop.cancel();
                                }
                            }
                        }
                    };
                    match (result, command) {
                        (Ok(_), Some(c)) | (Err(_), Some(c)) if !shutdown.is_cancelled() => {
                            Outcome::Command(c)
                        }
                        (Ok(summary), _) => Outcome::Done(summary),
                        (Err(e), _) => Outcome::Failed(e),
                    }
                }
                Err(e) => Outcome::Failed(e),
            };
            match outcome {
                Outcome::Done(mut summary) => {
                    handle.set(State::Finished, None);
                    summary.elapsed = started.elapsed();
                    return Ok(summary);
                }
                Outcome::Command(Command::Pause) => {
                    handle.set(State::Paused, None);
                    tracing::info!(pipeline = %name, "paused");
                    // Nothing reads while paused; a source that can keep its lag current
                    // without reading (Kinesis) is asked every so often.
                    let mut probe = loaded.spec.source.lag_probe().await;
                    let mut tick = tokio::time::interval(
                        probe
                            .as_ref()
                            .map_or(Duration::from_secs(3600), |p| p.interval()),
                    );
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tokio::select! {
                            c = self.commands.recv() => match c {
                                Some(Command::Resume | Command::Restart) => break,
                                Some(Command::Pause) => {}
                                None => return Ok(finished(&handle, loaded, started)),
                            },
                            _ = shutdown.cancelled() => return Ok(finished(&handle, loaded, started)),
                            _ = tick.tick(), if probe.is_some() => {
                                if let Some(p) = probe.as_mut() {
                                    p.probe(&handle.metrics.offsets(), &handle.metrics.source_lag).await;
                                }
                            }
                        }
                    }
                    tracing::info!(pipeline = %name, "resuming from committed offsets");
                }
                Outcome::Command(_) => {
                    tracing::info!(pipeline = %name, "restarting from committed offsets");
                }
                Outcome::Failed(e) => {
                    handle.metrics.error(e.stage());
                    let message = e.to_string();
                    let retry = e.is_retriable()
                        && !shutdown.is_cancelled()
                        && policy.attempts.is_none_or(|n| failures < n);
                    if !retry {
                        handle.set(State::Failed, Some(message));
                        if e.is_retriable() && !shutdown.is_cancelled() {
                            tracing::error!(pipeline = %name, error = %e, attempts = failures, "pipeline failed; no restart attempts left");
                        }
                        return Err(e);
                    }
                    let delay = backoff(policy, failures);
                    failures += 1;
                    handle.set(State::Restarting, Some(message));
                    tracing::warn!(pipeline = %name, error = %e, attempt = failures, retry_in = ?delay, "pipeline failed; restarting from committed offsets");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.cancelled() => {
                            handle.set(State::Failed, None);
                            return Err(e);
                        }
                    }
                    Metrics::add(&handle.metrics.restarts, 1);
                }
            }
        }
    }
}

enum Outcome {
    Done(Summary),
    Command(Command),
    Failed(PipelineError),
}

fn finished(handle: &Handle, loaded: &LoadedSpec, started: std::time::Instant) -> Summary {
    handle.set(State::Finished, None);
    Summary {
        name: handle.name.clone(),
        counts: handle.metrics.snapshot(),
        elapsed: started.elapsed(),
        dead_letter: super::dead_letter_path(&loaded.spec, &loaded.base_dir),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::units::Dur;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let policy = RestartSpec {
            attempts: None,
            initial_backoff: Dur(Duration::from_millis(100)),
            max_backoff: Dur(Duration::from_secs(1)),
        };
        let d: Vec<Duration> = (0..8).map(|a| backoff(&policy, a)).collect();
        assert!(d[0] <= Duration::from_millis(100) && d[0] >= Duration::from_millis(75));
        assert!(d[2] <= Duration::from_millis(400) && d[2] >= Duration::from_millis(300));
        assert!(d[7] <= Duration::from_secs(1) && d[7] >= Duration::from_millis(750));
        assert!(backoff(&policy, u32::MAX) <= Duration::from_secs(1));
    }

    #[test]
    fn fenced_commits_bad_records_and_plugins_are_not_retried() {
        let fenced = PipelineError::Offsets(OffsetError::Fenced {
            store: "s".into(),
            namespace: "n".into(),
            partition: "0".into(),
            detail: String::new(),
        });
        assert!(!fenced.is_retriable());
        let bad = PipelineError::BadRecord {
            partition: "0".into(),
            offset: "1".into(),
            stage: "decode json".into(),
            message: "m".into(),
        };
        assert!(!bad.is_retriable());
        assert!(
            PipelineError::Sink(sluice_connectors::ConnectorError::retriable("down"))
                .is_retriable()
        );
        assert!(
            !PipelineError::Sink(sluice_connectors::ConnectorError::fatal("no such topic"))
                .is_retriable()
        );
        let io = OffsetError::Io {
            store: "s".into(),
            message: "m".into(),
            source: std::io::Error::other("x"),
        };
        assert!(
            PipelineError::Offsets(OffsetError::Unavailable {
                failing_for: Duration::from_secs(1),
                limit: Duration::from_secs(1),
                last: Box::new(io),
            })
            .is_retriable()
        );
    }
}
