//! Engine tests with test doubles for the parts whose failures are hard to cause for real: a
//! sink whose flush fails, a stage that panics, a store whose commits fail. The DynamoDB fencing
//! test uses the real store on moto.

use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use sluice_connectors::discard::DiscardSink;
use sluice_connectors::generator::{GeneratorConfig, GeneratorSource};
use sluice_connectors::{CommittedOffsets, Offset, Record, SourceBatch};

use super::*;
use crate::offsets::testing::{Hook, Hooked};
use crate::offsets::{MemoryStore, Reset, ResetTo};
use crate::spec::BuiltinPartitioner;
use crate::stage::{Outcome, StageError};

/// A pipeline of these parts with a 20 ms flush interval.
fn pipeline(
    source: Box<dyn Source>,
    sink: Box<dyn Sink>,
    store: Arc<dyn OffsetStore>,
    pre: Vec<Box<dyn Stage>>,
    commit_interval: Duration,
) -> Pipeline {
    Pipeline {
        name: "pipe".into(),
        source,
        sink,
        stages: vec![stages(pre)],
        store,
        start: Default::default(),
        tolerance: Tolerance::None,
        dead_letter: None,
        commit_interval,
        channel_capacity: 4,
        max_buffered: 1000,
        flush_interval: Duration::from_millis(20),
        metrics: Arc::default(),
        leases: None,
        txn: None,
    }
}

/// One worker's stages: `pre`, then the fixed partitioner.
fn stages(pre: Vec<Box<dyn Stage>>) -> Stages {
    Stages {
        pre,
        partitioner: partition::builtin(BuiltinPartitioner::Fixed),
        post: Vec::new(),
    }
}

/// A generator of this JSON config into a discarding sink, with one worker per entry of
/// `workers`.
fn on_workers(config: serde_json::Value, workers: Vec<Stages>) -> Pipeline {
    let mut p = pipeline(
        generator(config),
        Box::new(DiscardSink),
        Arc::new(MemoryStore::default()),
        Vec::new(),
        Duration::from_millis(100),
    );
    p.stages = workers;
    p
}

/// A generator source of this JSON config.
fn generator(config: serde_json::Value) -> Box<dyn Source> {
    let cfg: GeneratorConfig = serde_json::from_value(config).expect("generator config");
    Box::new(GeneratorSource::new(cfg))
}

/// An endless generator: 2,000 records/s on one partition.
fn endless() -> Box<dyn Source> {
    generator(serde_json::json!({"partitions": 1, "rate": 2000, "batch_size": 50}))
}

/// Sends one batch of three records, then idles until the pipeline stops (a quiet tail).
struct OneThenIdle;

#[async_trait]
impl Source for OneThenIdle {
    async fn run(&mut self, ctx: SourceContext) -> Result<(), ConnectorError> {
        let records = (0..3u64)
            .map(|i| {
                Record::new(
                    "p".into(),
                    Offset::from(i),
                    bytes::Bytes::from_static(b"{}"),
                )
            })
            .collect();
        let batch = SourceBatch {
            partition: "p".into(),
            records,
            end_of_partition: false,
            end_offset: None,
        };
        if ctx.send(batch).await {
            ctx.shutdown.cancelled().await;
        }
        Ok(())
    }
}

/// Takes records, then fails to make them durable.
struct FailingFlush(Vec<SinkRecord>);

#[async_trait]
impl Sink for FailingFlush {
    async fn write(&mut self, batch: Vec<SinkRecord>) -> Result<(), ConnectorError> {
        self.0.extend(batch);
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ConnectorError> {
        Err(ConnectorError::fatal("test sink: fsync failed"))
    }
}

struct Panics;

impl Stage for Panics {
    fn name(&self) -> &str {
        "transform panics"
    }

    fn process(&mut self, _batch: &[Record]) -> Result<Vec<Outcome>, StageError> {
        panic!("a bug in a stage");
    }
}

/// Commits that fail from the `fail_from`-th call on (counting from 1), with a fenced or a
/// transient error, until `heal_at` (if any).
struct Flaky {
    calls: AtomicU32,
    fail_from: u32,
    heal_at: Option<u32>,
    fenced: bool,
}

/// A memory store whose commits are [`Flaky`].
fn flaky_store(fail_from: u32, heal_at: Option<u32>, fenced: bool) -> Arc<Hooked<Flaky>> {
    Arc::new(Hooked::new(Flaky {
        calls: AtomicU32::new(0),
        fail_from,
        heal_at,
        fenced,
    }))
}

impl Hook for Flaky {
    const NAME: &'static str = "flaky";

