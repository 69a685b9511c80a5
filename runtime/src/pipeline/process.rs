//! The processing stage: admission (the `max_records` cut, counters, tickets, in source order),
//! then decode → transforms → partitioner → encode with the error policy applied to bad records.
//! With one worker both run on one thread, a batch at a time; with more, see [`super::workers`].
//! Either way a partition's batches are processed one at a time, in order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use sluice_connectors::{
    Completion, PartitionId, Record, Rejected, Route, SinkRecord, SourceBatch, Ticket,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::PipelineError;
use super::dlq::DeadLetter;
use super::metrics::{ErrorStage, Metrics};
use crate::spec::Tolerance;
use crate::stage::{Outcome, Partitioner, Stage};

/// What happens to bad records. Shared by the workers: only the dead-letter file is locked, and
/// only to write a bad record or sync the file.
pub struct ErrorPolicy {
    pub pipeline: String,
    pub tolerance: Tolerance,
    pub dead_letter: Option<Mutex<DeadLetter>>,
    pub metrics: Arc<Metrics>,
}

impl ErrorPolicy {
    /// Handles one bad record: an error with `tolerance: none`, a dead-letter entry with `all`.
    pub(super) fn bad(&self, r: &Record, stage: &str, message: &str) -> Result<(), PipelineError> {
        self.metrics.error(ErrorStage::Process);
        match (&self.tolerance, &self.dead_letter) {
            (Tolerance::All, Some(dl)) => {
                let mut dl = lock(dl);
                dl.write(&self.pipeline, stage, message, r).map_err(|e| {
                    PipelineError::DeadLetter(format!("cannot write {}: {e}", dl.path().display()))
                })?;
                Metrics::add(&self.metrics.dead_lettered, 1);
                tracing::debug!(pipeline = %self.pipeline, partition = %r.partition, offset = %r.offset, stage, error = message, "record dead-lettered");
                Ok(())
            }
            _ => Err(PipelineError::BadRecord {
                partition: r.partition.to_string(),
                offset: r.offset.to_string(),
                stage: stage.to_string(),
                message: message.to_string(),
            }),
        }
    }

    /// A batch that failed as a whole: each of its records goes to the policy.
    fn all_bad(&self, records: &[Record], stage: &str, message: &str) -> Result<(), PipelineError> {
        for r in records {
            self.bad(r, stage, message)?;
        }
        Ok(())
    }

    pub(super) fn sync(&self) -> Result<(), PipelineError> {
        if let Some(dl) = &self.dead_letter {
            let mut dl = lock(dl);
            dl.sync().map_err(|e| {
                PipelineError::DeadLetter(format!("cannot sync {}: {e}", dl.path().display()))
            })?;
        }
        Ok(())
    }
}

/// Runs one stage over `records`, keeping each record's companion value (its route) with its
/// outputs.
fn apply<T: Clone>(
    stage: &mut dyn Stage,
    (records, extras): (Vec<Record>, Vec<T>),
    policy: &ErrorPolicy,
) -> Result<(Vec<Record>, Vec<T>), PipelineError> {
    if records.is_empty() {
        return Ok((records, extras));
    }
    let started = std::time::Instant::now();
    let result = stage.process(&records);
    policy.metrics.stage_call(stage.name(), started.elapsed());
    let outcomes = match result {
        Ok(o) if o.len() == records.len() => o,
        Ok(o) => {
            let msg = format!(
                "the stage broke its contract: {} outcomes for {} records",
                o.len(),
                records.len()
            );
            policy.all_bad(&records, stage.name(), &msg)?;
            return Ok((Vec::new(), Vec::new()));
        }
        Err(e) => {
            tracing::warn!(pipeline = %policy.pipeline, stage = %e.stage, error = %e.message, records = records.len(), "batch failed in a stage");
            policy.all_bad(&records, &e.stage, &e.message)?;
            return Ok((Vec::new(), Vec::new()));
        }
    };
    let mut out = Vec::with_capacity(records.len());
    let mut out_extras = Vec::with_capacity(records.len());
    for ((r, extra), outcome) in records.into_iter().zip(extras).zip(outcomes) {
        match outcome {
            Outcome::Keep => {
                out.push(r);
                out_extras.push(extra);
            }
            Outcome::Records(rs) => {
                out_extras.extend(std::iter::repeat_n(extra, rs.len()));
                out.extend(rs);
            }
            Outcome::Error(msg) => policy.bad(&r, stage.name(), &msg)?,
        }
    }
    Ok((out, out_extras))
}

