//! The enhanced fan-out reader: a registered stream consumer and one SubscribeToShard
//! subscription per shard, renewed before Kinesis ends it (5 minutes) and continued from the
//! last continuation sequence number.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::error::SdkError;
use aws_sdk_kinesis::operation::subscribe_to_shard::SubscribeToShardError;
use aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError;
use aws_sdk_kinesis::types::{ConsumerStatus, SubscribeToShardEventStream};

use super::at;
use super::config::Registration;
use super::records::{Converter, StartAt};
use super::source::{Exit, Shared};
use crate::error::{ConnectorError, retriable};
use crate::record::{Offset, PartitionId};

/// How often an idle subscription of a closed shard checks whether the shard is read to its end.
const END_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// How long a new consumer may take to become active.
const ACTIVE_DEADLINE: Duration = Duration::from_secs(120);

/// The consumer's ARN: registered (or reused) for `lazy` and `eager`, `consumer_arn` for `none`.
pub(super) async fn register(sh: &Shared) -> Result<String, ConnectorError> {
    let cfg = &sh.cfg;
    let stream = &sh.stream.name;
    if cfg.registration == Registration::None {
        return cfg.consumer_arn.clone().ok_or_else(|| {
            ConnectorError::fatal(format!(
                "kinesis source: stream {stream}: registration none needs a consumer_arn"
            ))
        });
    }
    let name = cfg.consumer_name.clone().ok_or_else(|| {
        ConnectorError::fatal(format!(
            "kinesis source: stream {stream}: reader efo needs a consumer_name"
        ))
    })?;
    let registered = cfg
        .retries
        .register
        .run(
            &format!("kinesis source: RegisterStreamConsumer {name} on stream {stream}"),
            retriable,
            || {
                sh.client
                    .register_stream_consumer()
                    .stream_arn(&sh.stream_arn)
                    .consumer_name(&name)
                    .send()
            },
        )
        .await;
    let arn = match registered {
        Ok(out) => out.consumer().map(|c| c.consumer_arn().to_string()),
        Err(e) if e.code() == Some("ResourceInUseException") => None,
        Err(e) => {
            return Err(ConnectorError::call(
                at("source", stream, None),
                "RegisterStreamConsumer",
                &e,
            ));
        }
    };
    // Wait until the consumer is active (an existing one may still be creating).
    let deadline = tokio::time::Instant::now() + ACTIVE_DEADLINE;
    loop {
        let out = cfg
            .retries
            .describe
            .run(
                &format!("kinesis source: DescribeStreamConsumer {name} on stream {stream}"),
                retriable,
                || {
                    let req = sh.client.describe_stream_consumer();
                    match &arn {
                        Some(a) => req.consumer_arn(a).send(),
                        None => req.stream_arn(&sh.stream_arn).consumer_name(&name).send(),
                    }
                },
            )
            .await
            .map_err(|e| {
                ConnectorError::call(at("source", stream, None), "DescribeStreamConsumer", &e)
            })?;
        if let Some(d) = out.consumer_description() {
            match d.consumer_status() {
                ConsumerStatus::Active => {
                    tracing::info!(stream = %stream, consumer = %name, arn = %d.consumer_arn(), "EFO consumer active");
                    return Ok(d.consumer_arn().to_string());
                }
                ConsumerStatus::Deleting => {
                    return Err(ConnectorError::retriable(format!(
                        "kinesis source: stream {stream}: EFO consumer {name} is being deleted"
                    )));
                }
                _ => {}
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ConnectorError::retriable(format!(
                "kinesis source: stream {stream}: EFO consumer {name} did not become active within {ACTIVE_DEADLINE:?}"
            )));
        }
        tokio::select! {
            _ = sh.shutdown.cancelled() => return Err(ConnectorError::retriable(format!(
                "kinesis source: stream {stream}: stopped while waiting for EFO consumer {name}"
            ))),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Deregisters the consumer (on a clean shutdown with `registration: lazy`); failures are
/// logged.
pub(super) async fn deregister(sh: &Shared, consumer_arn: &str) {
    let r = sh
        .cfg
        .retries
        .deregister
        .run(
            &format!(
                "kinesis source: DeregisterStreamConsumer on stream {}",
                sh.stream.name
            ),
            retriable,
            || {
                sh.client
                    .deregister_stream_consumer()
                    .consumer_arn(consumer_arn)
                    .send()
            },
        )
        .await;
    match r {
        Ok(_) => {
            tracing::info!(stream = %sh.stream.name, consumer = %consumer_arn, "EFO consumer deregistered")
        }
        Err(e) => {
            let e = ConnectorError::call(
                at("source", &sh.stream.name, None),
                "DeregisterStreamConsumer",
                &e,
            );
            tracing::warn!(error = %e, "could not deregister the EFO consumer");
        }
    }
}

/// Whether a closed shard has nothing after `continuation`: GetRecords from there returns no
/// record and no next iterator.
async fn at_end(sh: &Shared, shard: &str, continuation: &str) -> Result<bool, ConnectorError> {
    use super::polling::{Fetch, get_iterator, get_records};
    let it = get_iterator(sh, shard, &StartAt::After(continuation.to_string())).await?;
    Ok(match get_records(sh, shard, &it, 1).await? {
        Fetch::Ok(out) => {
            out.records().is_empty() && out.next_shard_iterator().is_none_or(str::is_empty)
        }
        // A fresh iterator that already expired says nothing about the end: ask again later.
        Fetch::Expired => false,
    })
}

/// Event-stream errors worth subscribing again for. Their metadata carries no error code, so
/// they are told apart by type: the previous subscription of this consumer and shard still
/// counting as active (for a few seconds after it ended), and passing service failures.
fn passing<R>(e: &SdkError<SubscribeToShardEventStreamError, R>) -> bool {
    matches!(
        e.as_service_error(),
        Some(
            SubscribeToShardEventStreamError::ResourceInUseException(_)
                | SubscribeToShardEventStreamError::InternalFailureException(_)
                | SubscribeToShardEventStreamError::KmsThrottlingException(_)
        )
    )
}

/// Reads one shard through subscriptions until it ends or the pipeline stops.
pub(super) async fn read_shard(
    sh: Arc<Shared>,
    consumer_arn: String,
    shard: PartitionId,
    start: StartAt,
    mut last: Option<Offset>,
) -> Result<Exit, ConnectorError> {
    // Fires when the pipeline stops or this shard is no longer granted to this worker.
    let stop = sh.stop_token(&shard);
    let stream = sh.stream.name.clone();
    let mut conv = Converter::new(&stream, shard.clone(), &start);
    let mut from = start;
    // Failed subscriptions in a row (reset by every event received).
    let mut failures: u32 = 0;
    let mut last_probe = std::time::Instant::now() - END_PROBE_INTERVAL;
    loop {
        if failures > 0 {
            // The delays grow with the failures in a row.
            let nth = failures.saturating_sub(1) as usize;
            let delay = sh.cfg.retries.subscribe.backoff.delays().nth(nth);
            let delay = delay.unwrap_or_default();
            tokio::select! {
                _ = stop.cancelled() => return Ok(Exit::Stopped),
                _ = tokio::time::sleep(delay) => {}
            }
        }
        let position = from.starting_position().map_err(|e| {
            ConnectorError::fatal(format!(
                "kinesis source: stream {stream} shard {shard}: bad starting position: {e}"
            ))
        })?;
        conv.resume_at(&from);
        let asked_at = chrono::Utc::now();
        let what = format!("kinesis source: SubscribeToShard of stream {stream} shard {shard}");
        let sub = tokio::select! {
            _ = stop.cancelled() => return Ok(Exit::Stopped),
            r = sh.cfg.retries.subscribe.run(
                &what,
                // A subscription of the same consumer to the same shard may linger for a few
                // seconds after the previous one ended.
                |e: &SdkError<SubscribeToShardError, HttpResponse>| {
                    retriable(e) || e.code() == Some("ResourceInUseException")
                },
                || {
                    sh.client
                        .subscribe_to_shard()
                        .consumer_arn(&consumer_arn)
                        .shard_id(shard.as_ref())
                        .starting_position(position.clone())
                        .send()
                },
            ) => r.map_err(|e| ConnectorError::call(at("source", &stream, Some(&shard)), "SubscribeToShard", &e))?,
        };
        if from == StartAt::Latest {
            // Subscribing again before any event must not skip what arrived meanwhile.
            from = StartAt::Timestamp(asked_at);
        }
        let mut events = sub.event_stream;
        let renew_at = tokio::time::Instant::now() + sh.cfg.subscription_renewal.0;
        tracing::debug!(stream = %stream, shard = %shard, from = ?from, "subscribed");
        loop {
            let ev = tokio::select! {
                _ = stop.cancelled() => return Ok(Exit::Stopped),
                _ = tokio::time::sleep_until(renew_at) => break,
                ev = events.recv() => ev,
            };
            let mut e = match ev {
                Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(e))) => e,
                Ok(Some(_)) => continue,
                // The server ended the subscription: subscribe again.
                Ok(None) => break,
                Err(err) => {
                    let ce = ConnectorError::call(
                        at("source", &stream, Some(&shard)),
                        "SubscribeToShard event stream",
                        &err,
                    );
                    failures += 1;
                    if (ce.retriable || passing(&err))
                        && failures <= sh.cfg.retries.subscribe.max_retries
                    {
                        tracing::debug!(error = %ce, failures, "subscription failed; subscribing again");
                        break;
                    }
                    return Err(ce);
                }
            };
            failures = 0;
            let got = std::mem::take(&mut e.records);
            let mut records = Vec::with_capacity(got.len());
            conv.convert(got, &mut records);
            if let Some(r) = records.last() {
                last = Some(r.offset.clone());
            }
            sh.lag.set(&shard, e.millis_behind_latest().max(0) as u64);
            let cont = e.continuation_sequence_number();
            tracing::trace!(stream = %stream, shard = %shard, records = records.len(), continuation = cont, child_shards = e.child_shards().len(), millis_behind_latest = e.millis_behind_latest(), "SubscribeToShard event");
            // Kinesis ends a closed shard's last subscription with an event without a
            // continuation. Some servers (kinesis-local) never do: for a shard listed as closed,
            // once caught up, ask GetRecords whether anything is left after the continuation.
            let ended = cont.is_empty()
                || (records.is_empty()
                    && e.millis_behind_latest() == 0
                    && sh.is_closed(&shard)
                    && last_probe.elapsed() >= END_PROBE_INTERVAL
                    && {
                        last_probe = std::time::Instant::now();
                        at_end(&sh, &shard, cont).await?
                    });
            if ended {
                // No continuation: the shard is closed and was read to its end.
                return Ok(sh.finish(&shard, records, last).await);
            }
            from = StartAt::After(cont.to_string());
            if !sh.send_records(&shard, records).await {
                return Ok(Exit::Stopped);
            }
            if sh.caught_up(&shard, Some(e.millis_behind_latest())) {
                return Ok(Exit::CaughtUp);
            }
        }
    }
}
