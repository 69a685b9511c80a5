//! Offset stores: where pipelines keep their progress.
//!
//! One row per (namespace = pipeline name, partition): the offset of the last delivered record,
//! whether the partition was read to its end, and when it was last updated.

mod dynamodb;
mod file;
mod kafka;
pub mod kcl;
pub mod leases;
mod memory;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sluice_connectors::{Committed, CommittedOffsets, Offset, PartitionId};

/// The DynamoDB store's test helpers (a store spec on the local server, a unique table name).
#[cfg(test)]
pub(crate) use dynamodb::tests as dynamodb_tests;
pub use dynamodb::{DynamoStore, DynamoStoreSpec};
pub use file::{FileStore, FileStoreSpec};
pub use kafka::{KafkaStore, KafkaStoreSpec, TxnStore};
pub use memory::{MemoryStore, MemoryStoreSpec};

/// How often acknowledged progress is committed, unless a store's spec says otherwise.
pub(crate) fn default_commit_interval() -> sluice_connectors::units::Dur {
    sluice_connectors::units::Dur(std::time::Duration::from_secs(5))
}

/// The file store's folder, relative to the spec file's folder.
pub(crate) fn default_offsets_path() -> std::path::PathBuf {
    std::path::PathBuf::from(".sluice/offsets")
}

use crate::spec::OffsetsSpec;

/// One stored offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetRow {
    pub namespace: String,
    pub partition: String,
    pub offset: Offset,
    #[serde(default)]
    pub finished: bool,
    pub updated_at: DateTime<Utc>,
    /// The worker holding the partition's lease (stores with leases only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// When the lease runs out unless renewed, as its owner's clock saw it at its last renewal:
    /// for people; workers judge expiry by the lease counter on their own clocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<DateTime<Utc>>,
}

/// This process's worker id when none is given: the host name and the process id.
pub fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".into());
    format!("{host}:{}", std::process::id())
}

/// Where `reset` moves partitions to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResetTo {
    /// Forget the offsets: the source starts from its configured start position.
    Earliest,
    /// Resume after this offset.
    Offset(Offset),
}

/// A `sluice offsets reset`: move one partition of a namespace, or all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reset {
    pub namespace: String,
    /// One partition; all the namespace's stored partitions when `None`.
    pub partition: Option<String>,
    pub to: ResetTo,
}

impl Reset {
    /// A reset of one partition.
    pub fn one(namespace: &str, partition: &str, to: ResetTo) -> Self {
        Self {
            namespace: namespace.to_string(),
            partition: Some(partition.to_string()),
            to,
        }
    }

    /// The partitions this reset moves, given those the namespace has stored: the one named
    /// (stored or not), or every stored one.
    pub(crate) fn targets<'a>(&self, stored: impl IntoIterator<Item = &'a String>) -> Vec<String> {
        match &self.partition {
            Some(p) => vec![p.clone()],
            None => stored.into_iter().cloned().collect(),
        }
    }

    /// Applies the reset to the namespace's partition map; returns the changed rows.
    pub(crate) fn apply(&self, parts: &mut BTreeMap<String, Entry>) -> Vec<OffsetRow> {
        let now = Utc::now();
        let mut changed = Vec::new();
        for k in self.targets(parts.keys()) {
            match &self.to {
                ResetTo::Earliest => {
                    if let Some(e) = parts.remove(&k) {
                        changed.push(e.row(&self.namespace, &k));
                    }
                }
                ResetTo::Offset(o) => {
                    let e = Entry {
                        offset: o.clone(),
                        finished: false,
                        updated_at: now,
                    };
                    changed.push(e.row(&self.namespace, &k));
                    parts.insert(k, e);
                }
            }
        }
        changed
    }
}

/// A `sluice offsets prune`: delete rows not updated for a while.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prune {
    /// One namespace; every namespace when `None`.
    pub namespace: Option<String>,
    /// Rows not updated within this long are stale; every row is when `None`.
    pub older_than: Option<Duration>,
    /// Only report the rows that would be deleted.
    pub dry_run: bool,
}

impl Prune {
    /// Whether the prune covers this namespace.
    pub(crate) fn covers(&self, namespace: &str) -> bool {
        self.namespace.as_deref().is_none_or(|n| n == namespace)
    }

