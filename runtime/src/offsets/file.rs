//! The `file` offset store (the embedded default): a folder with one JSON file per namespace,
//! replaced atomically (write a temporary file, fsync, rename, fsync the folder) on every commit,
//! while holding an exclusive advisory lock on the folder's `.lock` file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::Utc;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sluice_connectors::CommittedOffsets;
use sluice_connectors::units::Dur;

use super::{Entry, OffsetError, OffsetRow, OffsetStore, Prune, Reset};

/// The local file offset store (the embedded default).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileStoreSpec {
    /// Folder of the offset files, relative to the spec file's folder.
    #[serde(default = "super::default_offsets_path")]
    pub path: PathBuf,
    /// How often acknowledged progress is committed (and at shutdown).
    #[serde(default = "super::default_commit_interval")]
    pub commit_interval: Dur,
}

const EXT: &str = "offsets.json";

#[derive(Debug, Serialize, Deserialize)]
struct FileData {
    version: u32,
    namespace: String,
    partitions: BTreeMap<String, Entry>,
}

pub struct FileStore {
    dir: PathBuf,
    /// Serialises read-modify-write cycles within this process.
    lock: tokio::sync::Mutex<()>,
}

impl FileStore {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    fn path(&self, namespace: &str) -> PathBuf {
        self.dir.join(format!("{namespace}.{EXT}"))
    }

    fn io(&self, message: String, source: std::io::Error) -> OffsetError {
        OffsetError::Io {
            store: self.describe(),
            message,
            source,
        }
    }

    fn read(&self, namespace: &str) -> Result<BTreeMap<String, Entry>, OffsetError> {
        let path = self.path(namespace);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(self.io(format!("cannot read {}", path.display()), e)),
        };
        let data: FileData = serde_json::from_slice(&bytes).map_err(|e| OffsetError::Corrupt {
            store: self.describe(),
            message: format!("{} is corrupt ({e})", path.display()),
        })?;
        if data.version != 1 || data.namespace != namespace {
            return Err(OffsetError::Corrupt {
                store: self.describe(),
                message: format!(
                    "{} holds version {} offsets of `{}`, expected version 1 of `{namespace}`",
                    path.display(),
                    data.version,
                    data.namespace
                ),
            });
        }
        Ok(data.partitions)
    }

    fn write(
        &self,
        namespace: &str,
        partitions: BTreeMap<String, Entry>,
    ) -> Result<(), OffsetError> {
        sluice_connectors::file::create_dir_durable(&self.dir)
            .map_err(|e| self.io(format!("cannot create {}", self.dir.display()), e))?;
        let path = self.path(namespace);
        if partitions.is_empty() {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(self.io(format!("cannot remove {}", path.display()), e))
                }
                _ => Ok(()),
            };
        }
        let data = FileData {
            version: 1,
            namespace: namespace.to_string(),
            partitions,
        };
        // Writers hold the folder's lock (see `locked`), so one temporary name is enough and a
        // crash leaves at most this one file behind.
        let tmp = self.dir.join(format!(".{namespace}.{EXT}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            serde_json::to_writer_pretty(&mut f, &data)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            // Make the rename itself durable.
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| self.io(format!("cannot write {}", path.display()), e))
    }

    /// The namespace `only` names, or every namespace with a file in the folder.
    fn namespaces(&self, only: Option<&str>) -> Result<Vec<String>, OffsetError> {
        if let Some(ns) = only {
            return Ok(vec![ns.to_string()]);
        }
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io(format!("cannot list {}", self.dir.display()), e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| self.io(format!("cannot list {}", self.dir.display()), e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(ns) = name.strip_suffix(&format!(".{EXT}"))
                && !ns.starts_with('.')
            {
                out.push(ns.to_string());
            }
        }
        out.sort();
        Ok(out)
    }

    /// Runs a read-modify-write cycle holding the folder's lock file (`.lock`, an exclusive
    /// advisory lock), so that two processes on the same folder (the same spec run twice, a
    /// `sluice offsets reset` racing a commit) never lose each other's updates.
    async fn locked<T: Send + 'static>(
        &self,
        f: impl FnOnce(&FileStore) -> Result<T, OffsetError> + Send + 'static,
    ) -> Result<T, OffsetError> {
        self.blocking(move |s| {
            sluice_connectors::file::create_dir_durable(&s.dir)
                .map_err(|e| s.io(format!("cannot create {}", s.dir.display()), e))?;
            let path = s.dir.join(".lock");
            let lock = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| s.io(format!("cannot open {}", path.display()), e))?;
            lock.lock()
                .map_err(|e| s.io(format!("cannot lock {}", path.display()), e))?;
            // Unlocked when `lock` is closed, after `f`.
            f(s)
        })
        .await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&FileStore) -> Result<T, OffsetError> + Send + 'static,
    ) -> Result<T, OffsetError> {
        let _guard = self.lock.lock().await;
        let me = FileStore::new(&self.dir);
        tokio::task::spawn_blocking(move || f(&me))
            .await
            .map_err(|e| OffsetError::Invalid {
                store: self.describe(),
                message: format!("store task failed: {e}"),
            })?
    }
}

