use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::FileSourceConfig;
use crate::api::{Committed, Source, SourceBatch, SourceContext};
use crate::error::ConnectorError;
use crate::record::{Offset, PartitionId, Record};

/// Reads the files named by a [`FileSourceConfig`].
pub struct FileSource {
    cfg: FileSourceConfig,
}

impl FileSource {
    pub fn new(cfg: FileSourceConfig) -> Result<Self, ConnectorError> {
        Ok(Self { cfg })
    }

    /// The files the patterns match now, sorted by partition id, without duplicates: each as
    /// (partition id, path to open). A relative pattern is matched under `root`, and its files'
    /// ids stay relative to `root`, so they do not depend on the working directory.
    fn expand(&self) -> Result<Vec<(String, PathBuf)>, ConnectorError> {
        let root = &self.cfg.root;
        let under_root = !(root.as_os_str().is_empty() || root == Path::new("."));
        let mut files = Vec::new();
        for pattern in &self.cfg.paths {
            let relative = under_root && Path::new(pattern).is_relative();
            let full = if relative {
                format!(
                    "{}/{pattern}",
                    glob::Pattern::escape(&root.to_string_lossy())
                )
            } else {
                pattern.clone()
            };
            let matches = glob::glob(&full).map_err(|e| {
                ConnectorError::fatal(format!("file source: bad glob pattern `{pattern}`: {e}"))
            })?;
            let mut any = false;
            for m in matches {
                let path = m.map_err(|e| {
                    ConnectorError::fatal(format!("file source: cannot read `{pattern}`: {e}"))
                })?;
                if path.is_file() {
                    let id = match path.strip_prefix(root) {
                        Ok(rel) if relative => rel.to_string_lossy().into_owned(),
                        _ => path.to_string_lossy().into_owned(),
                    };
                    files.push((id, path));
                    any = true;
                }
            }
            if !any {
                return Err(ConnectorError::fatal(format!(
                    "file source: no file matches `{full}`"
                )));
            }
        }
        files.sort();
        files.dedup_by(|a, b| a.0 == b.0);
        Ok(files)
    }
}

#[async_trait]
impl Source for FileSource {
    async fn run(&mut self, ctx: SourceContext) -> Result<(), ConnectorError> {
        let files = self.expand()?;
        let batch = self.cfg.batch_size.max(1);
        let start = ctx.start.clone();
        let out = ctx.output.clone();
        let stop = ctx.shutdown.clone();
        tokio::task::spawn_blocking(move || {
            for (name, path) in files {
                let id: PartitionId = Arc::from(name.as_str());
                let shown = path.display();
                let file = File::open(&path)
                    .map_err(|e| ConnectorError::io(format!("file source: open {shown}"), e))?;
                let more = read_lines(
                    BufReader::with_capacity(256 * 1024, file),
                    id,
                    start.get(name.as_str()),
                    batch,
                    &out,
                    &stop,
                )
                .map_err(|e| ConnectorError::io(format!("file source: read {shown}"), e))?;
                if !more {
                    break;
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| ConnectorError::fatal(format!("file source: reader thread failed: {e}")))?
    }
}

/// Reads `reader` as partition `id`: skips lines up to the committed line, sends the rest in
/// batches (blocking), then marks the partition finished. Empty lines are skipped but counted.
/// Returns false when the pipeline stopped.
pub fn read_lines(
    mut reader: impl BufRead,
    id: PartitionId,
    committed: Option<&Committed>,
    batch: usize,
    out: &mpsc::Sender<SourceBatch>,
    stop: &CancellationToken,
) -> std::io::Result<bool> {
    let skip: u64 = match committed {
        Some(c) if c.finished => return Ok(true),
        Some(c) => c.offset.as_str().parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("committed offset {:?} is not a line number", c.offset),
            )
        })?,
        None => 0,
    };
    let mut line_no = 0u64;
    let mut records = Vec::with_capacity(batch);
    let mut buf = Vec::new();
    let send = |records: Vec<Record>, end: bool, line_no: u64| -> bool {
        if stop.is_cancelled() {
            return false;
        }
        let end_offset = (end && records.is_empty()).then(|| Offset::from(line_no));
        out.blocking_send(SourceBatch {
            partition: id.clone(),
            records,
            end_of_partition: end,
            end_offset,
        })
        .is_ok()
    };
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        line_no += 1;
        if line_no <= skip {
            continue;
        }
        let mut line = &buf[..];
        if let Some(l) = line.strip_suffix(b"\n") {
            line = l;
        }
        if let Some(l) = line.strip_suffix(b"\r") {
            line = l;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        records.push(Record::new(
            id.clone(),
            Offset::from(line_no),
            Bytes::copy_from_slice(line),
        ));
        if records.len() >= batch && !send(std::mem::take(&mut records), false, line_no) {
            return Ok(false);
        }
    }
    Ok(send(records, true, line_no.max(skip)))
}
