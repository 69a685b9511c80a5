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
//! worker `hash(partition) % N`. One partition always goes to the same worker, whose queue and
//! whose sends to the sink are first in, first out: the sink sees each partition's records in
//! order. A worker that fails or panics stops the source, the dispatcher and the other workers;
//! batches still queued are dropped unprocessed, and their tickets never complete, so nothing past
//! the failure is committed.

use std::sync::atomic::{AtomicBool, Ordering};

use sluice_connectors::{SinkRecord, SourceBatch};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::PipelineError;
use super::process::{Admission, Admitted, Work};

/// The worker that processes `partition`'s batches, of `workers`: FNV-1a of the partition id, the
/// same in every run and on every machine. Ids that differ in their last character, a digit
/// (`0`..`3`, `shardId-…0`..`…3`, `orders/0`..`orders/3`), spread evenly over 2 or 4 workers: the low
/// bits of FNV-1a follow the last byte's.
pub(super) fn worker_of(partition: &str, workers: usize) -> usize {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = partition
        .bytes()
        .fold(OFFSET_BASIS, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    // `workers` is at least 1; the remainder is below it, so it fits in usize.
    (hash % workers.max(1) as u64) as usize
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
            // `channel_capacity - 1` here, a worker has at most `channel_capacity` batches waiting
            // for it (none queued with a capacity of 1: each batch is handed over directly).
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
        let dispatched = admission.dispatch(&mut input, |admitted| {
            let i = worker_of(&admitted.partition, n);
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
    use super::worker_of;

    #[test]
    fn the_worker_of_a_partition_is_fixed() {
        // FNV-1a: the same on every machine and in every run (known answers).
        assert_eq!(worker_of("", 4), (0xcbf2_9ce4_8422_2325u64 % 4) as usize);
        assert_eq!(
            worker_of("a", 1_000_000_007),
            (0xaf63_dc4c_8601_ec8cu64 % 1_000_000_007) as usize
        );
    }

    #[test]
    fn four_generator_partitions_spread_evenly() {
        for workers in [2usize, 4] {
            let mut load = vec![0; workers];
            for p in ["0", "1", "2", "3"] {
                load[worker_of(p, workers)] += 1;
            }
            assert!(
                load.iter().all(|&l| l == 4 / workers),
                "{workers}: {load:?}"
            );
        }
        for id in ["shardId-00000000000", "orders/"] {
            let mut load = [0; 4];
            for i in 0..4 {
                load[worker_of(&format!("{id}{i}"), 4)] += 1;
            }
            assert_eq!(load, [1, 1, 1, 1], "{id}");
        }
    }
}
