//! Processing on a pool of worker threads (`pipeline.workers` > 1).
//!
//! ```text
//!                        ┌─► worker 0 (own stages) ─┐
//!  source ──► dispatcher ┼─► worker 1 (own stages) ─┼──► sink
//!            (admission) └─► worker N-1 ...       ──┘
//! ```
//!
//! The dispatcher (the thread that reads the source channel) admits each batch in source order
//! (the `max_records` cut, counters, the ticket and its per-partition `seq`) and queues it for
//! the partition's worker: a partition seen for the first time goes to the worker with the fewest
//! open partitions, and stays with it until its last batch (a closed shard, the end of a file). One partition always goes to the same worker, whose
//! queue and whose sends to the sink are first in, first out: the sink sees each partition's
//! records in order. A worker that fails or panics stops the source, the dispatcher and the other workers;
//! batches still queued are dropped unprocessed, and their tickets never complete, so nothing past
//! the failure is committed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use sluice_connectors::{PartitionId, SinkRecord, SourceBatch};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::PipelineError;
use super::process::{Admission, Admitted, Work};

/// Which worker processes each partition: a new partition goes to the worker with the fewest
/// open partitions (the lowest index on a tie) and keeps it until its last batch. Partitions
/// spread evenly whatever their ids, so N partitions keep N workers busy, also as shards close
/// and their children open (a DynamoDB stream replaces its shards every few hours).
struct Assignment {
    of: HashMap<PartitionId, usize>,
    load: Vec<usize>,
}

impl Assignment {
    fn new(workers: usize) -> Self {
        Self {
            of: HashMap::new(),
            load: vec![0; workers],
        }
    }

    fn worker(&mut self, partition: &PartitionId) -> usize {
        if let Some(&w) = self.of.get(partition) {
            return w;
        }
        let w = (0..self.load.len())
            .min_by_key(|&w| self.load[w])
            .unwrap_or(0);
        self.load[w] += 1;
        self.of.insert(partition.clone(), w);
        w
    }

    /// The partition's last batch was handed to its worker: its place is free.
    fn finish(&mut self, partition: &PartitionId) {
        if let Some(w) = self.of.remove(partition) {
            self.load[w] -= 1;
        }
    }
}

/// Marks the pool as failed when a worker ends with an error or unwinds from a panic.
struct Failing<'a> {
    failed: &'a AtomicBool,
    stop_source: &'a CancellationToken,
    armed: bool,
}

impl Drop for Failing<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.failed.store(true, Ordering::Release);
            self.stop_source.cancel();
        }
    }
}

/// One worker thread: processes its queue in order until it closes or another worker fails.
fn worker(
    mut work: Work,
    queue: std::sync::mpsc::Receiver<Admitted>,
    output: mpsc::Sender<Vec<SinkRecord>>,
    failed: &AtomicBool,
    stop_source: &CancellationToken,
) -> Result<(), PipelineError> {
    let mut guard = Failing {
        failed,
        stop_source,
        armed: true,
    };
    while let Ok(admitted) = queue.recv() {
        if failed.load(Ordering::Acquire) {
            break;
        }
        work.handle(admitted, &output)?;
    }
    guard.armed = false;
    Ok(())
}

