//! The one metrics handle of a pipeline: counters its parts bump per batch, read by the progress
//! display, the `/pipelines` API and the Prometheus exposition (`GET /metrics`).
//!
//! A handle belongs to one pipeline and outlives its restarts, so counters only grow. Nothing here
//! is global: each test or process makes its own handles and its own [`Exposition`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use sluice_connectors::CommittedOffsets;

/// Where an error happened, for `sluice_errors_total{stage}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorStage {
    Source,
    Process,
    Sink,
    Offsets,
}

impl ErrorStage {
    const ALL: [ErrorStage; 4] = [Self::Source, Self::Process, Self::Sink, Self::Offsets];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::Process => "process",
            Self::Sink => "sink",
            Self::Offsets => "offsets",
        }
    }
}

/// Live counters of one pipeline.
#[derive(Debug)]
pub struct Metrics {
    /// Source records taken into the pipeline.
    pub read: AtomicU64,
    /// Source records fully handled: written by the sink (all their outputs), filtered out, or
    /// dead-lettered.
    pub delivered: AtomicU64,
    /// Source records covered by committed offsets.
    pub committed: AtomicU64,
    /// Records sent to the dead-letter destination.
    pub dead_lettered: AtomicU64,
    /// Bytes of source record values taken in.
    pub bytes_read: AtomicU64,
    /// Records handed to the sink and accepted by its `write`.
    pub sink_records: AtomicU64,
    /// Errors by [`ErrorStage`]: failed runs, failed commit attempts, bad records.
    errors: [AtomicU64; 4],
    /// Unix time in milliseconds of the last successful offset commit (0: none yet).
    committed_at_ms: AtomicU64,
    /// Times the supervisor rebuilt the pipeline after a failure.
    pub restarts: AtomicU64,
    /// Shard leases this worker holds now (scale-out with leases).
    leases_held: AtomicU64,
    /// Leases this worker took from another worker (expired, or handed over to it).
    pub lease_takeovers: AtomicU64,
    /// Leases this worker lost (taken by another worker, or not renewed in time).
    pub lease_losses: AtomicU64,
    /// The source and sink are connected and records flow.
    up: AtomicBool,
    /// Duration of each sink flush (the calls that send buffered records).
    sink_request: Histogram,
    /// Duration of each stage call (one per batch), by stage name.
    stage_calls: Mutex<BTreeMap<String, Histogram>>,
    /// Per-partition lag the source reports (given to it in its `SourceContext`).
    pub source_lag: Arc<sluice_connectors::Lag>,
    /// The committed offsets as of the last commit (the start offsets before it).
    offsets: Mutex<Arc<CommittedOffsets>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            read: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            committed: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            sink_records: AtomicU64::new(0),
            errors: Default::default(),
            committed_at_ms: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            leases_held: AtomicU64::new(0),
            lease_takeovers: AtomicU64::new(0),
            lease_losses: AtomicU64::new(0),
            up: AtomicBool::new(false),
            sink_request: duration_histogram(),
            stage_calls: Mutex::default(),
            source_lag: Arc::default(),
            offsets: Mutex::default(),
        }
    }
}

/// 100 µs to ~105 s in factors of 4.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1e-4, 4.0, 11))
}

/// A point-in-time copy of [`Metrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub read: u64,
    pub delivered: u64,
    pub committed: u64,
    pub dead_lettered: u64,
    pub bytes_read: u64,
}

impl Metrics {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            read: self.read.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            committed: self.committed.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn error(&self, stage: ErrorStage) {
        self.errors[stage as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn errors(&self, stage: ErrorStage) -> u64 {
        self.errors[stage as usize].load(Ordering::Relaxed)
    }

    pub(crate) fn committed_now(&self) {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.committed_at_ms.store(ms, Ordering::Relaxed);
    }

    /// Unix time in seconds of the last commit, if any.
    pub fn committed_at(&self) -> Option<f64> {
        match self.committed_at_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(ms as f64 / 1000.0),
        }
    }

    pub(crate) fn set_leases_held(&self, n: u64) {
        self.leases_held.store(n, Ordering::Relaxed);
    }

    /// Shard leases this worker holds now.
    pub fn leases_held(&self) -> u64 {
        self.leases_held.load(Ordering::Relaxed)
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
    }

