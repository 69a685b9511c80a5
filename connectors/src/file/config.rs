use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::ConfigIssue;
use crate::units::int;

/// Reads files line by line: each file is a partition, each line a record, its offset the line
/// number. A file read to its end is recorded as finished and not read again.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// Files or glob patterns (`logs/*.jsonl`), relative to the spec file's folder. A file's
    /// partition is its path as matched, relative to that folder.
    #[schemars(length(min = 1))]
    pub paths: Vec<String>,
    /// The folder relative `paths` are read from: set by the runtime to the spec file's folder,
    /// never written in a spec. Empty: the working directory.
    #[serde(skip)]
    #[schemars(skip)]
    pub root: PathBuf,
    /// Records per batch.
    #[serde(default = "int::<usize, 1000>")]
    #[schemars(range(min = 1, max = 100000))]
    pub batch_size: usize,
}

impl FileSourceConfig {
    pub fn check(&self) -> Vec<ConfigIssue> {
        self.paths
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                glob::Pattern::new(p).err().map(|e| {
                    ConfigIssue::new(format!("paths/{i}"), format!("bad glob pattern `{p}`: {e}"))
                })
            })
            .collect()
    }
}

/// Appends records to a file, one per line. Records are acknowledged only once written and
/// fsynced, so a crash never loses an acknowledged record.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// The file to append to (created with its folders), relative to the spec file's folder. A
    /// torn last line left by a crash (no final newline) is cut off when the file is opened.
    pub path: PathBuf,
    /// Write a JSON envelope per line (`key`, `value`, `headers`, `timestamp`, `partition_key`,
    /// `metadata`) instead of the bare value.
    #[serde(default)]
    pub envelope: bool,
}

impl FileSinkConfig {
    pub fn check(&self) -> Vec<ConfigIssue> {
        if self.path.as_os_str().is_empty() {
            vec![ConfigIssue::new("path", "path must not be empty")]
        } else {
            Vec::new()
        }
    }
}
