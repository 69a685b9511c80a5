use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

use async_trait::async_trait;

use super::FileSinkConfig;
use crate::ack::Ack;
use crate::api::{Sink, SinkRecord};
use crate::error::ConnectorError;
use crate::record::{Record, Route};

/// Appends lines to a file; acknowledges after `fsync`.
pub struct FileSink {
    path: PathBuf,
    envelope: bool,
    file: Option<File>,
    buf: Vec<u8>,
    pending: Vec<Ack>,
}

impl FileSink {
    pub async fn open(cfg: &FileSinkConfig) -> Result<Self, ConnectorError> {
        let path = cfg.path.clone();
        let p = path.clone();
        let file = tokio::task::spawn_blocking(move || super::open_append(&p))
            .await
            .map_err(|e| ConnectorError::fatal(format!("file sink: open task failed: {e}")))?
            .map_err(|e| ConnectorError::io(format!("file sink: open {}", path.display()), e))?;
        Ok(Self {
            path,
            envelope: cfg.envelope,
            file: Some(file),
            buf: Vec::with_capacity(1 << 20),
            pending: Vec::new(),
        })
    }
}

/// Renders one output line (without the newline): the bare value, or a JSON envelope.
pub fn render_line(record: &Record, route: &Route, envelope: bool, out: &mut Vec<u8>) {
    if !envelope {
        out.extend_from_slice(&record.value);
        return;
    }
    let text = |b: &[u8]| serde_json::Value::String(String::from_utf8_lossy(b).into_owned());
    let value = serde_json::from_slice::<serde_json::Value>(&record.value)
        .unwrap_or_else(|_| text(&record.value));
    let mut env = serde_json::Map::new();
    env.insert(
        "key".into(),
        record.key.as_deref().map_or(serde_json::Value::Null, text),
    );
    env.insert("value".into(), value);
    if !record.headers.is_empty() {
        let h = record
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), text(v)))
            .collect::<serde_json::Map<_, _>>();
        env.insert("headers".into(), h.into());
    }
    if let Some(ts) = record.timestamp {
        env.insert("timestamp".into(), ts.into());
    }
    if let Some(k) = &route.key {
        env.insert("partition_key".into(), k.clone().into());
    }
    let mut meta = serde_json::Map::new();
    meta.insert("partition".into(), record.partition.to_string().into());
    meta.insert("offset".into(), record.offset.to_string().into());
    for (k, v) in &record.meta {
        meta.insert(k.to_string(), v.clone().into());
    }
    env.insert("metadata".into(), meta.into());
    // Serialising a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(out, &env);
}

#[async_trait]
impl Sink for FileSink {
    async fn write(&mut self, batch: Vec<SinkRecord>) -> Result<(), ConnectorError> {
        for r in batch {
            render_line(&r.record, &r.route, self.envelope, &mut self.buf);
            self.buf.push(b'\n');
            self.pending.push(r.ack);
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ConnectorError> {
        if self.pending.is_empty() && self.buf.is_empty() {
            return Ok(());
        }
        let mut file = self
            .file
            .take()
            .ok_or_else(|| ConnectorError::fatal("file sink: the file is closed after an error"))?;
        let buf = std::mem::take(&mut self.buf);
        let (file, buf, res) = tokio::task::spawn_blocking(move || {
            let res = file.write_all(&buf).and_then(|_| file.sync_data());
            (file, buf, res)
        })
        .await
        .map_err(|e| ConnectorError::fatal(format!("file sink: write task failed: {e}")))?;
        res.map_err(|e| {
            ConnectorError::io(format!("file sink: write {}", self.path.display()), e)
        })?;
        self.file = Some(file);
        self.buf = buf;
        self.buf.clear();
        for ack in self.pending.drain(..) {
            ack.ack();
        }
        Ok(())
    }
}