    /// Whether a row last updated at `updated_at` is stale now.
    pub(crate) fn is_stale(&self, updated_at: DateTime<Utc>) -> bool {
        match self.older_than {
            None => true,
            Some(d) => {
                let age = Utc::now().signed_duration_since(updated_at);
                age.to_std().map(|a| a >= d).unwrap_or(false)
            }
        }
    }

    /// Prunes one namespace's partition map (unless a dry run); returns the stale rows.
    pub(crate) fn apply(
        &self,
        namespace: &str,
        parts: &mut BTreeMap<String, Entry>,
    ) -> Vec<OffsetRow> {
        let stale: Vec<OffsetRow> = parts
            .iter()
            .filter(|(_, e)| self.is_stale(e.updated_at))
            .map(|(p, e)| e.row(namespace, p))
            .collect();
        if !self.dry_run {
            for r in &stale {
                parts.remove(&r.partition);
            }
        }
        stale
    }

    /// Prunes the namespaces it covers of a whole table; returns the stale rows.
    pub(crate) fn apply_all(&self, table: &mut Table) -> Vec<OffsetRow> {
        table
            .iter_mut()
            .filter(|(ns, _)| self.covers(ns))
            .flat_map(|(ns, parts)| self.apply(ns, parts))
            .collect()
    }
}

/// Every namespace's partition map, as the memory and Kafka stores hold them.
pub(crate) type Table = BTreeMap<String, BTreeMap<String, Entry>>;

/// An offset store failed.
#[derive(Debug, thiserror::Error)]
pub enum OffsetError {
    #[error("offset store {store}: {message}")]
    Io {
        store: String,
        message: String,
        #[source]
        source: std::io::Error,
    },
    /// The system that holds the offsets (a broker, a table) failed a call; taken as transient
    /// like [`OffsetError::Io`]. The connector error names the call and what the system said.
    #[error("offset store {store}: {source}")]
    Backend {
        store: String,
        #[source]
        source: sluice_connectors::ConnectorError,
    },
    /// The stored data cannot be read: never silently treated as "no offsets".
    #[error(
        "offset store {store}: {message}; refusing to start over from the beginning. Repair or move the file, or run `sluice offsets reset` to start over deliberately"
    )]
    Corrupt { store: String, message: String },
    /// The store refused the request as it stands (a bug or a broken store task): retrying the
    /// same call cannot help.
    #[error("offset store {store}: {message}")]
    Invalid { store: String, message: String },
    /// Another worker wrote this partition, or an operator reset it, since this worker read it.
    /// Committing anyway would move its offset back, so the pipeline stops at once.
    #[error(
        "offset store {store}: stale commit rejected: partition {partition} of `{namespace}` was committed by another worker or reset since this worker read it{detail}; this worker stops rather than move the offset back"
    )]
    Fenced {
        store: String,
        namespace: String,
        partition: String,
        /// Who holds the partition now, when the store says (` (now generation 7 by host:12:ab)`).
        detail: String,
    },
    /// An exactly-once commit's transaction was aborted (an abort-required Kafka error): nothing
    /// of it is visible. The pipeline stops and its supervisor rebuilds it from the last
    /// committed offsets.
    #[error("offset store {store}: {message}")]
    Aborted { store: String, message: String },
    /// The exactly-once transaction cannot go on: a newer instance with the same
    /// `transactional.id` fenced this one, or the producer failed for good. The pipeline stops
    /// at once and is not restarted.
    #[error("offset store {store}: {message}")]
    TxnFatal { store: String, message: String },
    /// Periodic commits kept failing with transient errors for longer than the pipeline allows.
    #[error(
        "offset commits failed for {failing_for:?} (the limit is {limit:?}, 10 × commit_interval); stopping so that a restart re-delivers a bounded amount. Last error: {last}"
    )]
    Unavailable {
        failing_for: std::time::Duration,
        limit: std::time::Duration,
        last: Box<OffsetError>,
    },
}

impl OffsetError {
    /// Whether the same commit may succeed if tried again later (a network or disk error).
    /// Fenced, corrupt and invalid stores never heal by waiting: the pipeline stops at once.
    pub fn is_transient(&self) -> bool {
        matches!(self, OffsetError::Io { .. } | OffsetError::Backend { .. })
    }

