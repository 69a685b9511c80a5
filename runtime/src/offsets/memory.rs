//! The `memory` offset store: progress lives as long as the process.

use std::sync::Mutex;

use async_trait::async_trait;
use chrono::Utc;
use schemars::JsonSchema;
use serde::Deserialize;
use sluice_connectors::CommittedOffsets;
use sluice_connectors::units::Dur;

use super::{Entry, OffsetError, OffsetRow, OffsetStore, Prune, Reset, Table};

/// The in-memory offset store.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryStoreSpec {
    /// How often acknowledged progress is committed.
    #[serde(default = "super::default_commit_interval")]
    pub commit_interval: Dur,
}

#[derive(Default)]
pub struct MemoryStore {
    data: Mutex<Table>,
}

impl MemoryStore {
    fn with<T>(&self, f: impl FnOnce(&mut Table) -> T) -> T {
        // A poisoned lock only means another thread panicked mid-update of plain maps; the data
        // is still usable.
        let mut g = self.data.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }
}

#[async_trait]
impl OffsetStore for MemoryStore {
    fn describe(&self) -> String {
        "memory".into()
    }

    async fn load(&self, namespace: &str) -> Result<CommittedOffsets, OffsetError> {
        Ok(self.with(|d| {
            d.get(namespace)
                .map(|m| {
                    m.iter()
                        .map(|(k, e)| (k.as_str().into(), e.committed()))
                        .collect()
                })
                .unwrap_or_default()
        }))
    }

    async fn commit(&self, namespace: &str, offsets: &CommittedOffsets) -> Result<(), OffsetError> {
        let now = Utc::now();
        self.with(|d| {
            let ns = d.entry(namespace.to_string()).or_default();
            for (p, c) in offsets {
                ns.insert(
                    p.to_string(),
                    Entry {
                        offset: c.offset.clone(),
                        finished: c.finished,
                        updated_at: now,
                    },
                );
            }
        });
        Ok(())
    }

    async fn list(&self, namespace: Option<&str>) -> Result<Vec<OffsetRow>, OffsetError> {
        Ok(self.with(|d| {
            d.iter()
                .filter(|(ns, _)| namespace.is_none_or(|n| n == ns.as_str()))
                .flat_map(|(ns, m)| m.iter().map(move |(p, e)| e.row(ns, p)))
                .collect()
        }))
    }

    async fn reset(&self, req: &Reset) -> Result<Vec<OffsetRow>, OffsetError> {
        Ok(self.with(|d| req.apply(d.entry(req.namespace.clone()).or_default())))
    }

    async fn prune(&self, req: &Prune) -> Result<Vec<OffsetRow>, OffsetError> {
        Ok(self.with(|d| req.apply_all(d)))
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn contract() {
        super::super::contract::check(&super::MemoryStore::default()).await;
    }
}
