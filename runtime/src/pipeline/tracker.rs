//! Turns acknowledgements into commits: per partition, the offset of the highest contiguous
//! acknowledged batch is committed every `commit_interval` and at the end.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use sluice_connectors::retry::Backoff;
use sluice_connectors::units::Dur;
use sluice_connectors::{Committed, CommittedOffsets, Completion, PartitionId};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::metrics::{ErrorStage, Metrics};
use crate::offsets::leases::{Drain, Leases};
use crate::offsets::{OffsetError, OffsetStore};

#[derive(Default)]
struct PartState {
    /// Sequence number of the next ticket to apply.
    next: u64,
    /// Completed tickets waiting for an earlier one.
    waiting: BTreeMap<u64, Completion>,
    /// A ticket of this partition failed: nothing after it may be committed.
    stuck: bool,
}

/// Tracks completions and commits contiguous progress.
pub struct Tracker {
    namespace: String,
    store: Arc<dyn OffsetStore>,
    parts: HashMap<PartitionId, PartState>,
    /// Everything committed so far (what the watch shows).
    committed: CommittedOffsets,
    /// Advanced but not yet committed.
    pending: CommittedOffsets,
    pending_records: u64,
    metrics: Arc<Metrics>,
    watch: watch::Sender<Arc<CommittedOffsets>>,
    /// Partitions the source announces as newly assigned; claimed in the store before the next
    /// commit.
    assigned: Option<mpsc::UnboundedReceiver<Vec<PartitionId>>>,
    /// Announced but not yet claimed (a claim failed).
    to_claim: Vec<PartitionId>,
    /// With leases: only partitions whose lease this worker holds are committed, each on the
    /// lease's counter; and handoffs ask for a partition's drain.
    leases: Option<Arc<Leases>>,
    drain_rx: Option<mpsc::UnboundedReceiver<Drain>>,
    /// Drains waiting for the sink's acknowledgements.
    drains: Vec<Drain>,
}

impl Tracker {
    pub fn new(
        namespace: String,
        store: Arc<dyn OffsetStore>,
        start: CommittedOffsets,
        metrics: Arc<Metrics>,
    ) -> (Self, watch::Receiver<Arc<CommittedOffsets>>) {
        let (tx, rx) = watch::channel(Arc::new(start.clone()));
        metrics.set_offsets(rx.borrow().clone());
        (
            Self {
                namespace,
                store,
                parts: HashMap::new(),
                committed: start,
                pending: CommittedOffsets::new(),
                pending_records: 0,
                metrics,
                watch: tx,
                assigned: None,
                to_claim: Vec::new(),
                leases: None,
                drain_rx: None,
                drains: Vec::new(),
            },
            rx,
        )
    }

    /// Applies one completion; advances its partition as far as contiguity allows.
    pub fn complete(&mut self, c: Completion) {
        Metrics::add(&self.metrics.delivered, if c.ok { c.records } else { 0 });
        let part = self.parts.entry(c.partition.clone()).or_default();
        part.waiting.insert(c.seq, c);
        while !part.stuck {
            let Some(c) = part.waiting.remove(&part.next) else {
                break;
            };
            if !c.ok {
                tracing::warn!(
                    partition = %c.partition,
                    offset = %c.last_offset,
                    "records were not acknowledged by the sink; offsets of this partition stay before them"
                );
                part.stuck = true;
                break;
            }
            part.next += 1;
            self.pending_records += c.records;
            self.pending.insert(
                c.partition.clone(),
                Committed {
                    offset: c.last_offset.clone(),
                    finished: c.end_of_partition,
                },
            );
        }
    }

    /// Listens to the source's announcements of newly assigned partitions.
    pub fn claims(&mut self, assigned: mpsc::UnboundedReceiver<Vec<PartitionId>>) {
        self.assigned = Some(assigned);
    }

    /// Commits through leases: see [`Leases::commit`]; `drains` are the handoffs' requests.
    pub fn leases(&mut self, leases: Arc<Leases>, drains: mpsc::UnboundedReceiver<Drain>) {
        self.leases = Some(leases);
        self.drain_rx = Some(drains);
    }