#[async_trait]
impl OffsetStore for FileStore {
    fn describe(&self) -> String {
        format!("file {}", self.dir.display())
    }

    async fn load(&self, namespace: &str) -> Result<CommittedOffsets, OffsetError> {
        let ns = namespace.to_string();
        let parts = self.blocking(move |s| s.read(&ns)).await?;
        Ok(parts
            .iter()
            .map(|(k, e)| (k.as_str().into(), e.committed()))
            .collect())
    }

    async fn commit(&self, namespace: &str, offsets: &CommittedOffsets) -> Result<(), OffsetError> {
        let ns = namespace.to_string();
        let now = Utc::now();
        let updates: Vec<(String, Entry)> = offsets
            .iter()
            .map(|(p, c)| {
                (
                    p.to_string(),
                    Entry {
                        offset: c.offset.clone(),
                        finished: c.finished,
                        updated_at: now,
                    },
                )
            })
            .collect();
        self.locked(move |s| {
            let mut parts = s.read(&ns)?;
            parts.extend(updates);
            s.write(&ns, parts)
        })
        .await
    }

    async fn list(&self, namespace: Option<&str>) -> Result<Vec<OffsetRow>, OffsetError> {
        let only = namespace.map(str::to_string);
        self.blocking(move |s| {
            let mut rows = Vec::new();
            for ns in s.namespaces(only.as_deref())? {
                rows.extend(s.read(&ns)?.iter().map(|(p, e)| e.row(&ns, p)));
            }
            Ok(rows)
        })
        .await
    }

    async fn reset(&self, req: &Reset) -> Result<Vec<OffsetRow>, OffsetError> {
        let req = req.clone();
        self.locked(move |s| {
            let mut parts = s.read(&req.namespace)?;
            let changed = req.apply(&mut parts);
            s.write(&req.namespace, parts)?;
            Ok(changed)
        })
        .await
    }

    async fn prune(&self, req: &Prune) -> Result<Vec<OffsetRow>, OffsetError> {
        let req = req.clone();
        self.locked(move |s| {
            let mut pruned = Vec::new();
            for ns in s.namespaces(req.namespace.as_deref())? {
                let mut parts = s.read(&ns)?;
                let stale = req.apply(&ns, &mut parts);
                if !stale.is_empty() && !req.dry_run {
                    s.write(&ns, parts)?;
                }
                pruned.extend(stale);
            }
            Ok(pruned)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        super::super::contract::check(&FileStore::new(&dir.path().join("offsets"))).await;
    }

    #[tokio::test]
    async fn a_corrupt_file_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::new(dir.path());
        std::fs::write(
            dir.path().join("p.offsets.json"),
            b"{\"version\":1,\"namesp",
        )
        .expect("write");
        let err = store.load("p").await.expect_err("corrupt");
        let msg = err.to_string();
        assert!(
            msg.contains("corrupt") && msg.contains("refusing to start over"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn survives_a_new_store_instance() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = CommittedOffsets::new();
        c.insert(
            "a".into(),
            sluice_connectors::Committed {
                offset: "42".into(),
                finished: false,
            },
        );
        FileStore::new(dir.path())
            .commit("p", &c)
            .await
            .expect("commit");
        let loaded = FileStore::new(dir.path()).load("p").await.expect("load");
        assert_eq!(loaded["a"].offset.as_str(), "42");
        assert!(!dir.path().join(".p.offsets.json.tmp").exists());
    }
    #[test]
    fn two_processes_committing_to_one_folder_lose_no_update() {
        // Two stores on one folder stand for two processes: each has its own in-process mutex,
        // so only the folder's lock file keeps their read-modify-write cycles apart.
        let dir = tempfile::tempdir().expect("tempdir");
        let rounds = 60u64;
        let writers: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|p| {
                let dir = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .expect("runtime");
                    let store = FileStore::new(&dir);
                    for i in 0..rounds {
                        let c = CommittedOffsets::from([(
                            p.into(),
                            sluice_connectors::Committed {
                                offset: i.to_string().as_str().into(),
                                finished: false,
                            },
                        )]);
                        rt.block_on(store.commit("p", &c)).expect("commit");
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().expect("writer");
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let loaded = rt
            .block_on(FileStore::new(dir.path()).load("p"))
            .expect("load");
        let last = (rounds - 1).to_string();
        assert_eq!(loaded["a"].offset.as_str(), last);
        assert_eq!(loaded["b"].offset.as_str(), last);
    }
}