    /// Whether another worker or an operator's reset owns the partition now.
    pub fn is_fenced(&self) -> bool {
        matches!(self, OffsetError::Fenced { .. })
    }
}

/// A store of pipeline offsets.
#[async_trait]
pub trait OffsetStore: Send + Sync {
    /// Names the store in messages (`file .sluice/offsets`).
    fn describe(&self) -> String;
    /// The committed offsets of a namespace.
    async fn load(&self, namespace: &str) -> Result<CommittedOffsets, OffsetError>;
    /// Takes over partitions newly assigned to this worker (a Kafka rebalance): a store that
    /// fences stale writers re-reads their rows, so the previous owner's commits are not taken
    /// for a conflict. Stores without fencing do nothing.
    async fn claim(
        &self,
        _namespace: &str,
        _partitions: &[PartitionId],
    ) -> Result<(), OffsetError> {
        Ok(())
    }
    /// Stores these partitions' offsets (others stay as they are).
    async fn commit(&self, namespace: &str, offsets: &CommittedOffsets) -> Result<(), OffsetError>;
    /// Rows of one namespace, or of all.
    async fn list(&self, namespace: Option<&str>) -> Result<Vec<OffsetRow>, OffsetError>;
    /// Moves the partitions `req` names to `req.to`; returns the rows changed.
    async fn reset(&self, req: &Reset) -> Result<Vec<OffsetRow>, OffsetError>;
    /// Deletes the rows `req` selects; with `req.dry_run` only reports them.
    async fn prune(&self, req: &Prune) -> Result<Vec<OffsetRow>, OffsetError>;
}

/// Opens the store a spec names.
pub fn open(spec: &OffsetsSpec) -> Box<dyn OffsetStore> {
    match spec {
        OffsetsSpec::Memory(_) => Box::new(MemoryStore::default()),
        OffsetsSpec::File(f) => Box::new(FileStore::new(&f.path)),
        OffsetsSpec::Kafka(k) => Box::new(KafkaStore::new(k)),
        OffsetsSpec::Dynamodb(d) => Box::new(DynamoStore::new(d)),
    }
}

/// A stored partition entry (the row without its keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub offset: Offset,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub finished: bool,
    pub updated_at: DateTime<Utc>,
}

impl Entry {
    fn row(&self, namespace: &str, partition: &str) -> OffsetRow {
        OffsetRow {
            namespace: namespace.to_string(),
            partition: partition.to_string(),
            offset: self.offset.clone(),
            finished: self.finished,
            updated_at: self.updated_at,
            owner: None,
            lease_expires_at: None,
        }
    }

    fn committed(&self) -> Committed {
        Committed {
            offset: self.offset.clone(),
            finished: self.finished,
        }
    }
}

#[cfg(test)]
pub(crate) mod contract {
    //! The behaviour every store must have, run against each implementation.
    use super::*;

    /// Offsets of `(partition, offset, finished)`.
    fn offsets(rows: &[(&str, u64, bool)]) -> CommittedOffsets {
        rows.iter()
            .map(|&(p, o, finished)| {
                let offset = Offset::from(o);
                (p.into(), Committed { offset, finished })
            })
            .collect()
    }

    fn prune(namespace: Option<&str>, older_than: Option<Duration>, dry_run: bool) -> Prune {
        Prune {
            namespace: namespace.map(str::to_string),
            older_than,
            dry_run,
        }
    }

    pub async fn check(store: &dyn OffsetStore) {
        let ns = "pipe";
        assert!(store.load(ns).await.expect("load").is_empty());
        let c = offsets(&[("0", 10, false), ("1", 20, true)]);
        store.commit(ns, &c).await.expect("commit");
        let more = offsets(&[("0", 11, false)]);
        store.commit(ns, &more).await.expect("commit");
        store.commit("other", &more).await.expect("commit");
        let loaded = store.load(ns).await.expect("load");
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded["0"].offset, Offset::from(11));
        assert!(loaded["1"].finished);

        let rows = store.list(Some(ns)).await.expect("list");
        assert_eq!(rows.len(), 2);
        assert_eq!(store.list(None).await.expect("list").len(), 3);