    /// Answers the drains whose partition the sink acknowledged up to the requested offset (or
    /// that cannot advance: a failed ticket), after committing.
    async fn check_drains(&mut self) {
        let acked = |t: &Self, p: &PartitionId| {
            t.pending
                .get(p)
                .or_else(|| t.committed.get(p))
                .map(|c| c.offset.clone())
        };
        let (ready, waiting): (Vec<Drain>, Vec<Drain>) =
            std::mem::take(&mut self.drains).into_iter().partition(|d| {
                d.offset.is_none()
                    || acked(self, &d.partition) == d.offset
                    || self.parts.get(&d.partition).is_some_and(|s| s.stuck)
            });
        self.drains = waiting;
        if ready.is_empty() {
            return;
        }
        if let Err(e) = self.commit().await {
            tracing::warn!(pipeline = %self.namespace, error = %e, "commit before a lease handoff failed; the next owner re-reads what was not committed");
        }
        for d in ready {
            let _ = d.done.send(());
        }
    }

    /// Commits what advanced since the last commit, after claiming newly assigned partitions.
    /// A partition is announced before any of its records is read, so its claim is always
    /// received here before a commit of its offsets.
    pub async fn commit(&mut self) -> Result<(), OffsetError> {
        if let Some(rx) = &mut self.assigned {
            while let Ok(ps) = rx.try_recv() {
                self.to_claim.extend(ps);
            }
        }
        if !self.to_claim.is_empty() {
            self.store.claim(&self.namespace, &self.to_claim).await?;
            tracing::debug!(pipeline = %self.namespace, partitions = ?self.to_claim, "newly assigned partitions claimed in the offset store");
            self.to_claim.clear();
        }
        if let Some(l) = &self.leases {
            // A partition whose lease is gone is never committed again by this worker.
            self.pending.retain(|p, _| l.holds(p));
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        match &self.leases {
            Some(l) => {
                for p in l.commit(&self.pending).await? {
                    self.pending.remove(&p);
                }
            }
            None => self.store.commit(&self.namespace, &self.pending).await?,
        }
        tracing::debug!(pipeline = %self.namespace, partitions = self.pending.len(), "offsets committed");
        Metrics::add(&self.metrics.committed, self.pending_records);
        self.metrics.committed_now();
        self.pending_records = 0;
        self.committed.extend(self.pending.drain());
        let now = Arc::new(self.committed.clone());
        self.metrics.set_offsets(now.clone());
        self.watch.send_replace(now);
        Ok(())
    }

    /// Runs until every ticket sender is gone, committing every `interval` and at the end.
    ///
    /// A commit the store refuses for good (fenced by another worker or a reset, a corrupt or
    /// invalid store) ends the run at once with that error. Transient failures are retried with
    /// jittered backoff (the next attempt comes sooner than the next tick, never later); once
    /// commits have failed for [`give_up_after`]`(interval)` the run ends with
    /// [`OffsetError::Unavailable`]. The caller stops the pipeline whenever this returns an error.
    pub async fn run(
        mut self,
        mut completions: mpsc::UnboundedReceiver<Completion>,
        interval: Duration,
    ) -> Result<(), OffsetError> {
        let limit = give_up_after(interval);
        let mut next_commit = Instant::now() + interval;
        let mut failing: Option<(Instant, Box<dyn Iterator<Item = Duration> + Send>)> = None;
        loop {
            tokio::select! {
                c = completions.recv() => match c {
                    Some(c) => {
                        self.complete(c);
                        if !self.drains.is_empty() {
                            self.check_drains().await;
                        }
                    }
                    None => break,
                },
                d = async { self.drain_rx.as_mut()?.recv().await }, if self.drain_rx.is_some() => match d {
                    Some(d) => {
                        self.drains.push(d);
                        self.check_drains().await;
                    }
                    None => self.drain_rx = None,
                },
                _ = tokio::time::sleep_until(next_commit) => {
                    match self.commit().await {
                        Ok(()) => {
                            if let Some((since, _)) = failing.take() {
                                tracing::info!(pipeline = %self.namespace, failed_for = ?since.elapsed(), "offset commits work again");
                            }
                            next_commit = Instant::now() + interval;
                        }
                        Err(e) if !e.is_transient() => {
                            self.metrics.error(ErrorStage::Offsets);
                            tracing::error!(pipeline = %self.namespace, error = %e, "offset commit refused; stopping the pipeline");
                            return Err(e);
                        }
                        Err(e) => {
                            self.metrics.error(ErrorStage::Offsets);
                            let (since, delays) = failing.get_or_insert_with(|| (Instant::now(), Box::new(retry_backoff(interval).delays())));
                            let failing_for = since.elapsed();
                            if failing_for >= limit {
                                tracing::error!(pipeline = %self.namespace, error = %e, failing_for = ?failing_for, "offset commits keep failing; stopping the pipeline");
                                return Err(OffsetError::Unavailable { failing_for, limit, last: Box::new(e) });
                            }
                            let delay = delays.next().unwrap_or(interval).min(interval);
                            tracing::warn!(pipeline = %self.namespace, error = %e, failing_for = ?failing_for, retry_in = ?delay, "offset commit failed; retrying");
                            next_commit = Instant::now() + delay;
                        }
                    }
                }
            }
        }
        // The final commit: a few quick retries of transient errors, none of a refusal.
        let mut delays = retry_backoff(interval).delays().take(FINAL_RETRIES);
        loop {
            match self.commit().await {
                Ok(()) => return Ok(()),
                Err(e) if !e.is_transient() => return Err(e),
                Err(e) => match delays.next() {
                    Some(delay) => {
                        tracing::warn!(pipeline = %self.namespace, error = %e, retry_in = ?delay, "final offset commit failed; retrying");
                        tokio::time::sleep(delay).await;
                    }
                    None => return Err(e),
                },
            }
        }
    }
}

/// The sink's request (exactly-once): commit once the tickets written so far completed. The
/// sink is flushed and writes nothing until the answer, so the transaction holds exactly the
/// records whose offsets the commit writes (plus none: batches whose records were all filtered
/// or dead-lettered put nothing in it).
pub struct CommitRequest {
    /// Per source partition, the last ticket the sink wrote records of.
    pub through: HashMap<PartitionId, u64>,
    /// `Ok(true)`: committed; `Ok(false)`: not committed because a ticket failed (the error that
    /// failed it stops the pipeline); `Err`: the commit failed (message, whether a restart from
    /// the committed offsets may get past it).
    pub reply: oneshot::Sender<Result<bool, (String, bool)>>,
}

/// Where a commit request stands.
enum Progress {
    Behind,
    Reached,
    /// A ticket failed: records of it may be in the transaction, which must not commit.
    Stuck,
}

impl Tracker {
    fn progress(&self, through: &HashMap<PartitionId, u64>) -> Progress {
        if self.parts.values().any(|p| p.stuck) {
            return Progress::Stuck;
        }
        let behind = through
            .iter()
            .any(|(p, seq)| self.parts.get(p).is_none_or(|s| s.next <= *seq));
        if behind {
            Progress::Behind
        } else {
            Progress::Reached
        }
    }