/// One worker's own stage instances: decode and the transforms, the partitioner, encode.
pub struct Stages {
    /// Decode, then the transforms.
    pub pre: Vec<Box<dyn Stage>>,
    pub partitioner: Box<dyn Partitioner>,
    /// Encode.
    pub post: Vec<Box<dyn Stage>>,
}

/// Admission, in source order on one thread: the `max_records` cut, the read counters, and each
/// batch's ticket with its per-partition `seq`.
pub struct Admission {
    pub max_records: Option<u64>,
    pub metrics: Arc<Metrics>,
    pub rejects: mpsc::UnboundedSender<Rejected>,
    pub completions: mpsc::UnboundedSender<Completion>,
    pub stop_source: CancellationToken,
    pub(super) admitted: u64,
    pub(super) seqs: HashMap<PartitionId, u64>,
}

/// An admitted batch: its records and the ticket that commits them.
pub struct Admitted {
    pub(super) partition: PartitionId,
    /// The partition's last batch: no more come for it.
    pub(super) end_of_partition: bool,
    records: Vec<Record>,
    ticket: Ticket,
}

/// What admission makes of a source batch.
enum Admit {
    /// `max_records` was reached before it: nothing of it is delivered or committed.
    Stop,
    /// Nothing to deliver or commit (an empty batch without an end offset).
    Skip,
    /// To process; `last` once it reaches `max_records`.
    Batch { admitted: Admitted, last: bool },
}

impl Admission {
    /// Admission with nothing admitted yet.
    pub fn new(
        max_records: Option<u64>,
        metrics: Arc<Metrics>,
        rejects: mpsc::UnboundedSender<Rejected>,
        completions: mpsc::UnboundedSender<Completion>,
        stop_source: CancellationToken,
    ) -> Self {
        Self {
            max_records,
            metrics,
            rejects,
            completions,
            stop_source,
            admitted: 0,
            seqs: HashMap::new(),
        }
    }

    fn admit(&mut self, batch: SourceBatch) -> Admit {
        let SourceBatch {
            partition,
            mut records,
            mut end_of_partition,
            end_offset,
        } = batch;
        let mut last = false;
        if let Some(max) = self.max_records {
            let left = max.saturating_sub(self.admitted);
            if left == 0 {
                // Nothing of this batch is delivered, so nothing of it is committed: not even
                // an end-of-partition offset that would skip its records next run
                // (`--max-records 0` reads nothing).
                self.stop_source.cancel();
                return Admit::Stop;
            }
            if records.len() as u64 >= left {
                if records.len() as u64 > left {
                    records.truncate(left as usize);
                    end_of_partition = false;
                }
                last = true;
            }
        }
        let Some(last_offset) = records.last().map(|r| r.offset.clone()).or(end_offset) else {
            return Admit::Skip;
        };
        let n = records.len() as u64;
        self.admitted += n;
        Metrics::add(&self.metrics.read, n);
        Metrics::add(
            &self.metrics.bytes_read,
            records.iter().map(|r| r.value.len() as u64).sum(),
        );
        let seq = self.seqs.entry(partition.clone()).or_insert(0);
        let ticket = Ticket::with_rejects(
            Completion {
                partition: partition.clone(),
                seq: *seq,
                last_offset,
                records: n,
                end_of_partition,
                ok: true,
            },
            self.completions.clone(),
            Some(self.rejects.clone()),
        );
        *seq += 1;
        Admit::Batch {
            admitted: Admitted {
                partition,
                end_of_partition,
                records,
                ticket,
            },
            last,
        }
    }
}

/// The work on admitted batches: stages, partitioner and encode, with the error policy.
pub struct Work {
    pub stages: Stages,
    pub partition_count: Option<u32>,
    pub policy: Arc<ErrorPolicy>,
}