    fn commit(&self, namespace: &str, _offsets: &CommittedOffsets) -> Result<(), OffsetError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if n >= self.fail_from && self.heal_at.is_none_or(|h| n < h) {
            return Err(if self.fenced {
                OffsetError::Fenced {
                    store: Self::NAME.into(),
                    namespace: namespace.into(),
                    partition: "0".into(),
                    detail: " (now generation 9 by someone-else)".into(),
                }
            } else {
                OffsetError::Io {
                    store: Self::NAME.into(),
                    message: "disk full".into(),
                    source: std::io::Error::other("disk full"),
                }
            });
        }
        Ok(())
    }
}

/// Runs `p` until it ends, failing the test if that takes longer than `limit`.
async fn run_within(p: Pipeline, limit: Duration) -> (Result<Summary, PipelineError>, Duration) {
    let started = Instant::now();
    let r = tokio::time::timeout(
        limit,
        p.run(CancellationToken::new(), RunOptions::default()),
    )
    .await
    .unwrap_or_else(|_| panic!("the pipeline was still running after {limit:?}"));
    (r, started.elapsed())
}

/// The commit interval of [`commits_fail_from_the_second`].
const INTERVAL: Duration = Duration::from_millis(50);

/// Runs an endless source into a null sink, committing every [`INTERVAL`] to a store whose
/// second and later commits fail (`fenced`, or with a transient error), until the pipeline
/// ends, failing the test if that takes longer than `limit`. Returns the store too.
async fn commits_fail_from_the_second(
    fenced: bool,
    limit: Duration,
) -> (Arc<Hooked<Flaky>>, Result<Summary, PipelineError>, Duration) {
    let store = flaky_store(2, None, fenced);
    let p = pipeline(
        endless(),
        Box::new(DiscardSink),
        store.clone(),
        Vec::new(),
        INTERVAL,
    );
    let (r, elapsed) = run_within(p, limit).await;
    (store, r, elapsed)
}

#[tokio::test]
async fn a_failed_sink_stops_an_idle_source() {
    let p = pipeline(
        Box::new(OneThenIdle),
        Box::new(FailingFlush(Vec::new())),
        Arc::new(MemoryStore::default()),
        Vec::new(),
        Duration::from_millis(100),
    );
    let (r, _) = run_within(p, Duration::from_secs(2)).await;
    match r {
        Err(PipelineError::Sink(e)) => assert!(e.to_string().contains("fsync failed"), "{e}"),
        other => panic!("expected the sink's error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_panicking_processor_stops_an_idle_source() {
    let p = pipeline(
        Box::new(OneThenIdle),
        Box::new(DiscardSink),
        Arc::new(MemoryStore::default()),
        vec![Box::new(Panics)],
        Duration::from_millis(100),
    );
    let (r, _) = run_within(p, Duration::from_secs(2)).await;
    match r {
        Err(PipelineError::Internal(m)) => assert!(m.contains("processing task failed"), "{m}"),
        other => panic!("expected the processor's panic, got {other:?}"),
    }
}

#[tokio::test]
async fn a_panicking_worker_stops_the_source_and_the_other_workers() {
    // Worker 1 panics on its first batch; worker 0 would go on forever.
    let p = on_workers(
        serde_json::json!({"partitions": 4, "rate": 2000, "batch_size": 50}),
        vec![stages(Vec::new()), stages(vec![Box::new(Panics)])],
    );
    let (r, _) = run_within(p, Duration::from_secs(5)).await;
    match r {
        Err(PipelineError::Internal(m)) => {
            assert!(m.contains("worker 1 panicked: a bug in a stage"), "{m}")
        }
        other => panic!("expected the worker's panic, got {other:?}"),
    }
}

/// Records which threads process batches.
struct ThreadNames(Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>);

impl Stage for ThreadNames {
    fn name(&self) -> &str {
        "transform thread-names"
    }

    fn process(&mut self, batch: &[Record]) -> Result<Vec<Outcome>, StageError> {
        let name = std::thread::current().name().unwrap_or("?").to_string();
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name);
        Ok(batch.iter().map(|_| Outcome::Keep).collect())
    }
}

#[tokio::test]
async fn two_workers_process_on_two_threads_of_their_own() {
    let seen = Arc::default();
    let names = || stages(vec![Box::new(ThreadNames(Arc::clone(&seen)))]);
    let p = on_workers(
        serde_json::json!({"partitions": 4, "count": 2000, "batch_size": 50}),
        vec![names(), names()],
    );
    let (r, _) = run_within(p, Duration::from_secs(10)).await;
    let summary = r.expect("the run ends cleanly");
    assert_eq!(summary.counts.delivered, 2000);
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["sluice-worker-0", "sluice-worker-1"],
        "each worker's stages run on that worker's thread, and both get partitions"
    );
}

