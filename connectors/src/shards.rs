//! Shard lineage for sources whose partitions split and merge (Kinesis Data Streams, DynamoDB
//! Streams): which shards may be read now.
//!
//! The rule is the KCL's: a child shard is read only once every parent still known to the stream
//! was read to its end *and that end was committed* (`Committed::finished`). A parent the stream no
//! longer lists (trimmed after the retention period) does not hold its children back.
//!
//! ```
//! use sluice_connectors::shards::{ShardGraph, ShardNode};
//! use sluice_connectors::{Committed, CommittedOffsets, Offset};
//!
//! let mut g = ShardGraph::default();
//! g.insert(ShardNode::new("parent", [], true));
//! g.insert(ShardNode::new("child", ["parent"], false));
//! let mut committed = CommittedOffsets::new();
//! assert_eq!(g.ready(&committed), vec!["parent".to_string()]);
//! committed.insert("parent".into(), Committed { offset: Offset::from("42"), finished: true });
//! assert_eq!(g.ready(&committed), vec!["child".to_string()]);
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::watch;

use crate::api::{BatchSender, CommittedOffsets, Granted, Grants, SourceBatch};
use crate::record::Offset;

/// The offset of the last record each shard's reader sent into the pipeline: what a source
/// reports when a shard's grant is withdrawn (see [`crate::api::Grants`]). With leases it also
/// holds the grant, so that no batch of a shard leaves once its grant is withdrawn, even before
/// the source's own loop has stopped the shard's reader.
#[derive(Debug, Default)]
pub struct SentOffsets {
    last: std::sync::Mutex<HashMap<String, Offset>>,
    granted: Option<watch::Receiver<Arc<Granted>>>,
    /// Shards a batch of which was refused because their grant was withdrawn.
    refused: std::sync::Mutex<HashSet<String>>,
}

impl SentOffsets {
    /// Without `grants` every batch may be sent; with them only batches of granted shards.
    pub fn new(grants: Option<&Grants>) -> Self {
        Self {
            granted: grants.map(|g| g.granted.clone()),
            ..Self::default()
        }
    }

    /// Whether batches of `shard` may be sent: always without leases; with them while the
    /// shard is granted. The coordinator publishes a withdrawal before it logs it, so a batch
    /// read after a lost lease was reported never leaves.
    pub fn granted(&self, shard: &str) -> bool {
        self.granted
            .as_ref()
            .is_none_or(|g| g.borrow().contains_key(shard))
    }