impl Work {
    /// Processes one admitted batch and hands its output to the sink; on an error the batch's
    /// ticket fails, so nothing of it (or after it in its partition) is committed.
    pub(super) fn handle(
        &mut self,
        admitted: Admitted,
        output: &mpsc::Sender<Vec<SinkRecord>>,
    ) -> Result<(), PipelineError> {
        let Admitted {
            records, ticket, ..
        } = admitted;
        let result = self.process(records, &ticket).and_then(|out| {
            self.policy.sync()?;
            if !out.is_empty() && output.blocking_send(out).is_err() {
                return Err(PipelineError::SinkGone);
            }
            Ok(())
        });
        if result.is_err() {
            ticket.fail();
        }
        ticket.close();
        result
    }

    fn process(
        &mut self,
        records: Vec<Record>,
        ticket: &Ticket,
    ) -> Result<Vec<SinkRecord>, PipelineError> {
        let policy = &*self.policy;
        let Stages {
            pre,
            partitioner,
            post,
        } = &mut self.stages;
        let n = records.len();
        let mut items = (records, vec![(); n]);
        for stage in pre {
            items = apply(stage.as_mut(), items, policy)?;
        }
        let records = items.0;
        let mut routed: (Vec<Record>, Vec<Route>) = (
            Vec::with_capacity(records.len()),
            Vec::with_capacity(records.len()),
        );
        if !records.is_empty() {
            let name = partitioner.name().to_string();
            match partitioner.partition(&records, self.partition_count) {
                Ok(routes) if routes.len() == records.len() => {
                    for (r, route) in records.into_iter().zip(routes) {
                        match route {
                            Ok(route) => {
                                routed.0.push(r);
                                routed.1.push(route);
                            }
                            Err(msg) => policy.bad(&r, &name, &msg)?,
                        }
                    }
                }
                Ok(routes) => {
                    let msg = format!(
                        "the partitioner broke its contract: {} choices for {} records",
                        routes.len(),
                        records.len()
                    );
                    policy.all_bad(&records, &name, &msg)?;
                }
                Err(e) => policy.all_bad(&records, &e.stage, &e.message)?,
            }
        }
        for stage in post {
            routed = apply(stage.as_mut(), routed, policy)?;
        }
        Ok(routed
            .0
            .into_iter()
            .zip(routed.1)
            .map(|(record, route)| SinkRecord {
                record,
                route,
                ack: ticket.ack(),
            })
            .collect())
    }
}

/// The processing stage: admission, then the work on one thread (one worker) or on a pool of
/// worker threads, each partition always on the same one.
pub struct Processor {
    pub admission: Admission,
    /// One per worker thread (at least one).
    pub workers: Vec<Work>,
    /// Admitted batches waiting for each worker (with more than one).
    pub queue_capacity: usize,
}

impl Processor {
    /// Processes batches until the source is done or stopped. An error stops the source (the
    /// caller's drop guard).
    pub fn run(
        self,
        input: mpsc::Receiver<SourceBatch>,
        output: mpsc::Sender<Vec<SinkRecord>>,
    ) -> Result<(), PipelineError> {
        let Processor {
            admission,
            workers,
            queue_capacity,
        } = self;
        match <[Work; 1]>::try_from(workers) {
            Ok([work]) => run_one(admission, work, input, &output),
            // `Pipeline::build` makes at least one worker.
            Err(workers) if workers.is_empty() => Err(PipelineError::Internal(
                "the pipeline has no processing worker".into(),
            )),
            Err(workers) => super::workers::run(admission, workers, queue_capacity, input, output),
        }
    }
}