/// Admits batches on this thread and processes them on one thread per [`Work`].
pub(super) fn run(
    mut admission: Admission,
    workers: Vec<Work>,
    queue_capacity: usize,
    mut input: mpsc::Receiver<SourceBatch>,
    output: mpsc::Sender<Vec<SinkRecord>>,
) -> Result<(), PipelineError> {
    let n = workers.len();
    let failed = AtomicBool::new(false);
    let stop_source = admission.stop_source.clone();
    std::thread::scope(|s| {
        let mut queues = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for (i, w) in workers.into_iter().enumerate() {
            // The dispatcher holds one more batch while it waits for a full queue: with
            // `queue_capacity - 1` here (the pipeline's `channel_capacity`), a worker has at most
            // `channel_capacity` batches waiting for it (none queued with a capacity of 1: each
            // batch is handed over directly).
            let (tx, rx) = std::sync::mpsc::sync_channel(queue_capacity.saturating_sub(1));
            let (output, failed, stop_source) = (output.clone(), &failed, &stop_source);
            let thread = std::thread::Builder::new()
                .name(format!("sluice-worker-{i}"))
                .spawn_scoped(s, move || worker(w, rx, output, failed, stop_source))
                .map_err(|e| {
                    PipelineError::Internal(format!("cannot start processing worker {i}: {e}"))
                });
            match thread {
                Ok(t) => {
                    queues.push(tx);
                    threads.push(t);
                }
                Err(e) => {
                    // The workers started so far end when their queues close below.
                    failed.store(true, Ordering::Release);
                    drop(queues);
                    // They end at once without having had any work: nothing to report.
                    let _ = join(threads);
                    return Err(e);
                }
            }
        }
        drop(output);
        // A closed queue: that worker failed, and its error is the one returned.
        let mut assignment = Assignment::new(n);
        let dispatched = admission.dispatch(&mut input, |admitted| {
            let i = assignment.worker(&admitted.partition);
            if admitted.end_of_partition {
                assignment.finish(&admitted.partition);
            }
            Ok(!failed.load(Ordering::Acquire)
                && queues.get(i).is_some_and(|q| q.send(admitted).is_ok()))
        });
        // The workers finish what is queued (unless one failed) and end.
        drop(queues);
        join(threads).and(dispatched)
    })
}

/// Joins the workers and returns the most telling error: a worker's own error before "the sink
/// stopped taking records" (a symptom), and a panic as an internal error.
fn join(
    threads: Vec<std::thread::ScopedJoinHandle<'_, Result<(), PipelineError>>>,
) -> Result<(), PipelineError> {
    let mut first: Option<PipelineError> = None;
    for (i, t) in threads.into_iter().enumerate() {
        let e = match t.join() {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                PipelineError::Internal(format!(
                    "the processing task failed: worker {i} panicked: {msg}"
                ))
            }
        };
        if first
            .as_ref()
            .is_none_or(|f| matches!(f, PipelineError::SinkGone))
        {
            first = Some(e);
        }
    }
    first.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::Assignment;
    use sluice_connectors::PartitionId;

    fn p(id: &str) -> PartitionId {
        PartitionId::from(id)
    }

    #[test]
    fn partitions_spread_evenly() {
        for (n, workers) in [(4, 2), (12, 2), (12, 12), (16, 16), (6, 2)] {
            let mut a = Assignment::new(workers);
            for i in 0..n {
                a.worker(&p(&format!("shardId-{i:012}")));
            }
            assert_eq!(a.load, vec![n / workers; workers], "{n} over {workers}");
        }
    }

    #[test]
    fn a_partition_keeps_its_worker() {
        let mut a = Assignment::new(3);
        let first: Vec<usize> = ["a", "b", "c", "d"]
            .iter()
            .map(|i| a.worker(&p(i)))
            .collect();
        assert_eq!(first, [0, 1, 2, 0]);
        for (i, w) in ["d", "a", "c", "b"].iter().zip([0, 0, 2, 1]) {
            assert_eq!(a.worker(&p(i)), w, "{i}");
        }
    }

    #[test]
    fn an_ended_partition_frees_its_place_for_the_next_one() {
        // Two workers reading `b` and a chain of shards that close one after another: each child
        // goes where its parent was, not onto b's worker.
        let mut a = Assignment::new(2);
        assert_eq!(a.worker(&p("a0")), 0);
        assert_eq!(a.worker(&p("b")), 1);
        for i in 0..5 {
            a.finish(&p(&format!("a{i}")));
            assert_eq!(a.worker(&p(&format!("a{}", i + 1))), 0, "a{}", i + 1);
            assert_eq!(a.load, [1, 1]);
        }
        a.finish(&p("never seen"));
        assert_eq!(a.load, [1, 1]);
    }
}
