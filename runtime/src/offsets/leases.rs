//! Shard leases: the workers of one pipeline share a stream's shards through the rows of the
//! DynamoDB offsets table (the KCL's model).
//!
//! A lease is the partition's offset row with an `owner` and the row's `generation`, a counter
//! bumped by every renewal, take, handoff and commit, each a conditional write on the counter
//! this worker last saw. Nothing else arbitrates: no clocks are compared between hosts. A worker
//! judges another's lease expired when its counter did not change for `duration` on its own
//! clock, and its own lease lost when a renewal is refused or has not succeeded for `duration`.
//!
//! Every renewal interval (a third of `duration`) a worker scans the namespace, renews what it
//! holds, takes free and expired leases of shards whose parents' ends are committed, then asks
//! the busiest worker to hand one over (`next_owner`) while that worker holds two or more leases
//! more than it does. The asked worker stops reading the shard, waits until the sink acknowledged
//! what it read, commits, and passes the lease on, so the new owner starts where it stopped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_connectors::api::Granted;
use sluice_connectors::shards::ShardNode;
use sluice_connectors::{Committed, CommittedOffsets, Offset, PartitionId};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use aws_sdk_dynamodb::types::AttributeValue;
use schemars::JsonSchema;
use serde::Deserialize;
use sluice_connectors::units::{Dur, int, secs};

use super::dynamodb::{DynamoStore, Gen, Item, LeaseWrite};
use super::{OffsetError, OffsetRow};
use crate::pipeline::metrics::Metrics;

/// Shard leases shared by the workers of one pipeline (the KCL's model: conditional writes on a
/// counter in the offsets table; no clocks compared between hosts).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseSpec {
    /// A lease whose counter did not change for this long (on the observing worker's own clock)
    /// is expired and taken over. Leases are renewed every third of it.
    #[serde(default = "secs::<10>")]
    pub duration: Dur,
    /// Leases a worker may ask a busier worker to hand over per renewal interval.
    #[serde(default = "int::<u32, 1>")]
    pub max_steals: u32,
    /// This worker's id (`sluice run --worker-id`): set by the command line, not in specs.
    #[serde(skip)]
    #[schemars(skip)]
    pub worker_id: Option<String>,
}

/// A request to the offset tracker: commit `partition` once the sink acknowledged everything
/// up to `offset` (the last record the source sent for it; `None`: nothing), then answer.
#[derive(Debug)]
pub struct Drain {
    pub partition: PartitionId,
    pub offset: Option<Offset>,
    pub done: oneshot::Sender<()>,
}

/// A lease this worker holds.
#[derive(Debug)]
struct Held {
    /// Where reading resumes: the row's offset when the lease was taken.
    start: Option<Committed>,
    /// The last successful renewal or take, on this worker's clock.
    renewed: Instant,
    /// Another worker asked for the lease: (that worker, since when).
    handoff: Option<(String, Instant)>,
}

#[derive(Debug, Default)]
struct State {
    held: BTreeMap<String, Held>,
    /// Leases this worker asked another worker for, not handed over yet.
    asked: HashSet<String>,
    /// Per partition: the generation last scanned, and when it last changed (local clock).
    seen: HashMap<String, (u64, Instant)>,
}

/// The lease manager of one pipeline on one worker.
pub struct Leases {
    store: Arc<DynamoStore>,
    namespace: String,
    duration: Duration,
    max_steals: usize,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    granted: watch::Sender<Arc<Granted>>,
}

