//! The dead-letter file: bad records with the error, the failing stage and their metadata.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use sluice_connectors::Record;

/// Appends dead-letter entries; `sync` makes them durable.
pub struct DeadLetter {
    path: PathBuf,
    out: BufWriter<File>,
    dirty: bool,
}

impl DeadLetter {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        // Creates the folders durably and cuts a torn last line left by a crash.
        let f = sluice_connectors::file::open_append(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            out: BufWriter::new(f),
            dirty: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds one entry.
    pub fn write(
        &mut self,
        pipeline: &str,
        stage: &str,
        error: &str,
        r: &Record,
    ) -> std::io::Result<()> {
        let text = |b: &[u8]| Value::String(String::from_utf8_lossy(b).into_owned());
        let value = serde_json::from_slice::<Value>(&r.value).unwrap_or_else(|_| text(&r.value));
        let meta: Map<String, Value> = r
            .meta
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
            .collect();
        let headers: Map<String, Value> = r
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), text(v)))
            .collect();
        let entry = json!({
            "pipeline": pipeline,
            "stage": stage,
            "error": error,
            "failed_at": chrono::Utc::now().to_rfc3339(),
            "partition": &*r.partition,
            "offset": r.offset.as_str(),
            "metadata": meta,
            "key": r.key.as_deref().map(text),
            "headers": headers,
            "timestamp": r.timestamp,
            "value": value,
        });
        serde_json::to_writer(&mut self.out, &entry)?;
        self.out.write_all(b"\n")?;
        self.dirty = true;
        Ok(())
    }

    /// Flushes and fsyncs what was written.
    pub fn sync(&mut self) -> std::io::Result<()> {
        if self.dirty {
            self.out.flush()?;
            self.out.get_ref().sync_data()?;
            self.dirty = false;
        }
        Ok(())
    }
}
