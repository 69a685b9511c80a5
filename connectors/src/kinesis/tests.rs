//! Unit tests of the Kinesis connector's pure parts: aggregation, offsets, config, timestamps.
//! The connector against a real emulator is tested in `tests/kinesis.rs`.

use std::time::Duration;

use aws_sdk_kinesis::types::{Record as KRecord, ShardIteratorType};
use bytes::Bytes;

use super::aggregation::{self, Aggregate, UserRecord, hash_key_of};
use super::config::{
    KinesisSinkConfig, KinesisSourceConfig, ReaderKind, Registration, StartPosition,
};
use super::polling::adaptive_limit;
use super::records::{Converter, StartAt};
use super::{StreamRef, parse_timestamp};
use crate::record::Offset;

fn user(pk: &str, ehk: Option<&str>, data: &str) -> UserRecord {
    UserRecord {
        partition_key: pk.to_string(),
        explicit_hash_key: ehk.map(str::to_string),
        data: Bytes::copy_from_slice(data.as_bytes()),
    }
}

#[test]
fn aggregates_round_trip_with_shared_key_tables() {
    let mut a = Aggregate::default();
    let recs = vec![
        user("a", None, "one"),
        user("b", Some("12345"), "two"),
        user("a", None, ""),
        user("b", Some("12345"), &"x".repeat(300)),
    ];
    for r in &recs {
        let predicted = a.size_with(r);
        a.add(r.clone());
        assert_eq!(a.size(), predicted, "size_with predicts the size after add");
    }
    let bytes = a.finish();
    assert_eq!(bytes.len(), a.size());
    assert_eq!(&bytes[..4], &aggregation::MAGIC);
    assert_eq!(aggregation::deaggregate(&bytes), Some(recs));
    assert_eq!(a.partition_key(), Some("a"));
    assert_eq!(a.explicit_hash_key(), Some(hash_key_of("a").to_string()));
}

#[test]
fn non_aggregates_and_corrupt_aggregates_are_plain_records() {
    assert_eq!(
        aggregation::deaggregate(&Bytes::from_static(b"{\"seq\":1}")),
        None
    );
    let mut a = Aggregate::default();
    a.add(user("k", None, "v"));
    a.add(user("k", None, "w"));
    let mut bad = a.finish().to_vec();
    let n = bad.len();
    bad[n - 1] ^= 0xFF; // checksum no longer matches
    assert_eq!(aggregation::deaggregate(&Bytes::from(bad)), None);
    // Magic and a valid checksum over garbage: malformed protobuf.
    let body = [0xFFu8, 0xFF, 0xFF];
    let mut garbage = aggregation::MAGIC.to_vec();
    garbage.extend_from_slice(&body);
    use md5::Digest;
    garbage.extend_from_slice(&md5::Md5::digest(body));
    assert_eq!(aggregation::deaggregate(&Bytes::from(garbage)), None);
}

#[test]
fn hash_keys_are_md5_of_the_partition_key() {
    // MD5("") = d41d8cd98f00b204e9800998ecf8427e
    assert_eq!(hash_key_of(""), 0xd41d8cd98f00b204e9800998ecf8427e_u128);
}

fn krec(seq: &str, pk: &str, data: Bytes) -> KRecord {
    KRecord::builder()
        .sequence_number(seq)
        .partition_key(pk)
        .data(aws_smithy_types::Blob::new(data.to_vec()))
        .approximate_arrival_timestamp(aws_smithy_types::DateTime::from_millis(1_700_000_000_123))
        .build()
        .expect("record")
}