impl Leases {
    pub fn new(
        store: Arc<DynamoStore>,
        namespace: &str,
        spec: &LeaseSpec,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            namespace: namespace.to_string(),
            duration: spec.duration.0,
            max_steals: spec.max_steals as usize,
            metrics,
            state: Mutex::default(),
            granted: watch::channel(Arc::default()).0,
        }
    }

    /// This worker's id.
    pub fn worker(&self) -> &str {
        self.store.owner()
    }

    /// The partitions granted to the source, as they change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Granted>> {
        self.granted.subscribe()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn interval(&self) -> Duration {
        (self.duration / 3).max(Duration::from_millis(10))
    }

    /// Whether this worker holds the partition's lease (its offsets may be committed).
    pub fn holds(&self, partition: &str) -> bool {
        self.state().held.contains_key(partition)
    }

    /// Publishes the grant: every held lease not being handed over.
    fn publish(&self) {
        let st = self.state();
        let granted: Granted = st
            .held
            .iter()
            .filter(|(_, h)| h.handoff.is_none())
            .map(|(p, h)| (PartitionId::from(p.as_str()), h.start.clone()))
            .collect();
        self.metrics.set_leases_held(st.held.len() as u64);
        drop(st);
        self.granted.send_if_modified(|g| {
            if **g == granted {
                return false;
            }
            *g = Arc::new(granted);
            true
        });
    }

    /// The lease is gone: stop reading the partition at once and never commit for it again.
    fn lose(&self, partition: &str, why: &str) {
        if self.state().held.remove(partition).is_some() {
            Metrics::add(&self.metrics.lease_losses, 1);
            // Published first: from here on the source sends no batch of the partition, so
            // nothing read after this line leaves this worker.
            self.publish();
            tracing::warn!(pipeline = %self.namespace, partition, reason = why, "lease lost; stopped reading the partition");
        }
    }

    /// Commits offsets of held partitions, each conditional on the lease's counter. Partitions
    /// whose commit the table refuses (the lease was taken by another worker) are lost and
    /// returned; a transient failure is the error.
    pub async fn commit(
        &self,
        offsets: &CommittedOffsets,
    ) -> Result<Vec<PartitionId>, OffsetError> {
        let mut fenced = Vec::new();
        let mut first_err = None;
        for (p, c) in offsets {
            match self.store.commit_one(&self.namespace, p, c).await {
                Ok(()) => {}
                Err(e) if e.is_fenced() => {
                    self.lose(p, &e.to_string());
                    fenced.push(p.clone());
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(fenced), Err)
    }

    /// Runs until `stop`: renews, takes and balances every renewal interval; hands leases over
    /// when asked (through `drain`, the offset tracker). Then releases every lease still held.
    /// `draining` fires when the pipeline stops reading: from then on no lease is taken or
    /// asked for, only renewed until `stop`.
    pub async fn run(
        self: Arc<Self>,
        mut discovered: watch::Receiver<Arc<Vec<ShardNode>>>,
        mut released: mpsc::UnboundedReceiver<(PartitionId, Option<Offset>)>,
        drain: mpsc::UnboundedSender<Drain>,
        draining: CancellationToken,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(self.interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (drained_tx, mut drained_rx) = mpsc::unbounded_channel::<String>();
        let mut watching = true;
        // The shards as of the last round: a discovery that lists the same ones waits for the
        // next tick (each round renews every lease: a write per shard).
        let mut last: Arc<Vec<ShardNode>> = Arc::default();
        tracing::info!(pipeline = %self.namespace, worker = %self.worker(), duration = ?self.duration, "sharing shards through leases");
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
                r = discovered.changed(), if watching => {
                    if r.is_err() {
                        watching = false;
                    }
                    if *discovered.borrow() == last {
                        continue;
                    }
                }
                Some((p, last)) = released.recv() => {
                    let asked = self.state().held.get(&*p).is_some_and(|h| h.handoff.is_some());
                    if asked {
                        // Wait (bounded) until the sink acknowledged what was read, committed.
                        let (tx, rx) = oneshot::channel();
                        let _ = drain.send(Drain { partition: p.clone(), offset: last, done: tx });
                        let (drained, limit) = (drained_tx.clone(), self.duration);
                        tokio::spawn(async move {
                            let _ = tokio::time::timeout(limit, rx).await;
                            let _ = drained.send(p.to_string());
                        });
                    }
                    continue;
                }
                Some(p) = drained_rx.recv() => {
                    self.hand_over(&p).await;
                    continue;
                }
            }
            // First, before any request: a lease not renewed for `duration` by this worker's
            // own clock (a long pause, a stalled network) is gone.
            self.expire_local();
            let shards = match draining.is_cancelled() {
                false => discovered.borrow_and_update().clone(),
                true => Arc::default(),
            };
            last = shards.clone();
            if let Err(e) = self.round(&shards).await {
                tracing::warn!(pipeline = %self.namespace, error = %e, "lease round failed; trying again next interval");
            }
        }
        self.release_all().await;
    }

    /// Loses every held lease whose last renewal is `duration` old on this worker's clock.
    fn expire_local(&self) {
        let stale: Vec<String> = self
            .state()
            .held
            .iter()
            .filter(|(_, h)| h.renewed.elapsed() >= self.duration)
            .map(|(p, _)| p.clone())
            .collect();
        for p in stale {
            self.lose(
                &p,
                &format!("not renewed for {:?} on this worker's clock", self.duration),
            );
        }
    }

    /// One round: scan, renew, take, balance.
    async fn round(&self, shards: &[ShardNode]) -> Result<(), OffsetError> {
        let rows = self.scan().await?;
        self.renew_all(&rows).await;
        self.acquire(shards, &rows).await?;
        self.publish();
        Ok(())
    }

    /// The lease rows by partition; notes when each row's counter was first seen at its value
    /// (a counter that stands still for `duration` is an expired lease).
    async fn scan(&self) -> Result<Rows, OffsetError> {
        let rows = self.store.lease_rows(&self.namespace).await?;
        let now = Instant::now();
        let rows: Rows = rows
            .into_iter()
            .map(|r| (r.0.partition.clone(), r))
            .collect();
        {
            let mut st = self.state();
            for (p, (_, g, _)) in &rows {
                match st.seen.get(p) {
                    Some((seen, _)) if seen == g => {}
                    _ => {
                        st.seen.insert(p.clone(), (*g, now));
                    }
                }
            }
        }
        Ok(rows)
    }

    /// Renews every held lease; a refused renewal, or none for `duration`, loses it.
    async fn renew_all(&self, rows: &Rows) {
        let held: Vec<String> = self.state().held.keys().cloned().collect();
        let me = self.worker().to_string();
        let mut live = Vec::new();
        for p in held {
            match rows.get(&p) {
                Some((row, _, _)) if row.finished => {
                    // Read to its end and committed: nothing left to lease.
                    self.transfer(&p, None).await;
                }
                Some((row, _, _)) if row.owner.as_deref() != Some(me.as_str()) => {
                    let by = row.owner.clone().unwrap_or_else(|| "nobody".into());
                    self.lose(&p, &format!("the table names {by} as its owner"));
                }
                None => self.lose(&p, "its row was deleted (an offsets reset or prune)"),
                Some(_) => live.push(p),
            }
        }
        // Renewals go out together: one round trip per round, however many leases.
        let renewed = futures::future::join_all(live.iter().map(|p| self.renew(p))).await;
        for (p, r) in live.into_iter().zip(renewed) {
            match r {
                Ok(Ok(item)) => {
                    let mut st = self.state();
                    if let Some(h) = st.held.get_mut(&p) {
                        h.renewed = Instant::now();
                        if h.handoff.is_none()
                            && let Some(next) = attr_s(&item, "next_owner")
                            && next != me
                        {
                            tracing::info!(pipeline = %self.namespace, partition = %p, to = %next, "handing the lease over: stopping, draining, committing");
                            h.handoff = Some((next, Instant::now()));
                        }
                    }
                }
                Ok(Err(why)) => self.lose(&p, &why),
                Err(e) => {
                    let stale = self
                        .state()
                        .held
                        .get(&p)
                        .is_some_and(|h| h.renewed.elapsed() >= self.duration);
                    if stale {
                        self.lose(&p, &format!("not renewed for {:?}: {e}", self.duration));
                    } else {
                        tracing::warn!(pipeline = %self.namespace, partition = %p, error = %e, "lease renewal failed; retrying");
                    }
                }
            }
        }
        // A pending handoff that did not finish in time goes through anyway (the new owner
        // re-reads at most what the sink had not acknowledged).
        let late: Vec<String> = self
            .state()
            .held
            .iter()
            .filter(|(_, h)| {
                h.handoff
                    .as_ref()
                    .is_some_and(|(_, t)| t.elapsed() >= self.duration)
            })
            .map(|(p, _)| p.clone())
            .collect();
        for p in late {
            self.hand_over(&p).await;
        }
    }

    /// One renewal: `Ok(Ok(row))`, or `Ok(Err(why))` when the lease is gone.
    async fn renew(&self, p: &str) -> Result<Result<Item, String>, OffsetError> {
        let me = self.worker().to_string();
        let w = LeaseWrite {
            owner_is: Some(&me),
            expires_in: Some(self.duration),
            ..Default::default()
        };
        Ok(self.write_held(p, w).await?.map_err(|old| {
            let by = old
                .as_ref()
                .and_then(|o| attr_s(o, "owner"))
                .unwrap_or_else(|| "nobody".to_string());
            format!("renewal refused: the lease is now {by}'s")
        }))
    }

    /// A conditional write to a lease this worker holds, on the counter it knows. A commit of
    /// this worker may have bumped the counter meanwhile: when the refused row still names this
    /// worker, the write goes again on the row's counter.
    async fn write_held(
        &self,
        p: &str,
        mut w: LeaseWrite<'_>,
    ) -> Result<Result<Item, Option<Item>>, OffsetError> {
        w.generation = self.store.known(&self.namespace, p).into();
        for _ in 0..4 {
            match self.store.lease_write(&self.namespace, p, w).await? {
                Err(Some(old)) if attr_s(&old, "owner").as_deref() == Some(self.worker()) => {
                    w.generation = match old.get("generation") {
                        Some(AttributeValue::N(g)) => g.parse().ok(),
                        _ => None,
                    }
                    .into();
                }
                other => return Ok(other),
            }
        }
        Ok(Err(None))
    }

    /// Takes free and expired leases of ready shards up to this worker's share, then asks the
    /// busiest worker for one when it holds two or more more than this one.
    async fn acquire(&self, shards: &[ShardNode], rows: &Rows) -> Result<(), OffsetError> {
        if shards.is_empty() {
            return Ok(());
        }
        let me = self.worker().to_string();
        let known: HashSet<&str> = shards.iter().map(|s| s.id.as_str()).collect();
        let finished = |p: &str| rows.get(p).is_some_and(|r| r.0.finished);
        // A child waits until every parent still listed has its end committed.
        let ready: Vec<&ShardNode> = shards
            .iter()
            .filter(|s| !finished(&s.id))
            .filter(|s| {
                s.parents
                    .iter()
                    .all(|p| finished(p) || !known.contains(p.as_str()))
            })
            .collect();
        let (held, seen) = {
            let st = self.state();
            let held: HashSet<String> = st.held.keys().cloned().collect();
            (held, st.seen.clone())
        };
        let mut free: Vec<(Kind, String, Option<u64>)> = Vec::new();
        let mut load: BTreeMap<String, Load> = BTreeMap::new();
        let mut mine = 0usize;
        for s in &ready {
            let id = s.id.clone();
            if held.contains(&id) {
                mine += 1;
                continue;
            }
            match rows.get(&id) {
                None => free.push((Kind::Free, id, None)),
                Some((row, g, next)) => match row.owner.as_deref() {
                    None => free.push((Kind::Free, id, Some(*g))),
                    Some(o) if o == me => free.push((Kind::Own, id, Some(*g))),
                    Some(o) => {
                        let expired = seen
                            .get(&id)
                            .is_some_and(|(sg, t)| sg == g && t.elapsed() >= self.duration);
                        if expired {
                            free.push((Kind::Expired, id, Some(*g)));
                        } else if next.as_deref() == Some(me.as_str()) {
                            mine += 1;
                        } else {
                            // A lease being handed over counts for the worker it goes to, and
                            // nobody else can ask for it meanwhile.
                            let to = next.as_deref().unwrap_or(o);
                            load.entry(to.to_string()).or_default().count += 1;
                            let owner = load.entry(o.to_string()).or_default();
                            if next.is_none() {
                                owner.askable.push(id);
                            }
                        }
                    }
                },
            }
        }
        let workers = load.len() + 1;
        let target = ready.len().div_ceil(workers);
        let mut need = target.saturating_sub(mine);
        free.sort();
        for (kind, p, g) in free {
            // What the table already gives this worker is always taken.
            if need == 0 && kind != Kind::Own {
                continue;
            }
            if self.take(&p, g, kind != Kind::Free).await? {
                need = need.saturating_sub(1);
                mine += 1;
            }
        }
        // Balance: ask the busiest worker while it holds two or more more than this one, for a
        // lease nobody asked for yet.
        let mut steals = 0;
        while steals < self.max_steals {
            let Some((victim, l)) = load
                .iter_mut()
                .max_by_key(|(_, l)| l.count)
                .filter(|(_, l)| l.count >= mine + 2)
            else {
                break;
            };
            let Some(p) = l.askable.pop() else { break };
            l.count -= 1;
            // On the owner and on nobody having asked, not on the generation (see `Gen::Any`).
            let w = LeaseWrite {
                generation: Gen::Any,
                owner_is: Some(victim),
                next_owner: Some(Some(&me)),
                ..Default::default()
            };
            if self
                .store
                .lease_write(&self.namespace, &p, w)
                .await?
                .is_ok()
            {
                tracing::info!(pipeline = %self.namespace, partition = %p, from = %victim, "asked for a lease to balance the load");
                self.state().asked.insert(p.clone());
                mine += 1;
            }
            steals += 1;
        }
        Ok(())
    }

    /// Takes one lease seen at generation `g` (`None`: no row yet); true when taken.
    async fn take(&self, p: &str, g: Option<u64>, takeover: bool) -> Result<bool, OffsetError> {
        let me = self.worker().to_string();
        let w = LeaseWrite {
            generation: g.into(),
            owner: Some(Some(&me)),
            next_owner: Some(None),
            expires_in: Some(self.duration),
            ..Default::default()
        };
        let Ok(item) = self.store.lease_write(&self.namespace, p, w).await? else {
            // Another worker was quicker.
            return Ok(false);
        };
        // Read back before reading the shard: a store whose conditional writes are not atomic
        // under concurrency (the moto emulator) can let two takes both pass; the row then names
        // the last one, and only that one reads.
        let written = item.get("generation");
        let now = self.store.get(&self.namespace, p).await?;
        let kept = now.as_ref().is_some_and(|r| {
            attr_s(r, "owner").as_deref() == Some(me.as_str()) && r.get("generation") == written
        });
        if !kept {
            tracing::info!(pipeline = %self.namespace, partition = %p, "another worker took the lease at the same time");
            return Ok(false);
        }
        let start = attr_s(&item, "offset")
            .filter(|o| !o.is_empty())
            .map(|o| Committed {
                offset: Offset::new(o),
                finished: matches!(item.get("finished"), Some(AttributeValue::Bool(true))),
            });
        if takeover {
            Metrics::add(&self.metrics.lease_takeovers, 1);
        }
        tracing::info!(pipeline = %self.namespace, partition = %p, resume_after = ?start.as_ref().map(|c| c.offset.as_str()), takeover, "lease taken");
        let mut st = self.state();
        st.asked.remove(p);
        st.held.insert(
            p.to_string(),
            Held {
                start,
                renewed: Instant::now(),
                handoff: None,
            },
        );
        Ok(true)
    }

    /// Passes a lease being handed over to the worker that asked for it.
    async fn hand_over(&self, p: &str) {
        let to = match self.state().held.get(p).and_then(|h| h.handoff.clone()) {
            Some((to, _)) => to,
            None => return,
        };
        self.transfer(p, Some(&to)).await;
        self.publish();
    }

    /// Writes the lease over to `to` (`None`: releases it), conditional on its counter, and on
    /// `to` still asking for it (a worker that stopped withdrew its request: then this worker
    /// takes the lease back at its next round, after the commit it just made).
    async fn transfer(&self, p: &str, to: Option<&str>) {
        let me = self.worker().to_string();
        let w = LeaseWrite {
            owner_is: Some(&me),
            owner: Some(to),
            next_owner: Some(None),
            next_owner_is: to,
            ..Default::default()
        };
        self.state().held.remove(p);
        match self.write_held(p, w).await {
            Ok(Ok(_)) => {
                tracing::info!(pipeline = %self.namespace, partition = %p, to = to.unwrap_or("nobody"), "lease handed over");
            }
            Ok(Err(_)) => {
                tracing::info!(pipeline = %self.namespace, partition = %p, "lease already taken by another worker");
            }
            Err(e) => {
                tracing::warn!(pipeline = %self.namespace, partition = %p, error = %e, "could not release the lease; it expires after its duration");
            }
        }
    }

    /// Releases every lease still held (after the final commit), handing a lease over where
    /// another worker asked for it: they are taken at once instead of after `duration`.
    ///
    /// Requests this worker made are withdrawn first, and leases handed over to it meanwhile
    /// (the table names it, it never took them) are released too.
    pub async fn release_all(&self) {
        let me = self.worker().to_string();
        let asked: Vec<String> = self.state().asked.drain().collect();
        for p in asked {
            let w = LeaseWrite {
                generation: Gen::Any,
                next_owner_is: Some(&me),
                next_owner: Some(None),
                ..Default::default()
            };
            if let Err(e) = self.store.lease_write(&self.namespace, &p, w).await {
                tracing::warn!(pipeline = %self.namespace, partition = %p, error = %e, "could not withdraw a handoff request");
            }
        }
        let held: Vec<(String, Option<String>)> = self
            .state()
            .held
            .iter()
            .map(|(p, h)| (p.clone(), h.handoff.as_ref().map(|(to, _)| to.clone())))
            .collect();
        for (p, to) in held {
            self.transfer(&p, to.as_deref()).await;
        }
        match self.store.lease_rows(&self.namespace).await {
            Ok(rows) => {
                for (row, g, _) in rows {
                    if row.owner.as_deref() == Some(me.as_str()) && !row.finished {
                        let w = LeaseWrite {
                            generation: Gen::Was(g),
                            owner_is: Some(&me),
                            owner: Some(None),
                            next_owner: Some(None),
                            ..Default::default()
                        };
                        let _ = self
                            .store
                            .lease_write(&self.namespace, &row.partition, w)
                            .await;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(pipeline = %self.namespace, error = %e, "could not check for leases handed over while stopping")
            }
        }
        self.publish();
    }
}

/// The lease rows by partition: the row, its counter and the worker that asked for it.
type Rows = HashMap<String, (OffsetRow, u64, Option<String>)>;

/// A string attribute's value.
fn attr_s(item: &Item, k: &str) -> Option<String> {
    match item.get(k) {
        Some(AttributeValue::S(v)) => Some(v.clone()),
        _ => None,
    }
}

/// Another worker's leases as one round sees them.
#[derive(Debug, Default)]
struct Load {
    /// The leases it holds and keeps, and those being handed over to it.
    count: usize,
    /// Those it holds that nobody asked for: what it may be asked to hand over.
    askable: Vec<String>,
}

/// How a lease this worker may take stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// The table names this worker: handed over to it, or left by an earlier run under its id.
    Own,
    /// No owner.
    Free,
    /// Another worker's, whose counter did not move for `duration`.
    Expired,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offsets::dynamodb::tests::{spec, table};

    fn worker(table: &str, id: &str) -> Leases {
        let mut s = spec(table, true);
        let lease = LeaseSpec {
            duration: sluice_connectors::units::Dur(Duration::from_millis(300)),
            max_steals: 1,
            worker_id: Some(id.into()),
        };
        s.leases = Some(lease.clone());
        Leases::new(
            Arc::new(DynamoStore::new(&s)),
            "pipe",
            &lease,
            Arc::default(),
        )
    }

    fn at(o: u64) -> CommittedOffsets {
        CommittedOffsets::from([(
            PartitionId::from("s0"),
            Committed {
                offset: Offset::from(o),
                finished: false,
            },
        )])
    }

    /// A new table, `n` shards, and worker `a`, which took them all (alone, it takes every one).
    async fn a_holding(n: usize) -> (String, Vec<ShardNode>, Leases) {
        let t = table();
        let shards: Vec<ShardNode> = (0..n)
            .map(|i| ShardNode::new(&format!("s{i}"), [], false))
            .collect();
        let a = worker(&t, "a");
        a.round(&shards).await.expect("round");
        assert_eq!(a.state().held.len(), n, "alone, a takes every shard");
        (t, shards, a)
    }

    fn asked(w: &Leases) -> HashSet<String> {
        w.state().asked.clone()
    }

    /// Runs rounds of `w` until `cond` holds (a few seconds at most).
    async fn rounds_until(w: &Leases, shards: &[ShardNode], cond: impl Fn(&Leases) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cond(w) {
            assert!(Instant::now() < deadline, "condition not reached");
            w.round(shards).await.expect("round");
            tokio::time::sleep(w.interval()).await;
        }
    }

    #[tokio::test]
    async fn a_commit_after_the_lease_was_taken_over_is_refused_by_the_table_itself() {
        let t = table();
        let shards = [ShardNode::new("s0", [], false)];
        let a = worker(&t, "a");
        let b = worker(&t, "b");
        a.round(&shards).await.expect("round");
        assert!(a.holds("s0"));
        assert_eq!(
            a.commit(&at(10)).await.expect("commit"),
            Vec::<PartitionId>::new()
        );
        // `a` stalls (no rounds): `b` sees the counter unchanged for the duration and takes over,
        // from a's commit.
        rounds_until(&b, &shards, |b| b.holds("s0")).await;
        let granted = b.subscribe().borrow().clone();
        assert_eq!(
            granted["s0"].as_ref().map(|c| c.offset.clone()),
            Some(Offset::from(10))
        );
        // `a` still believes it holds the lease: the table's condition refuses its commit, and
        // only then does `a` drop the partition.
        assert!(a.holds("s0"));
        let fenced = a.commit(&at(11)).await.expect("a refusal is no error");
        assert_eq!(fenced, vec![PartitionId::from("s0")]);
        assert!(!a.holds("s0"));
        assert_eq!(
            a.metrics
                .lease_losses
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert_eq!(
            b.metrics
                .lease_takeovers
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        let rows = b.store.lease_rows("pipe").await.expect("rows");
        assert_eq!(rows[0].0.offset, Offset::from(10));
        assert_eq!(rows[0].0.owner.as_deref(), Some("b"));
        // b's own commit goes through.
        assert!(b.commit(&at(12)).await.expect("commit").is_empty());
    }

    #[tokio::test]
    async fn a_child_is_leased_only_after_its_parent_s_end_is_committed() {
        let t = table();
        let shards = [
            ShardNode::new("s0", [], true),
            ShardNode::new("s1", ["s0"], false),
        ];
        let a = worker(&t, "a");
        a.round(&shards).await.expect("round");
        assert!(a.holds("s0") && !a.holds("s1"), "the parent first");
        let end = CommittedOffsets::from([(
            PartitionId::from("s0"),
            Committed {
                offset: Offset::from(99),
                finished: true,
            },
        )]);
        a.commit(&end).await.expect("commit");
        a.round(&shards).await.expect("round");
        assert!(!a.holds("s0"), "a finished shard's lease is released");
        assert!(a.holds("s1"), "then the child");
    }

    #[tokio::test]
    async fn an_idle_worker_is_handed_leases_until_both_hold_their_share() {
        let (t, shards, a) = a_holding(4).await;
        let b = worker(&t, "b");
        // b asks for one per round; a hands it over at its next renewal (nothing to drain).
        let deadline = Instant::now() + Duration::from_secs(5);
        while b.state().held.len() < 2 {
            assert!(Instant::now() < deadline, "not balanced");
            b.round(&shards).await.expect("round");
            a.round(&shards).await.expect("round");
            let asked: Vec<String> = a
                .state()
                .held
                .iter()
                .filter(|(_, h)| h.handoff.is_some())
                .map(|(p, _)| p.clone())
                .collect();
            for p in asked {
                a.hand_over(&p).await;
            }
        }
        assert_eq!(a.state().held.len(), 2);
        assert_eq!(b.state().held.len(), 2);
    }

    #[tokio::test]
    async fn a_request_for_a_lease_lands_though_its_owner_renewed_since_the_scan() {
        let (t, shards, a) = a_holding(4).await;
        let b = worker(&t, "b");
        let rows = b.scan().await.expect("scan");
        // `a` renews every lease between b's scan and b's request: every counter moves.
        a.round(&shards).await.expect("round");
        let moved = b.scan().await.expect("scan");
        assert!(rows.iter().all(|(p, (_, g, _))| moved[p].1 > *g));
        b.acquire(&shards, &rows).await.expect("acquire");
        let asked: Vec<String> = asked(&b).into_iter().collect();
        assert_eq!(asked.len(), 1, "b asked for one lease");
        a.round(&shards).await.expect("round");
        assert!(
            a.state().held[&asked[0]].handoff.is_some(),
            "a is handing {} over",
            asked[0]
        );
    }

    #[tokio::test]
    async fn two_idle_workers_ask_for_different_leases_in_one_round() {
        let (t, shards, _a) = a_holding(6).await;
        let (b, c) = (worker(&t, "b"), worker(&t, "c"));
        b.round(&shards).await.expect("round");
        c.round(&shards).await.expect("round");
        let (by_b, by_c) = (asked(&b), asked(&c));
        assert_eq!((by_b.len(), by_c.len()), (1, 1), "{by_b:?} {by_c:?}");
        assert!(by_b.is_disjoint(&by_c), "{by_b:?} {by_c:?}");
    }
}