        let changed = store
            .reset(&Reset::one(ns, "0", ResetTo::Offset(Offset::from(5))))
            .await
            .expect("reset");
        assert_eq!(changed.len(), 1);
        assert_eq!(
            store.load(ns).await.expect("load")["0"].offset,
            Offset::from(5)
        );
        store
            .reset(&Reset::one(ns, "1", ResetTo::Earliest))
            .await
            .expect("reset");
        assert!(!store.load(ns).await.expect("load").contains_key("1"));

        let hour = Some(Duration::from_secs(3600));
        let recent = store.prune(&prune(None, hour, false)).await.expect("prune");
        assert!(recent.is_empty(), "fresh rows are kept");
        let dry = store
            .prune(&prune(Some(ns), None, true))
            .await
            .expect("prune");
        assert_eq!(dry.len(), 1);
        assert_eq!(
            store.load(ns).await.expect("load").len(),
            1,
            "dry run keeps rows"
        );
        let pruned = store
            .prune(&prune(Some(ns), None, false))
            .await
            .expect("prune");
        assert_eq!(pruned, dry, "a prune deletes what its dry run reported");
        assert!(store.load(ns).await.expect("load").is_empty());
        assert_eq!(store.load("other").await.expect("load").len(), 1);

        // A reset without a partition moves every stored partition of the namespace only.
        let whole = |to| Reset {
            namespace: ns.into(),
            partition: None,
            to,
        };
        store.commit(ns, &c).await.expect("commit");
        let moved = store
            .reset(&whole(ResetTo::Offset(Offset::from(7))))
            .await
            .expect("reset");
        assert_eq!(moved.len(), 2);
        let loaded = store.load(ns).await.expect("load");
        assert!(loaded.values().all(|c| c.offset == Offset::from(7)));
        assert_eq!(loaded.len(), 2);
        let forgot = store.reset(&whole(ResetTo::Earliest)).await.expect("reset");
        assert_eq!(forgot.len(), 2);
        assert!(store.load(ns).await.expect("load").is_empty());
        assert_eq!(
            store.load("other").await.expect("load")["0"].offset,
            Offset::from(11)
        );
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A memory store for tests whose commits and claims pass through a hook first: the hook
    //! refuses them (a flaky or fenced store) or notes them (a recording store).
    use super::*;

    /// What a [`Hooked`] store does before its memory store commits or claims.
    pub(crate) trait Hook: Send + Sync {
        /// Names the store in messages.
        const NAME: &'static str;
        /// Runs before each commit; an error is the commit's, and the memory store keeps
        /// nothing.
        fn commit(&self, _namespace: &str, _offsets: &CommittedOffsets) -> Result<(), OffsetError> {
            Ok(())
        }
        /// Runs before each claim.
        fn claim(&self, _namespace: &str, _partitions: &[PartitionId]) {}
    }

    /// A memory store whose commits and claims pass through `hook` first; loads, lists, resets
    /// and prunes go straight to the memory store.
    #[derive(Default)]
    pub(crate) struct Hooked<H> {
        pub(crate) hook: H,
        inner: MemoryStore,
    }

    impl<H> Hooked<H> {
        pub(crate) fn new(hook: H) -> Self {
            Self {
                hook,
                inner: MemoryStore::default(),
            }
        }
    }

    #[async_trait]
    impl<H: Hook> OffsetStore for Hooked<H> {
        fn describe(&self) -> String {
            H::NAME.into()
        }
        async fn load(&self, namespace: &str) -> Result<CommittedOffsets, OffsetError> {
            self.inner.load(namespace).await
        }
        async fn claim(
            &self,
            namespace: &str,
            partitions: &[PartitionId],
        ) -> Result<(), OffsetError> {
            self.hook.claim(namespace, partitions);
            self.inner.claim(namespace, partitions).await
        }
        async fn commit(
            &self,
            namespace: &str,
            offsets: &CommittedOffsets,
        ) -> Result<(), OffsetError> {
            self.hook.commit(namespace, offsets)?;
            self.inner.commit(namespace, offsets).await
        }
        async fn list(&self, namespace: Option<&str>) -> Result<Vec<OffsetRow>, OffsetError> {
            self.inner.list(namespace).await
        }
        async fn reset(&self, req: &Reset) -> Result<Vec<OffsetRow>, OffsetError> {
            self.inner.reset(req).await
        }
        async fn prune(&self, req: &Prune) -> Result<Vec<OffsetRow>, OffsetError> {
            self.inner.prune(req).await
        }
    }
}