#[tokio::test]
async fn a_fenced_commit_stops_the_pipeline_at_once() {
    // The first commit works; the second is refused (another worker or a reset).
    let (store, r, elapsed) = commits_fail_from_the_second(true, Duration::from_secs(5)).await;
    match r {
        Err(PipelineError::Offsets(e)) => {
            assert!(e.is_fenced(), "{e}");
            assert!(e.to_string().contains("stale commit rejected"), "{e}");
        }
        other => panic!("expected a fenced commit, got {other:?}"),
    }
    assert_eq!(
        store.hook.calls.load(Ordering::SeqCst),
        2,
        "no commit is tried after a refusal"
    );
    // At once, not after the 5 s retry window (a bound far from both, so load cannot flake it).
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
}

#[tokio::test]
async fn failing_commits_stop_the_pipeline_after_ten_commit_intervals() {
    let (store, r, elapsed) = commits_fail_from_the_second(false, Duration::from_secs(10)).await;
    match r {
        Err(PipelineError::Offsets(OffsetError::Unavailable { last, .. })) => {
            assert!(last.to_string().contains("disk full"), "{last}")
        }
        other => panic!("expected commits to give up, got {other:?}"),
    }
    // One good commit after an interval, then ten intervals of failures.
    assert!(elapsed >= INTERVAL * 11, "gave up too soon: {elapsed:?}");
    assert!(
        elapsed < INTERVAL * 11 + Duration::from_secs(1),
        "{elapsed:?}"
    );
    assert!(
        store.hook.calls.load(Ordering::SeqCst) > 11,
        "retried with backoff, more often than once per interval: {} calls",
        store.hook.calls.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn a_transient_commit_failure_is_retried_and_the_run_commits_everything() {
    let store = flaky_store(1, Some(4), false);
    let source = generator(serde_json::json!({"partitions": 1, "count": 3000, "rate": 10000}));
    let p = pipeline(
        source,
        Box::new(DiscardSink),
        store.clone(),
        Vec::new(),
        Duration::from_millis(50),
    );
    let (r, _) = run_within(p, Duration::from_secs(10)).await;
    let summary = r.expect("the run recovers from three failed commits");
    assert_eq!(summary.counts.committed, 3000);
    assert_eq!(
        store.load("pipe").await.expect("load")["0"].offset,
        Offset::from(2999)
    );
}

/// With the real DynamoDB store (moto): an operator's `offsets reset` while the pipeline runs
/// fences it, and it stops at its next commit instead of running on without committing.
#[tokio::test]
async fn a_reset_of_the_dynamodb_store_stops_the_running_pipeline() {
    use crate::offsets::dynamodb_tests::{spec, table};
    let table = table();
    let store: Arc<dyn OffsetStore> =
        Arc::new(crate::offsets::DynamoStore::new(&spec(&table, true)));
    let start = store.load("pipe").await.expect("load");
    let interval = Duration::from_millis(200);
    let mut p = pipeline(
        endless(),
        Box::new(DiscardSink),
        store,
        Vec::new(),
        interval,
    );
    p.start = start;
    let run = tokio::spawn(p.run(CancellationToken::new(), RunOptions::default()));
    let operator = crate::offsets::DynamoStore::new(&spec(&table, false));
    assert!(
        sluice_test_kit::wait_until(Duration::from_secs(20), || async {
            !operator.load("pipe").await.expect("load").is_empty()
        })
        .await,
        "nothing was committed"
    );
    operator
        .reset(&Reset::one("pipe", "0", ResetTo::Offset(Offset::from(5))))
        .await
        .expect("reset");
    let reset_at = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the pipeline stops after the reset")
        .expect("join");
    match r {
        Err(PipelineError::Offsets(e)) => assert!(e.is_fenced(), "{e}"),
        other => panic!("expected a fenced commit, got {other:?}"),
    }
    assert!(
        reset_at.elapsed() < interval * 3 + Duration::from_secs(2),
        "{:?}",
        reset_at.elapsed()
    );
    assert_eq!(
        operator.load("pipe").await.expect("load")["0"].offset,
        Offset::from(5),
        "the reset stands"
    );
}
