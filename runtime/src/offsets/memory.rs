//! The `memory` offset store: progress lives as long as the process.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use schemars::JsonSchema;
use serde::Deserialize;
use sluice_connectors::CommittedOffsets;
use sluice_connectors::units::Dur;

use super::{Entry, OffsetError, OffsetRow, OffsetStore, ResetTo, apply_reset, is_stale};

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
    data: Mutex<BTreeMap<String, BTreeMap<String, Entry>>>,
}

impl MemoryStore {
    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<String, BTreeMap<String, Entry>>) -> T) -> T {
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

    async fn reset(
        &self,
        namespace: &str,
        partition: Option<&str>,
        to: ResetTo,
    ) -> Result<Vec<OffsetRow>, OffsetError> {
        Ok(self.with(|d| {
            apply_reset(
                namespace,
                d.entry(namespace.to_string()).or_default(),
                partition,
                &to,
            )
        }))
    }

    async fn prune(
        &self,
        namespace: Option<&str>,
        older_than: Option<Duration>,
        dry_run: bool,
    ) -> Result<Vec<OffsetRow>, OffsetError> {
        Ok(self.with(|d| {
            let mut pruned = Vec::new();
            for (ns, m) in d.iter_mut() {
                if namespace.is_some_and(|n| n != ns) {
                    continue;
                }
                let stale: Vec<String> = m
                    .iter()
                    .filter(|(_, e)| is_stale(e.updated_at, older_than))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in stale {
                    if let Some(e) = m.get(&k) {
                        pruned.push(e.row(ns, &k));
                    }
                    if !dry_run {
                        m.remove(&k);
                    }
                }
            }
            pruned
        }))
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn contract() {
        super::super::contract::check(&super::MemoryStore::default()).await;
    }
}