    /// Whether the source and sink are connected and records flow.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub(crate) fn set_offsets(&self, offsets: Arc<CommittedOffsets>) {
        *self
            .offsets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = offsets;
    }

    /// The committed offsets as of the last commit.
    pub fn offsets(&self) -> Arc<CommittedOffsets> {
        self.offsets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn sink_request(&self, took: Duration) {
        self.sink_request.observe(took.as_secs_f64());
    }

    pub(crate) fn stage_call(&self, stage: &str, took: Duration) {
        let mut calls = self
            .stage_calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match calls.get(stage) {
            Some(h) => h.observe(took.as_secs_f64()),
            None => {
                let h = duration_histogram();
                h.observe(took.as_secs_f64());
                calls.insert(stage.to_string(), h);
            }
        }
    }
}

/// The Prometheus exposition of a set of pipelines: register it in a
/// [`prometheus_client::registry::Registry`] and every scrape reads the handles' counters.
#[derive(Debug, Default, Clone)]
pub struct Exposition {
    pipelines: Arc<Mutex<Vec<Named>>>,
}

/// A pipeline's name and metrics handle.
type Named = (String, Arc<Metrics>);

impl Exposition {
    pub fn add(&self, pipeline: &str, metrics: Arc<Metrics>) {
        self.lock().push((pipeline.to_string(), metrics));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Named>> {
        self.pipelines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

type Read = fn(&Metrics) -> u64;
type LagRead = fn(&Metrics) -> Vec<(sluice_connectors::PartitionId, f64)>;

impl Collector for Exposition {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let pipelines = self.lock().clone();
        // Counter names get `_total` from the encoder.
        let counters: [(&str, &str, Read); 8] = [
            (
                "sluice_source_records",
                "Source records taken into the pipeline.",
                |m| m.read.load(Ordering::Relaxed),
            ),
            (
                "sluice_source_bytes",
                "Bytes of source record values taken in.",
                |m| m.bytes_read.load(Ordering::Relaxed),
            ),
            (
                "sluice_sink_records",
                "Records handed to the sink and accepted by it.",
                |m| m.sink_records.load(Ordering::Relaxed),
            ),
            (
                "sluice_dead_letter_records",
                "Records sent to the dead-letter destination.",
                |m| m.dead_lettered.load(Ordering::Relaxed),
            ),
            (
                "sluice_committed_records",
                "Source records covered by committed offsets.",
                |m| m.committed.load(Ordering::Relaxed),
            ),
            (
                "sluice_pipeline_restarts",
                "Times the pipeline was rebuilt after a failure.",
                |m| m.restarts.load(Ordering::Relaxed),
            ),
            (
                "sluice_lease_takeovers",
                "Shard leases this worker took from another worker (expired, or handed over).",
                |m| m.lease_takeovers.load(Ordering::Relaxed),
            ),
            (
                "sluice_lease_losses",
                "Shard leases this worker lost (taken by another worker, or not renewed in time).",
                |m| m.lease_losses.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, read) in counters {
            let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (p, m) in &pipelines {
                ConstCounter::new(read(m))
                    .encode(family.encode_family(&[("pipeline", p.as_str())])?)?;
            }
        }
        {
            let mut family = enc.encode_descriptor(
                "sluice_errors",
                "Errors by stage: failed runs, failed commit attempts, bad records.",
                None,
                MetricType::Counter,
            )?;
            for (p, m) in &pipelines {
                for stage in ErrorStage::ALL {
                    ConstCounter::new(m.errors(stage)).encode(
                        family.encode_family(&[
                            ("pipeline", p.as_str()),
                            ("stage", stage.as_str()),
                        ])?,
                    )?;
                }
            }
        }
        {
            let mut family = enc.encode_descriptor(
                "sluice_leases_held",
                "Shard leases this worker holds now (scale-out with leases).",
                None,
                MetricType::Gauge,
            )?;
            for (p, m) in &pipelines {
                ConstGauge::new(m.leases_held() as i64)
                    .encode(family.encode_family(&[("pipeline", p.as_str())])?)?;
            }
        }
        {
            let mut family = enc.encode_descriptor(
                "sluice_pipeline_up",
                "1 while the pipeline's source and sink are connected and records flow.",
                None,
                MetricType::Gauge,
            )?;
            for (p, m) in &pipelines {
                ConstGauge::new(i64::from(m.is_up()))
                    .encode(family.encode_family(&[("pipeline", p.as_str())])?)?;
            }
        }
        {
            let mut family = enc.encode_descriptor(
                "sluice_offsets_committed_timestamp_seconds",
                "Unix time of the pipeline's last successful offset commit.",
                None,
                MetricType::Gauge,
            )?;
            for (p, m) in &pipelines {
                if let Some(t) = m.committed_at() {
                    ConstGauge::new(t)
                        .encode(family.encode_family(&[("pipeline", p.as_str())])?)?;
                }
            }
        }
        // Per-partition lag, in time and in records.
        let lags: [(&str, &str, LagRead); 2] = [
            (
                "sluice_source_lag_seconds",
                "How far behind the newest record of each partition the source reads (Kinesis: MillisBehindLatest; DynamoDB Streams and Kafka: the age of the newest record read).",
                |m| {
                    m.source_lag
                        .snapshot()
                        .into_iter()
                        .map(|(p, ms)| (p, ms as f64 / 1000.0))
                        .collect()
                },
            ),
            (
                "sluice_source_lag_records",
                "Records of each partition after the source's position (Kafka: high watermark minus position).",
                |m| {
                    m.source_lag
                        .records_snapshot()
                        .into_iter()
                        .map(|(p, n)| (p, n as f64))
                        .collect()
                },
            ),
        ];
        for (name, help, read) in lags {
            let mut family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (p, m) in &pipelines {
                for (partition, value) in read(m) {
                    ConstGauge::new(value).encode(family.encode_family(&[
                        ("pipeline", p.as_str()),
                        ("partition", &*partition),
                    ])?)?;
                }
            }
        }
        {
            let mut family = enc.encode_descriptor(
                "sluice_sink_request_duration_seconds",
                "Duration of each sink flush (the calls that send buffered records).",
                None,
                MetricType::Histogram,
            )?;
            for (p, m) in &pipelines {
                m.sink_request
                    .encode(family.encode_family(&[("pipeline", p.as_str())])?)?;
            }
        }
        {
            let mut family = enc.encode_descriptor(
                "sluice_plugin_call_duration_seconds",
                "Duration of each decode, transform or encode call (one per batch), by stage.",
                None,
                MetricType::Histogram,
            )?;
            for (p, m) in &pipelines {
                let calls = m
                    .stage_calls
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                for (stage, h) in &calls {
                    h.encode(
                        family.encode_family(&[
                            ("pipeline", p.as_str()),
                            ("plugin", stage.as_str()),
                        ])?,
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// Renders a registry in the Prometheus text format.
pub fn render(registry: &prometheus_client::registry::Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail; an encoder error would only come from a bad label.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::warn!(error = %e, "cannot encode metrics");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_metric_with_the_pipeline_label() {
        let m = Arc::new(Metrics::default());
        Metrics::add(&m.read, 5);
        Metrics::add(&m.sink_records, 4);
        m.error(ErrorStage::Sink);
        m.committed_now();
        m.set_up(true);
        m.sink_request(Duration::from_millis(3));
        m.stage_call("transform mask.wasm", Duration::from_millis(1));
        m.source_lag.set(&"shardId-000000000001".into(), 2500);
        m.source_lag.set_records(&"orders/0".into(), 42);
        let exp = Exposition::default();
        exp.add("demo", m);
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(exp));
        let text = render(&registry);
        for line in [
            "sluice_source_records_total{pipeline=\"demo\"} 5",
            "sluice_sink_records_total{pipeline=\"demo\"} 4",
            "sluice_errors_total{pipeline=\"demo\",stage=\"sink\"} 1",
            "sluice_pipeline_up{pipeline=\"demo\"} 1",
            "sluice_source_lag_seconds{pipeline=\"demo\",partition=\"shardId-000000000001\"} 2.5",
            "sluice_source_lag_records{pipeline=\"demo\",partition=\"orders/0\"} 42",
            "sluice_sink_request_duration_seconds_count{pipeline=\"demo\"} 1",
            "sluice_plugin_call_duration_seconds_count{pipeline=\"demo\",plugin=\"transform mask.wasm\"} 1",
        ] {
            assert!(text.contains(line), "no `{line}` in:\n{text}");
        }
        assert!(text.contains("sluice_offsets_committed_timestamp_seconds{pipeline=\"demo\"} 1"));
    }
}
