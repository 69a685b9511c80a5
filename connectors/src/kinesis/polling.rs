//! The polling shard reader: GetRecords every `interval` (at most five calls per second per
//! shard), optionally sized adaptively, re-acquiring expired iterators from the last record.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::operation::get_records::GetRecordsOutput;

use super::at;
use super::config::MIN_POLL_INTERVAL;
use super::records::{Converter, StartAt};
use super::responses::FastResponses;
use super::source::{Exit, Shared};
use crate::error::{ConnectorError, retriable};
use crate::record::{Offset, PartitionId};

/// Kinesis serves at most 2 MiB per second per shard.
const SHARD_BYTES_PER_SECOND: f64 = 2.0 * 1024.0 * 1024.0;
const GET_RECORDS_MAX: i32 = 10_000;

/// A shard iterator for `start`.
pub(super) async fn get_iterator(
    sh: &Shared,
    shard: &str,
    start: &StartAt,
) -> Result<String, ConnectorError> {
    let (kind, seq) = start.iterator_type();
    let out = sh
        .cfg
        .retries
        .get_iterator
        .run(
            &format!(
                "kinesis source: GetShardIterator of stream {} shard {shard}",
                sh.stream.name
            ),
            retriable,
            || {
                sh.client
                    .get_shard_iterator()
                    .set_stream_name(sh.stream.name_param())
                    .set_stream_arn(sh.stream.arn_param())
                    .shard_id(shard)
                    .shard_iterator_type(kind.clone())
                    .set_starting_sequence_number(seq.map(str::to_string))
                    .set_timestamp(start.timestamp())
                    .send()
            },
        )
        .await
        .map_err(|e| {
            ConnectorError::call(
                at("source", &sh.stream.name, Some(shard)),
                "GetShardIterator",
                &e,
            )
        })?;
    out.shard_iterator().map(str::to_string).ok_or_else(|| {
        ConnectorError::fatal(format!(
            "kinesis source: stream {} shard {shard}: GetShardIterator returned no iterator",
            sh.stream.name
        ))
    })
}

/// What one GetRecords call gave: records, or an expired iterator to re-acquire.
pub(super) enum Fetch {
    Ok(GetRecordsOutput),
    Expired,
}

pub(super) async fn get_records(
    sh: &Shared,
    shard: &str,
    iterator: &str,
    limit: i32,
) -> Result<Fetch, ConnectorError> {
    let r = sh
        .cfg
        .retries
        .get_records
        .run(
            &format!(
                "kinesis source: GetRecords of stream {} shard {shard}",
                sh.stream.name
            ),
            retriable,
            || {
                sh.client
                    .get_records()
                    .shard_iterator(iterator)
                    .limit(limit)
                    .set_stream_arn(sh.stream.arn_param())
                    .customize()
                    .interceptor(FastResponses::get_records())
                    .send()
            },
        )
        .await;
    match r {
        Ok(o) => Ok(Fetch::Ok(o)),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_expired_iterator_exception()) =>
        {
            Ok(Fetch::Expired)
        }
        Err(e) => Err(ConnectorError::call(
            at("source", &sh.stream.name, Some(shard)),
            "GetRecords",
            &e,
        )),
    }
}

/// Records per GetRecords call so that one call per `interval` reads at most the shard's
/// 2 MiB/s (Flink's adaptive reads).
pub(super) fn adaptive_limit(avg_record_bytes: f64, interval: Duration) -> i32 {
    if avg_record_bytes <= 0.0 || interval.is_zero() {
        return GET_RECORDS_MAX;
    }
    let calls_per_second = 1.0 / interval.as_secs_f64();
    let n = SHARD_BYTES_PER_SECOND / (avg_record_bytes * calls_per_second);
    (n as i32).clamp(1, GET_RECORDS_MAX)
}

/// Reads one shard until it ends (`Exit::Finished`, after sending its end) or the pipeline
/// stops.
pub(super) async fn read_shard(
    sh: Arc<Shared>,
    shard: PartitionId,
    start: StartAt,
    mut last: Option<Offset>,
) -> Result<Exit, ConnectorError> {
    // Fires when the pipeline stops or this shard is no longer granted to this worker.
    let stop = sh.stop_token(&shard);
    let mut conv = Converter::new(&sh.stream.name, shard.clone(), &start);
    // Where to start again if the iterator expires before a record was read: `latest` means
    // "from when reading began", not "from the new latest".
    let restart = match &start {
        StartAt::Latest => StartAt::Timestamp(chrono::Utc::now()),
        other => other.clone(),
    };
    let mut iterator = tokio::select! {
        _ = stop.cancelled() => return Ok(Exit::Stopped),
        it = get_iterator(&sh, &shard, &start) => it?,
    };
    let interval = sh.cfg.interval.0.max(MIN_POLL_INTERVAL);
    let mut limit = sh.cfg.max_records.clamp(1, GET_RECORDS_MAX);
    let mut next_call = tokio::time::Instant::now();
    let mut last_lag_log = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(Exit::Stopped),
            _ = tokio::time::sleep_until(next_call) => {}
        }
        next_call = tokio::time::Instant::now() + interval;
        let asked = limit;
        let mut out = match get_records(&sh, &shard, &iterator, limit).await? {
            Fetch::Ok(o) => o,
            Fetch::Expired => {
                // Not called for 5 minutes (backpressure): start again after the last record.
                let from = conv.position.clone().unwrap_or_else(|| restart.clone());
                tracing::info!(stream = %sh.stream.name, shard = %shard, from = ?from, "shard iterator expired; getting a new one");
                conv.resume_at(&from);
                iterator = get_iterator(&sh, &shard, &from).await?;
                continue;
            }
        };
        let got = std::mem::take(&mut out.records);
        let n = got.len();
        let mut records = Vec::with_capacity(n);
        let bytes_before = conv.bytes;
        conv.convert(got, &mut records);
        if sh.cfg.adaptive && n > 0 {
            let avg = (conv.bytes - bytes_before) as f64 / n as f64;
            limit = adaptive_limit(avg, interval).min(sh.cfg.max_records.max(1));
        }
        if let Some(lag) = out.millis_behind_latest() {
            sh.lag.set(&shard, lag.max(0) as u64);
            tracing::debug!(stream = %sh.stream.name, shard = %shard, millis_behind_latest = lag, records = records.len(), "GetRecords");
            if lag > 0 && last_lag_log.elapsed() >= Duration::from_secs(30) {
                tracing::info!(stream = %sh.stream.name, shard = %shard, millis_behind_latest = lag, "shard lag");
                last_lag_log = Instant::now();
            }
        }
        if let Some(r) = records.last() {
            last = Some(r.offset.clone());
        }
        match out.next_shard_iterator() {
            Some(next) if !next.is_empty() => {
                iterator = next.to_string();
                if !sh.send_records(&shard, records).await {
                    return Ok(Exit::Stopped);
                }
                // A full response may have more behind it even at 0 (kinesis-local reports
                // the newest record's arrival minus the last returned one's).
                let full = n >= usize::try_from(asked).unwrap_or(0);
                if !full && sh.caught_up(&shard, out.millis_behind_latest()) {
                    return Ok(Exit::CaughtUp);
                }
            }
            _ => {
                // A closed shard read to its end.
                return Ok(sh.finish(&shard, records, last).await);
            }
        }
    }
}