impl Admission {
    /// Admits the source's batches in order and hands each to `handoff`, until the source ends,
    /// `max_records` is reached (the source is then stopped) or `handoff` says its worker is
    /// gone (false). The one admission loop of one worker and of a pool.
    pub(super) fn dispatch(
        &mut self,
        input: &mut mpsc::Receiver<SourceBatch>,
        mut handoff: impl FnMut(Admitted) -> Result<bool, PipelineError>,
    ) -> Result<(), PipelineError> {
        while let Some(batch) = input.blocking_recv() {
            match self.admit(batch) {
                Admit::Stop => break,
                Admit::Skip => {}
                Admit::Batch { admitted, last } => {
                    if !handoff(admitted)? {
                        break;
                    }
                    if last {
                        self.stop_source.cancel();
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}

/// One worker: admission and work on this thread, with no hop between them.
fn run_one(
    mut admission: Admission,
    mut work: Work,
    mut input: mpsc::Receiver<SourceBatch>,
    output: &mpsc::Sender<Vec<SinkRecord>>,
) -> Result<(), PipelineError> {
    admission.dispatch(&mut input, |admitted| {
        work.handle(admitted, output)?;
        Ok(true)
    })
}

/// Locks the dead-letter file. A poisoned lock means a panic while writing an entry; the file
/// handle is still usable.
fn lock(p: &Mutex<DeadLetter>) -> MutexGuard<'_, DeadLetter> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// Applies the error policy to records the sink rejected, until every ticket is gone. With
/// `tolerance: none` the first rejection stops the pipeline (its ack is dropped, so its batch is
/// never committed).
pub fn handle_rejects(
    mut rejects: mpsc::UnboundedReceiver<Rejected>,
    policy: Arc<ErrorPolicy>,
    stop: CancellationToken,
) -> Result<(), PipelineError> {
    while let Some(r) = rejects.blocking_recv() {
        match policy
            .bad(&r.record, "sink", &r.reason)
            .and_then(|()| policy.sync())
        {
            Ok(()) => r.ack.ack(),
            Err(e) => {
                stop.cancel();
                return Err(e);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::BuiltinPartitioner;
    use sluice_connectors::Offset;

    /// A processor with no stages and `max_records`, and the receiver of its completions.
    fn processor(max_records: Option<u64>) -> (Processor, mpsc::UnboundedReceiver<Completion>) {
        let (completions, done) = mpsc::unbounded_channel();
        let (rejects, _) = mpsc::unbounded_channel();
        let p = Processor {
            admission: Admission::new(
                max_records,
                Arc::default(),
                rejects,
                completions,
                CancellationToken::new(),
            ),
            workers: vec![Work {
                stages: Stages {
                    pre: Vec::new(),
                    partitioner: super::super::partition::builtin(BuiltinPartitioner::Fixed),
                    post: Vec::new(),
                },
                partition_count: None,
                policy: Arc::new(ErrorPolicy {
                    pipeline: "pipe".into(),
                    tolerance: Tolerance::None,
                    dead_letter: None,
                    metrics: Arc::default(),
                }),
            }],
            queue_capacity: 4,
        };
        (p, done)
    }

    /// A shard's final batch: records, and the end offset Kinesis puts on every final batch.
    fn final_batch() -> SourceBatch {
        SourceBatch {
            partition: "shard-0".into(),
            records: (7..=9u64)
                .map(|i| Record::new("shard-0".into(), Offset::from(i), bytes::Bytes::new()))
                .collect(),
            end_of_partition: true,
            end_offset: Some(Offset::from(9)),
        }
    }

    #[test]
    fn max_records_zero_commits_nothing_of_a_final_batch_with_records() {
        let (p, mut done) = processor(Some(0));
        let stop = p.admission.stop_source.clone();
        let (tx, rx) = mpsc::channel(4);
        tx.blocking_send(final_batch()).expect("send");
        drop(tx);
        let (out, mut sink) = mpsc::channel(4);
        p.run(rx, out).expect("run");
        assert!(
            done.try_recv().is_err(),
            "no ticket completes, so nothing is committed"
        );
        assert!(sink.try_recv().is_err(), "nothing is delivered");
        assert!(stop.is_cancelled(), "the source is stopped");
    }

    #[test]
    fn max_records_cut_inside_a_final_batch_commits_only_what_was_delivered() {
        let (p, mut done) = processor(Some(2));
        let (tx, rx) = mpsc::channel(4);
        tx.blocking_send(final_batch()).expect("send");
        drop(tx);
        let (out, mut sink) = mpsc::channel(4);
        p.run(rx, out).expect("run");
        let delivered = sink.try_recv().expect("two records go to the sink");
        assert_eq!(delivered.len(), 2);
        drop(delivered);
        let c = done.try_recv().expect("the ticket completes");
        assert_eq!(c.last_offset, Offset::from(8));
        assert!(!c.end_of_partition, "the shard is not finished");
    }
}