    /// Sends `batch` through `sender` (unless it is stopping or its shard is no longer granted:
    /// then it is not sent); remembers its last offset once sent.
    /// A send waiting for room in the pipeline (backpressure) gives up as soon as the grant is
    /// withdrawn, so the batch does not leave later either.
    pub async fn send(&self, sender: &BatchSender, batch: SourceBatch) -> bool {
        let shard = batch.partition.to_string();
        if !self.granted(&shard) {
            self.refuse(shard);
            return false;
        }
        let last = batch
            .records
            .last()
            .map(|r| r.offset.clone())
            .or_else(|| batch.end_offset.clone());
        let withdrawn = async {
            match self.granted.clone() {
                Some(mut g) => {
                    // An error means the coordinator is gone: shutdown follows, the sender's
                    // stop ends the wait.
                    if g.wait_for(|m| !m.contains_key(shard.as_str()))
                        .await
                        .is_err()
                    {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        let sent = tokio::select! {
            biased;
            () = withdrawn => None,
            sent = sender.send(batch) => Some(sent),
        };
        match sent {
            None => {
                self.refuse(shard);
                false
            }
            Some(sent) => {
                if sent && let Some(o) = last {
                    lock(&self.last).insert(shard, o);
                }
                sent
            }
        }
    }

    fn refuse(&self, shard: String) {
        lock(&self.refused).insert(shard);
    }

    /// Whether a batch of `shard` was refused because its grant was withdrawn, since the last
    /// call. A source whose reader stopped for that reason must not take it for a pipeline that
    /// stopped taking records, nor for a shard read to its end: the grant may already be back
    /// (lost and taken again within one lease round), and then the shard is read again.
    pub fn take_refused(&self, shard: &str) -> bool {
        lock(&self.refused).remove(shard)
    }

    /// The offset of the last record sent for `shard`, if any.
    pub fn last(&self, shard: &str) -> Option<Offset> {
        lock(&self.last).get(shard).cloned()
    }
}

/// Locks a map; a poisoned lock means a panic elsewhere mid-insert, and the map is still whole.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One shard as the stream lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardNode {
    pub id: String,
    /// The shard's parents: one after a split, two after a merge, none for an original shard.
    pub parents: Vec<String>,
    /// The shard is closed (it has an ending sequence number): once read to its end it is
    /// finished.
    pub closed: bool,
}

impl ShardNode {
    pub fn new<'a>(id: &str, parents: impl IntoIterator<Item = &'a str>, closed: bool) -> Self {
        Self {
            id: id.to_string(),
            parents: parents.into_iter().map(str::to_string).collect(),
            closed,
        }
    }
}

/// The shards of a stream, with their parent links.
#[derive(Debug, Clone, Default)]
pub struct ShardGraph {
    shards: BTreeMap<String, ShardNode>,
}

impl ShardGraph {
    /// Adds a shard, or updates it (a shard that was open may since have closed).
    pub fn insert(&mut self, node: ShardNode) {
        self.shards.insert(node.id.clone(), node);
    }

    pub fn get(&self, id: &str) -> Option<&ShardNode> {
        self.shards.get(id)
    }

    pub fn len(&self) -> usize {
        self.shards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// Every known shard, in id order.
    pub fn nodes(&self) -> impl Iterator<Item = &ShardNode> {
        self.shards.values()
    }

    /// Every known shard id, in order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.shards.keys().map(String::as_str)
    }

    /// Shards with work left (not finished in `committed`) whose parents are all finished in
    /// `committed` or unknown to the stream, in id order. The caller skips the ones it is
    /// already reading.
    pub fn ready(&self, committed: &CommittedOffsets) -> Vec<String> {
        let finished = |id: &str| committed.get(id).is_some_and(|c| c.finished);
        self.shards
            .values()
            .filter(|s| !finished(&s.id))
            .filter(|s| {
                s.parents
                    .iter()
                    .all(|p| finished(p) || !self.shards.contains_key(p))
            })
            .map(|s| s.id.clone())
            .collect()
    }

    /// Shards not finished in `committed` and held back by a parent that is not finished yet.
    pub fn waiting(&self, committed: &CommittedOffsets) -> Vec<String> {
        let ready = self.ready(committed);
        self.shards
            .keys()
            .filter(|id| !committed.get(id.as_str()).is_some_and(|c| c.finished))
            .filter(|id| !ready.contains(id))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Committed;
    use crate::record::Offset;

    fn fin(ids: &[&str]) -> CommittedOffsets {
        ids.iter()
            .map(|id| {
                (
                    (*id).into(),
                    Committed {
                        offset: Offset::from("1"),
                        finished: true,
                    },
                )
            })
            .collect()
    }

    /// Sent offsets under a grant of `shards`, the grant's sender, and a pipeline channel of
    /// `room` batches.
    fn granted_to(
        shards: &[&str],
        room: usize,
    ) -> (
        SentOffsets,
        watch::Sender<Arc<Granted>>,
        BatchSender,
        tokio::sync::mpsc::Receiver<SourceBatch>,
    ) {
        let granted: Granted = shards.iter().map(|s| ((*s).into(), None)).collect();
        let (grant_tx, granted) = watch::channel(Arc::new(granted));
        let grants = Grants {
            granted,
            discovered: watch::channel(Arc::default()).0,
            released: tokio::sync::mpsc::unbounded_channel().0,
        };
        let (tx, rx) = tokio::sync::mpsc::channel(room);
        let sender = BatchSender::new(tx, Default::default());
        (SentOffsets::new(Some(&grants)), grant_tx, sender, rx)
    }

    fn batch(shard: &str, off: &str) -> SourceBatch {
        let r = crate::record::Record::new(shard.into(), Offset::from(off), b"x".to_vec());
        SourceBatch::records(shard.into(), vec![r])
    }

    /// A batch of a shard whose grant was withdrawn does not leave, even while its reader still
    /// runs, and is not counted as sent (but as refused, once); a granted shard's batch goes out.
    #[tokio::test]
    async fn a_withdrawn_shard_sends_nothing_more() {
        let (sent, grant_tx, sender, mut rx) = granted_to(&["a", "b"], 8);
        assert!(sent.send(&sender, batch("a", "1")).await);
        assert!(!sent.take_refused("a"), "nothing refused yet");
        grant_tx.send_replace(Arc::new(Granted::from([("b".into(), None)])));
        assert!(!sent.granted("a"));
        assert!(!sent.send(&sender, batch("a", "2")).await);
        assert!(sent.send(&sender, batch("b", "7")).await);
        assert!(sent.take_refused("a"), "a's batch was refused");
        assert!(!sent.take_refused("a"), "reported once");
        assert!(!sent.take_refused("b"));
        assert_eq!(sent.last("a"), Some(Offset::from("1")));
        assert_eq!(sent.last("b"), Some(Offset::from("7")));
        let got: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|b| b.partition.to_string())
            .collect();
        assert_eq!(got, ["a", "b"]);
        // Without leases every shard may send.
        assert!(SentOffsets::default().granted("anything"));
    }

    /// A send waiting for room when the grant is withdrawn gives up: the batch never leaves.
    #[tokio::test]
    async fn a_send_waiting_for_room_gives_up_when_the_grant_is_withdrawn() {
        let (sent, grant_tx, sender, mut rx) = granted_to(&["a"], 1);
        let sent = Arc::new(sent);
        assert!(sent.send(&sender, batch("a", "1")).await, "room for one");
        let waiting = tokio::spawn({
            let (sent, sender) = (sent.clone(), sender.clone());
            async move { sent.send(&sender, batch("a", "2")).await }
        });
        // The test's runtime has one thread: the task runs until it waits for room.
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the send waits for room");
        grant_tx.send_replace(Arc::default());
        let given_up = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("the waiting send gives up when the grant is withdrawn");
        assert!(!given_up.expect("join"));
        // Room again: the given-up batch is not sent late.
        assert_eq!(
            rx.recv().await.map(|b| b.records[0].offset.clone()),
            Some(Offset::from("1"))
        );
        assert!(rx.try_recv().is_err());
        assert_eq!(sent.last("a"), Some(Offset::from("1")));
        assert!(sent.take_refused("a"));
    }

    #[test]
    fn split_and_merge_lineage() {
        // 0 splits into 1 and 2; 1 and 2 merge into 3; 9 is an unrelated open shard.
        let mut g = ShardGraph::default();
        g.insert(ShardNode::new("0", [], true));
        g.insert(ShardNode::new("1", ["0"], true));
        g.insert(ShardNode::new("2", ["0"], true));
        g.insert(ShardNode::new("3", ["1", "2"], false));
        g.insert(ShardNode::new("9", [], false));
        assert_eq!(g.ready(&fin(&[])), ["0", "9"]);
        assert_eq!(g.waiting(&fin(&[])), ["1", "2", "3"]);
        assert_eq!(g.ready(&fin(&["0"])), ["1", "2", "9"]);
        // A merge waits for both parents.
        assert_eq!(g.ready(&fin(&["0", "1"])), ["2", "9"]);
        assert_eq!(g.ready(&fin(&["0", "1", "2"])), ["3", "9"]);
        // A committed but unfinished parent still holds its children back.
        let mut c = fin(&["0", "1"]);
        c.insert(
            "2".into(),
            Committed {
                offset: Offset::from("5"),
                finished: false,
            },
        );
        assert_eq!(g.ready(&c), ["2", "9"]);
    }

    #[test]
    fn trimmed_parents_do_not_block() {
        let mut g = ShardGraph::default();
        g.insert(ShardNode::new("child", ["gone"], false));
        assert_eq!(g.ready(&fin(&[])), ["child"]);
    }
}
