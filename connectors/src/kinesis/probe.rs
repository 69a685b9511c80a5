//! The lag of a paused pipeline's shards: per shard, one GetShardIterator after the committed
//! offset and one GetRecords of a single record, whose `MillisBehindLatest` is how far the
//! committed position is behind the shard's tip. Nothing is read on and nothing is sent.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::StreamRef;
use super::config::KinesisSourceConfig;
use super::polling::{Fetch, get_iterator, get_records};
use super::records::StartAt;
use super::source::Shared;
use crate::api::{CommittedOffsets, Lag};
use crate::error::ConnectorError;

/// Probes at most this often: two calls per shard per probe.
const MIN_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Asks Kinesis how far each shard's committed offset is behind its tip; see the module docs.
pub struct ShardLagProbe {
    shared: Shared,
}

impl ShardLagProbe {
    /// Builds a client for the source's stream (no call is made).
    pub async fn connect(cfg: KinesisSourceConfig) -> Result<Self, ConnectorError> {
        let stream = StreamRef::parse(&cfg.stream)
            .map_err(|m| ConnectorError::fatal(format!("kinesis source: {m}")))?;
        let client = super::client(&cfg.aws).await?;
        // The probe sends no batch: its output goes nowhere.
        let (output, _) = tokio::sync::mpsc::channel(1);
        Ok(Self {
            shared: Shared {
                client,
                cfg,
                stream,
                stream_arn: String::new(),
                batches: crate::api::BatchSender::new(output, Default::default()),
                shutdown: Default::default(),
                closed: Default::default(),
                lag: Arc::default(),
                until_caught_up: false,
                stops: Default::default(),
                sent: Default::default(),
            },
        })
    }

    /// `MillisBehindLatest` of the first record after `committed` in `shard`.
    async fn behind(&self, shard: &str, after: &StartAt) -> Result<Option<u64>, ConnectorError> {
        let it = get_iterator(&self.shared, shard, after).await?;
        Ok(match get_records(&self.shared, shard, &it, 1).await? {
            Fetch::Ok(out) => out.millis_behind_latest().map(|m| m.max(0) as u64),
            Fetch::Expired => None,
        })
    }
}

#[async_trait]
impl crate::api::LagProbe for ShardLagProbe {
    fn interval(&self) -> Duration {
        self.shared.cfg.interval.0.max(MIN_PROBE_INTERVAL)
    }

    /// Probes the shards the source reported a lag for before it stopped.
    async fn probe(&mut self, committed: &CommittedOffsets, lag: &Lag) {
        for (shard, _) in lag.snapshot() {
            let Some(c) = committed.get(&shard) else {
                continue;
            };
            if c.finished {
                lag.remove(&shard);
                continue;
            }
            match self.behind(&shard, &StartAt::after_offset(&c.offset)).await {
                Ok(Some(ms)) => lag.set(&shard, ms),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(stream = %self.shared.stream.name, shard = %shard, error = %e, "kinesis source: cannot probe the lag of a paused shard")
                }
            }
        }
    }
}