#[test]
fn converter_deaggregates_skips_delivered_sub_records_and_tracks_position() {
    let mut a = Aggregate::default();
    for i in 0..4 {
        a.add(user(&format!("k{i}"), None, &format!("v{i}")));
    }
    let recs = vec![
        krec("100", "k0", a.finish()),
        krec("200", "plain", Bytes::from_static(b"p")),
    ];
    // Resuming after sub-record 1 of aggregate 100.
    let start = StartAt::after_offset(&Offset::from("100:1"));
    assert_eq!(start, StartAt::AtSub("100".into(), 1));
    assert_eq!(
        start.iterator_type(),
        (ShardIteratorType::AtSequenceNumber, Some("100"))
    );
    let mut c = Converter::new("s", "shard-0".into(), &start);
    let mut out = Vec::new();
    c.convert(recs, &mut out);
    let offsets: Vec<&str> = out.iter().map(|r| r.offset.as_str()).collect();
    assert_eq!(offsets, ["100:2", "100:3", "200"]);
    assert_eq!(out[0].value, Bytes::from_static(b"v2"));
    assert_eq!(out[0].meta("partition-key"), Some("k2"));
    assert_eq!(out[0].meta("sub-sequence-number"), Some("2"));
    assert_eq!(out[0].meta("sequence-number"), Some("100"));
    assert_eq!(out[0].meta("shard-id"), Some("shard-0"));
    assert_eq!(out[0].meta("stream"), Some("s"));
    assert_eq!(
        out[0].meta("arrival-timestamp"),
        Some("2023-11-14T22:13:20.123Z")
    );
    assert_eq!(out[0].timestamp, Some(1_700_000_000_123));
    assert_eq!(out[2].meta("sub-sequence-number"), None);
    assert_eq!(c.position, Some(StartAt::After("200".into())));
    // A plain offset resumes after it.
    assert_eq!(
        StartAt::after_offset(&Offset::from("200")).iterator_type(),
        (ShardIteratorType::AfterSequenceNumber, Some("200"))
    );
}

#[test]
fn stream_names_and_arns() {
    assert_eq!(
        StreamRef::parse("orders").expect("name"),
        StreamRef {
            name: "orders".into(),
            arn: None
        }
    );
    let arn = "arn:aws:kinesis:us-east-1:000000000000:stream/orders";
    let s = StreamRef::parse(arn).expect("arn");
    assert_eq!(
        (s.name.as_str(), s.arn_param().as_deref(), s.name_param()),
        ("orders", Some(arn), None)
    );
    assert!(StreamRef::parse("arn:aws:s3:::bucket").is_err());
    assert!(StreamRef::parse("has space").is_err());
}

#[test]
fn timestamps_in_every_documented_form() {
    let ms = |s: &str, f: Option<&str>| parse_timestamp(s, f).map(|t| t.timestamp_millis());
    assert_eq!(ms("1459799926.480", None), Ok(1_459_799_926_480));
    assert_eq!(
        ms("2016-04-04T19:58:46.480-00:00", None),
        Ok(1_459_799_926_480)
    );
    assert_eq!(ms("2016-04-04", None), Ok(1_459_728_000_000));
    assert_eq!(ms("2016-04-04T19:58:46", None), Ok(1_459_799_926_000));
    assert_eq!(
        ms("04/04/2016 19:58", Some("%d/%m/%Y %H:%M")),
        Ok(1_459_799_880_000)
    );
    assert_eq!(ms("2016-04-04", Some("%Y-%m-%d")), Ok(1_459_728_000_000));
    assert!(
        parse_timestamp("yesterday", None)
            .unwrap_err()
            .contains("not a timestamp")
    );
    assert!(
        parse_timestamp("2016", Some("%d/%m/%Y"))
            .unwrap_err()
            .contains("does not match")
    );
}

#[test]
fn adaptive_reads_stay_under_two_mib_per_second() {
    assert_eq!(adaptive_limit(0.0, Duration::from_millis(200)), 10_000);
    // 1 KiB records, 5 calls/s: 2 MiB/s / 5 / 1 KiB = 409.6.
    assert_eq!(adaptive_limit(1024.0, Duration::from_millis(200)), 409);
    assert_eq!(adaptive_limit(10.0, Duration::from_millis(200)), 10_000);
    assert_eq!(adaptive_limit(5_000_000.0, Duration::from_secs(1)), 1);
}

#[test]
fn source_defaults_and_checks() {
    let c: KinesisSourceConfig =
        serde_json::from_value(serde_json::json!({"stream": "s"})).expect("config");
    assert_eq!(c.start_position, StartPosition::Latest);
    assert_eq!(c.reader, ReaderKind::Polling);
    assert_eq!(c.registration, Registration::Lazy);
    assert_eq!(c.max_records, 10_000);
    assert_eq!(c.interval.0, Duration::from_millis(200));
    assert_eq!(c.shard_discovery_interval.0, Duration::from_secs(10));
    assert_eq!(c.retries.describe.max_retries, 50);
    assert_eq!(c.retries.get_records.max_retries, 3);
    assert!(c.check().is_empty());

    let bad: KinesisSourceConfig = serde_json::from_value(serde_json::json!({
        "stream": "s", "start_position": "at_timestamp", "reader": "efo"
    }))
    .expect("config");
    let paths: Vec<String> = bad.check().into_iter().map(|i| i.path).collect();
    assert_eq!(paths, ["timestamp", "consumer_name"]);

    let unknown = serde_json::from_value::<KinesisSourceConfig>(serde_json::json!({
        "stream": "s", "max_record": 5
    }));
    assert!(unknown.is_err(), "typos are rejected");
}