    /// Answers a request whose tickets are in (or all tickets are, `closed`); gives it back
    /// while it must wait.
    async fn answer(
        &mut self,
        req: CommitRequest,
        closed: bool,
    ) -> Result<Option<CommitRequest>, OffsetError> {
        match self.progress(&req.through) {
            Progress::Behind if !closed => return Ok(Some(req)),
            Progress::Behind | Progress::Stuck => {
                tracing::warn!(pipeline = %self.namespace, "a batch was not acknowledged: the transaction is not committed");
                let _ = req.reply.send(Ok(false));
            }
            Progress::Reached => match self.commit().await {
                Ok(()) => {
                    let _ = req.reply.send(Ok(true));
                }
                Err(e) => {
                    self.metrics.error(ErrorStage::Offsets);
                    tracing::error!(pipeline = %self.namespace, error = %e, "exactly-once commit failed; stopping the pipeline");
                    let retriable = matches!(e, OffsetError::Aborted { .. });
                    let _ = req.reply.send(Err((e.to_string(), retriable)));
                    return Err(e);
                }
            },
        }
        Ok(None)
    }

    /// The exactly-once variant of [`Tracker::run`]: commits only when the sink asks (it is
    /// flushed and waits), and at the end only if the sink says it ended cleanly (`sink_done`)
    /// and no ticket failed. Every commit error ends the run; an aborted transaction is
    /// [`OffsetError::Aborted`] (the supervisor rebuilds the pipeline from the last commit).
    pub async fn run_transactional(
        mut self,
        mut completions: mpsc::UnboundedReceiver<Completion>,
        mut requests: mpsc::UnboundedReceiver<CommitRequest>,
        sink_done: oneshot::Receiver<bool>,
    ) -> Result<(), OffsetError> {
        let mut waiting: Option<CommitRequest> = None;
        let mut open = true;
        loop {
            if let Some(req) = waiting.take() {
                waiting = self.answer(req, false).await?;
            }
            tokio::select! {
                c = completions.recv() => match c {
                    Some(c) => self.complete(c),
                    None => break,
                },
                r = requests.recv(), if open && waiting.is_none() => match r {
                    Some(r) => waiting = Some(r),
                    None => open = false,
                },
            }
        }
        if let Some(req) = waiting.take() {
            self.answer(req, true).await?;
        }
        if !sink_done.await.unwrap_or(false) {
            return Ok(());
        }
        if self.parts.values().any(|p| p.stuck) {
            tracing::warn!(pipeline = %self.namespace, "a batch was not acknowledged: the last transaction is not committed");
            return Ok(());
        }
        self.commit().await
    }
}

/// Retries of the final commit after its first attempt.
const FINAL_RETRIES: usize = 4;

/// How long periodic commits may keep failing before the pipeline stops: ten commit intervals.
pub fn give_up_after(interval: Duration) -> Duration {
    interval.saturating_mul(10)
}

/// Delays between attempts of a failing commit: from a tenth of the interval (at most 100 ms)
/// up to the interval itself, jittered.
fn retry_backoff(interval: Duration) -> Backoff {
    let base = (interval / 10).min(Duration::from_millis(100));
    Backoff {
        base: Dur(base),
        max: Dur(interval.max(base)),
        exp: 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offsets::MemoryStore;
    use crate::offsets::testing::{Hook, Hooked};
    use sluice_connectors::Offset;

    fn done(p: &str, seq: u64, last: u64, ok: bool) -> Completion {
        Completion {
            partition: p.into(),
            seq,
            last_offset: Offset::from(last),
            records: 10,
            end_of_partition: false,
            ok,
        }
    }

    /// A tracker of namespace `p` over `store`, starting from nothing.
    fn tracker(store: Arc<dyn OffsetStore>) -> (Tracker, watch::Receiver<Arc<CommittedOffsets>>) {
        Tracker::new("p".into(), store, Default::default(), Default::default())
    }

    #[tokio::test]
    async fn commits_only_the_contiguous_prefix() {
        let store = Arc::new(MemoryStore::default());
        let (mut t, rx) = tracker(store.clone());
        t.complete(done("a", 1, 19, true));
        t.commit().await.expect("commit");
        assert!(
            store.load("p").await.expect("load").is_empty(),
            "ticket 0 is missing"
        );
        t.complete(done("a", 0, 9, true));
        t.complete(done("a", 3, 39, true));
        t.commit().await.expect("commit");
        assert_eq!(
            store.load("p").await.expect("load")["a"].offset,
            Offset::from(19)
        );
        assert_eq!(rx.borrow()["a"].offset, Offset::from(19));
    }

    #[tokio::test]
    async fn a_failed_ticket_blocks_its_partition_only() {
        let store = Arc::new(MemoryStore::default());
        let (mut t, _rx) = tracker(store.clone());
        t.complete(done("a", 0, 9, true));
        t.complete(done("a", 1, 19, false));
        t.complete(done("a", 2, 29, true));
        t.complete(done("b", 0, 5, true));
        t.commit().await.expect("commit");
        let s = store.load("p").await.expect("load");
        assert_eq!(s["a"].offset, Offset::from(9));
        assert_eq!(s["b"].offset, Offset::from(5));
    }
    /// Records what the tracker asks of the store, in order.
    #[derive(Default)]
    struct Recording {
        calls: std::sync::Mutex<Vec<String>>,
    }

    impl Hook for Recording {
        const NAME: &'static str = "recording";

        fn claim(&self, _ns: &str, ps: &[PartitionId]) {
            let mut calls = self.calls.lock().expect("lock");
            calls.extend(ps.iter().map(|p| format!("claim {p}")));
        }
        fn commit(&self, _ns: &str, c: &CommittedOffsets) -> Result<(), OffsetError> {
            let mut names: Vec<String> = c.keys().map(|p| format!("commit {p}")).collect();
            names.sort();
            self.calls.lock().expect("lock").extend(names);
            Ok(())
        }
    }

    #[tokio::test]
    async fn newly_assigned_partitions_are_claimed_before_their_first_commit() {
        let store = Arc::new(Hooked::<Recording>::default());
        let (mut t, _rx) = tracker(store.clone());
        let (assigned, rx) = mpsc::unbounded_channel();
        t.claims(rx);
        t.complete(done("a", 0, 9, true));
        t.commit().await.expect("commit");
        // A rebalance hands over `b`: the source announces it before reading from it.
        assigned.send(vec![PartitionId::from("b")]).expect("send");
        t.complete(done("b", 0, 5, true));
        t.commit().await.expect("commit");
        t.complete(done("b", 1, 6, true));
        t.commit().await.expect("commit");
        assert_eq!(
            *store.hook.calls.lock().expect("lock"),
            ["commit a", "claim b", "commit b", "commit b"]
        );
    }

    /// Exactly-once: a commit waits for every ticket the sink wrote, never commits while a
    /// ticket failed, and the final commit happens only after a clean end of the sink.
    #[tokio::test]
    async fn transactional_commits_wait_for_what_the_sink_wrote() {
        let store = Arc::new(MemoryStore::default());
        let (t, _rx) = tracker(store.clone());
        let (completed, completions) = mpsc::unbounded_channel();
        let (requests, requests_rx) = mpsc::unbounded_channel();
        let (sink_done, sink_done_rx) = oneshot::channel();
        let task = tokio::spawn(t.run_transactional(completions, requests_rx, sink_done_rx));
        let ask = |through: &[(&str, u64)]| {
            let (reply, answer) = oneshot::channel();
            let through = through
                .iter()
                .map(|(p, s)| (PartitionId::from(*p), *s))
                .collect();
            requests
                .send(CommitRequest { through, reply })
                .expect("send");
            answer
        };
        completed.send(done("a", 0, 9, true)).expect("send");
        let mut answer = ask(&[("a", 1)]);
        // A bounded wait for something that must not happen.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut answer)
                .await
                .is_err(),
            "ticket a/1 is not in yet"
        );
        completed.send(done("a", 1, 19, true)).expect("send");
        assert_eq!(answer.await.expect("answer"), Ok(true));
        assert_eq!(
            store.load("p").await.expect("load")["a"].offset,
            Offset::from(19)
        );
        // A failed ticket: nothing more is committed, not even at the end.
        completed.send(done("a", 2, 29, false)).expect("send");
        completed.send(done("b", 0, 5, true)).expect("send");
        assert_eq!(ask(&[("b", 0)]).await.expect("answer"), Ok(false));
        sink_done.send(true).expect("send");
        drop((completed, requests));
        task.await.expect("join").expect("run");
        let s = store.load("p").await.expect("load");
        assert_eq!(s["a"].offset, Offset::from(19));
        assert!(!s.contains_key("b"));
    }
}