#[test]
fn sink_defaults_and_checks() {
    let c: KinesisSinkConfig =
        serde_json::from_value(serde_json::json!({"stream": "s"})).expect("config");
    assert_eq!(
        (
            c.max_in_flight,
            c.max_buffered,
            c.max_batch_records,
            c.fail_on_error,
            c.aggregate
        ),
        (50, 10_000, 500, false, false)
    );
    assert_eq!(c.flush_interval.0, Duration::from_secs(5));
    assert_eq!(c.max_batch_size.0, 5 * 1024 * 1024);
    assert_eq!(c.aggregation_max_size.0, 51_200);
    assert!(c.check().is_empty());
    let bad: KinesisSinkConfig = serde_json::from_value(serde_json::json!({
        "stream": "s", "max_batch_size": "6MiB", "aggregate": true, "aggregation_max_size": "2MiB"
    }))
    .expect("config");
    let paths: Vec<String> = bad.check().into_iter().map(|i| i.path).collect();
    assert_eq!(paths, ["max_batch_size", "aggregation_max_size"]);
}

#[test]
fn sink_routes_by_hash_key_then_key_then_shard_index_and_rejects_bad_keys() {
    use super::sink::{Range, route};
    use crate::record::Route;
    let ranges = [
        Range { start: 0, end: 99 },
        Range {
            start: 100,
            end: 300,
        },
    ];
    let r = |key: Option<&str>, index: Option<u32>, ehk: Option<&str>| Route {
        key: key.map(str::to_string),
        index,
        explicit_hash_key: ehk.map(str::to_string),
    };
    assert_eq!(
        route(&r(Some("k"), Some(1), None), 10, &ranges),
        Ok(("k".into(), None))
    );
    assert_eq!(
        route(&r(Some("k"), None, Some("7")), 10, &ranges),
        Ok(("k".into(), Some("7".into())))
    );
    // Only a shard index: a random key and a hash key in the middle of that shard's range.
    let (key, ehk) = route(&r(None, Some(1), None), 10, &ranges).expect("routed");
    assert_eq!((key.len(), ehk.as_deref()), (32, Some("200")));
    let long = "é".repeat(257);
    assert!(
        route(&r(Some(&long), None, None), 10, &ranges)
            .unwrap_err()
            .contains("257 characters")
    );
    assert!(
        route(&r(Some(&"é".repeat(256)), None, None), 10, &ranges).is_ok(),
        "256 characters fit"
    );
    assert!(
        route(&r(Some(""), None, None), 10, &ranges)
            .unwrap_err()
            .contains("empty")
    );
    assert!(
        route(&r(Some("k"), None, Some("x1")), 10, &ranges)
            .unwrap_err()
            .contains("explicit hash key")
    );
    assert!(
        route(&r(Some("k"), None, None), 1024 * 1024, &ranges)
            .unwrap_err()
            .contains("1 MiB")
    );
    assert!(route(&r(Some("k"), None, None), 1024 * 1024 - 1, &ranges).is_ok());
}

#[test]
fn where_shards_without_offsets_start() {
    use super::source::first_position;
    let t0 = chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("time");
    let ts = StartAt::Timestamp(chrono::DateTime::from_timestamp(1_600_000_000, 0).expect("time"));
    // Shards listed at start, parents not read before: the configured position...
    assert_eq!(
        first_position(&StartAt::Latest, true, false, true, t0),
        StartAt::Latest
    );
    assert_eq!(
        first_position(&StartAt::TrimHorizon, true, false, false, t0),
        StartAt::TrimHorizon
    );
    assert_eq!(first_position(&ts, true, false, false, t0), ts);
    // ...but `latest` for a shard that waited for its parents means "since the run started".
    assert_eq!(
        first_position(&StartAt::Latest, true, false, false, t0),
        StartAt::Timestamp(t0)
    );
    // Children created during the run, or whose parents earlier runs read: from their start.
    assert_eq!(
        first_position(&StartAt::Latest, false, false, false, t0),
        StartAt::TrimHorizon
    );
    assert_eq!(
        first_position(&ts, true, true, true, t0),
        StartAt::TrimHorizon
    );
}
