//! The DynamoDB sink and source against a real moto server, through the connectors' public API
//! (`scripts/emulators/dynamodb.sh start RUN_DIR`, which `scripts/test.sh` runs; it exports
//! `SLUICE_TEST_DYNAMODB_ENDPOINT`, default `http://127.0.0.1:5000`). Pure item mapping is
//! unit-tested in `src/dynamodb/item.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is the test failing

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::types::ScalarAttributeType::{self, N, S};
use sluice_connectors::api::{
    CommittedOffsets, Sink, SinkRecord, Source, SourceBatch, SourceContext,
};
use sluice_connectors::dynamodb::*;
use sluice_connectors::{Completion, Offset, Record, Rejected, Route, Ticket};
use sluice_test_kit::dynamodb::{
    create_table, delete, item, n, put, put_ids as put_items, s, scan as scan_all,
};
use sluice_test_kit::{emulator, unique_name as table_name};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------- helpers

/// A client and a fresh table named after `prefix`, keyed by `hash` (and `range`), with a stream
/// if asked.
async fn new_table(
    prefix: &str,
    hash: (&str, ScalarAttributeType),
    range: Option<(&str, ScalarAttributeType)>,
    stream: bool,
) -> (Client, String) {
    let c = sluice_test_kit::dynamodb::client(&emulator::dynamodb());
    let t = table_name(prefix);
    create_table(&c, &t, hash, range, stream).await;
    (c, t)
}

/// A connector config: `base` with the emulator's `aws:` settings and `extra` merged in.
fn config<T: serde::de::DeserializeOwned>(
    mut base: serde_json::Value,
    extra: serde_json::Value,
) -> T {
    base["aws"] = sluice_test_kit::aws_json(&emulator::dynamodb());
    if let (Some(m), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    serde_json::from_value(base).expect("connector config")
}

fn sink_cfg(table: &str, extra: serde_json::Value) -> DynamoSinkConfig {
    config(serde_json::json!({"table": table}), extra)
}

/// A source on `table`, polling fast, with `extra` settings.
async fn source(table: &str, extra: serde_json::Value) -> DynamoSource {
    let cfg: DynamoSourceConfig = config(
        serde_json::json!({"table": table, "poll_interval": "50ms", "shard_discovery_interval": "200ms"}),
        extra,
    );
    DynamoSource::new(cfg).await.expect("source")
}

/// One ticket's worth of records for a sink, and how to see whether they all got acked.
struct Batch {
    done: mpsc::UnboundedReceiver<Completion>,
    rejects: mpsc::UnboundedReceiver<Rejected>,
}

impl Batch {
    fn new(
        values: &[serde_json::Value],
        meta: &[Vec<(&'static str, String)>],
    ) -> (Vec<SinkRecord>, Batch) {
        let (tx, done) = mpsc::unbounded_channel();
        let (rtx, rejects) = mpsc::unbounded_channel();
        let t = Ticket::with_rejects(
            Completion {
                partition: "p".into(),
                seq: 0,
                last_offset: Offset::from(values.len() as u64),
                records: values.len() as u64,
                end_of_partition: false,
                ok: true,
            },
            tx,
            Some(rtx),
        );
        let recs = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let mut r = Record::new(
                    "p".into(),
                    Offset::from(i as u64),
                    v.to_string().into_bytes(),
                );
                if let Some(m) = meta.get(i) {
                    r.meta = m.iter().map(|(k, v)| ((*k).into(), v.clone())).collect();
                }
                SinkRecord {
                    record: r,
                    route: Route::default(),
                    ack: t.ack(),
                }
            })
            .collect();
        t.close();
        (recs, Batch { done, rejects })
    }

    fn raw(values: &[&[u8]]) -> (Vec<SinkRecord>, Batch) {
        let (mut recs, b) = Self::new(&vec![serde_json::Value::Null; values.len()], &[]);
        for (r, v) in recs.iter_mut().zip(values) {
            r.record.value = bytes::Bytes::copy_from_slice(v);
        }
        (recs, b)
    }

    /// Rejected records (acking them, as the error policy would after dead-lettering).
    fn take_rejects(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(r) = self.rejects.try_recv() {
            out.push(r.reason.clone());
            r.ack.ack();
        }
        out
    }

    fn completed_ok(&mut self) -> bool {
        self.done.try_recv().map(|c| c.ok).unwrap_or(false)
    }
}

/// Writes `values` (with `meta`) through the sink and flushes; whether every record was acked.
async fn write_acked(
    sink: &mut DynamoSink,
    values: &[serde_json::Value],
    meta: &[Vec<(&'static str, String)>],
) -> bool {
    let (recs, mut b) = Batch::new(values, meta);
    sink.write(recs).await.expect("write");
    sink.flush().await.expect("flush");
    b.completed_ok()
}

fn get<'a>(item: &'a HashMap<String, AttributeValue>, k: &str) -> &'a AttributeValue {
    item.get(k).unwrap_or_else(|| panic!("no {k} in {item:?}"))
}

// ---------------------------------------------------------------- sink

#[tokio::test]
async fn sink_writes_batches_and_acks_every_record() {
    let (c, t) = new_table("sink-batches", ("id", N), None, false).await;
    let mut sink = DynamoSink::new(sink_cfg(
        &t,
        serde_json::json!({"batch_size": 25, "max_in_flight": 4}),
    ))
    .await
    .expect("sink");
    let values: Vec<_> = (0..260)
        .map(|i| serde_json::json!({"id": i, "name": format!("n{i}"), "score": 1.25}))
        .collect();
    let (recs, mut b) = Batch::new(&values, &[]);
    sink.write(recs).await.expect("write");
    assert!(!b.completed_ok(), "nothing is acked before it is written");
    sink.flush().await.expect("flush");
    assert!(b.completed_ok(), "every record acked after flush");
    let items = scan_all(&c, &t).await;
    assert_eq!(items.len(), 260);
    assert!(items.iter().all(|i| get(i, "score") == &n("1.25")));
}

#[tokio::test]
async fn sink_dedups_by_keys_and_never_reorders_one_key() {
    let values: Vec<_> = (0..100)
        .map(|i| serde_json::json!({"user_id": format!("u{}", i % 7), "v": i}))
        .collect();
    // With overwrite_by_keys only the latest per key is sent; without it every write is sent, in
    // order per key, never two of one key together. Either way the last write of a key wins.
    for (prefix, extra) in [
        (
            "sink-dedup",
            serde_json::json!({"overwrite_by_keys": ["user_id"]}),
        ),
        ("sink-nodedup", serde_json::json!({})),
    ] {
        let (c, t) = new_table(prefix, ("user_id", S), None, false).await;
        let mut sink = DynamoSink::new(sink_cfg(&t, extra)).await.expect("sink");
        assert!(write_acked(&mut sink, &values, &[]).await);
        let items = scan_all(&c, &t).await;
        assert_eq!(items.len(), 7);
        for it in &items {
            let AttributeValue::S(u) = get(it, "user_id") else {
                panic!()
            };
            let k: u64 = u[1..].parse().expect("n");
            let last = (0..100u64).filter(|i| i % 7 == k).max().expect("some");
            assert_eq!(
                get(it, "v"),
                &n(last),
                "{prefix}: the last write of {u} lands last"
            );
        }
    }
}

#[tokio::test]
async fn overwrite_by_keys_other_than_the_table_key_is_refused_at_start() {
    let (_, t) = new_table("sink-dedup-keys", ("user_id", S), Some(("ts", N)), false).await;
    for keys in [
        serde_json::json!(["user_id"]),
        serde_json::json!(["user_id", "ts", "v"]),
        serde_json::json!(["v"]),
    ] {
        let r = DynamoSink::new(sink_cfg(&t, serde_json::json!({"overwrite_by_keys": keys}))).await;
        let e = r.err().expect("refused");
        assert!(
            e.message
                .contains("overwrite_by_keys must name the table's key attributes")
                && e.message.contains(&t)
                && !e.retriable,
            "{e}"
        );
    }
    DynamoSink::new(sink_cfg(
        &t,
        serde_json::json!({"overwrite_by_keys": ["ts", "user_id"]}),
    ))
    .await
    .expect("the table key, in any order");
}

#[tokio::test]
async fn sink_mirror_mode_deletes_by_op_field_and_stream_records() {
    let (c, t) = new_table("sink-mirror", ("pk", S), Some(("sk", N)), false).await;
    let mut sink = DynamoSink::new(sink_cfg(&t, serde_json::json!({"mode": "mirror"})))
        .await
        .expect("sink");
    let values = vec![
        serde_json::json!({"pk": "a", "sk": 1, "x": 1}),
        serde_json::json!({"pk": "a", "sk": 2, "x": 2}),
        serde_json::json!({"pk": "b", "sk": 1, "x": 3}),
        serde_json::json!({"pk": "a", "sk": 1, "__op": "delete"}),
        serde_json::json!({"event": "INSERT", "keys": {"pk": "c", "sk": 9}, "new": {"pk": "c", "sk": 9, "y": true}, "old": null}),
        serde_json::json!({"event": "REMOVE", "keys": {"pk": "b", "sk": 1}, "new": null, "old": {"pk": "b", "sk": 1}}),
    ];
    assert!(write_acked(&mut sink, &values, &[]).await);
    let mut keys: Vec<String> = scan_all(&c, &t)
        .await
        .iter()
        .map(|i| {
            assert!(!i.contains_key("__op"), "the op field is never stored");
            format!("{:?}/{:?}", get(i, "pk"), get(i, "sk"))
        })
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            format!("{:?}/{:?}", s("a"), n(2)),
            format!("{:?}/{:?}", s("c"), n(9))
        ]
    );
}

#[tokio::test]
async fn sink_stores_metadata_and_the_guard_keeps_newer_items() {
    let (c, t) = new_table("sink-guard", ("id", S), None, false).await;
    let cfg = sink_cfg(
        &t,
        serde_json::json!({
            "include_metadata": {"shard-id": "kinesis_shard_id", "sequence-number": "shard_sequence_number"},
            "only_newer_by": "sequence-number"
        }),
    );
    assert!(cfg.check().is_empty(), "{:?}", cfg.check());
    let mut sink = DynamoSink::new(cfg).await.expect("sink");
    let meta = |seq: &str| {
        vec![
            ("shard-id", "shardId-000000000001".to_string()),
            ("sequence-number", seq.to_string()),
        ]
    };
    // Each write: (id, v, sequence number) per record. A replay of older records (the second)
    // is still acknowledged but does not overwrite.
    let writes: [&[(&str, &str, &str)]; 3] = [
        // 9 < 10 < 100 as numbers, though "9" > "10" as text: the guard compares lengths first.
        &[("k", "ten", "10"), ("j", "hundred", "100")],
        &[("k", "nine", "9"), ("j", "ninety-nine", "99")],
        &[("k", "eleven", "11")],
    ];
    for w in writes {
        let values: Vec<_> = w
            .iter()
            .map(|(id, v, _)| serde_json::json!({"id": id, "v": v}))
            .collect();
        let metas: Vec<_> = w.iter().map(|(_, _, seq)| meta(seq)).collect();
        assert!(
            write_acked(&mut sink, &values, &metas).await,
            "not acknowledged: {w:?}"
        );
    }
    let items: BTreeMap<String, HashMap<String, AttributeValue>> = scan_all(&c, &t)
        .await
        .into_iter()
        .map(|i| (format!("{:?}", get(&i, "id")), i))
        .collect();
    let k = &items[&format!("{:?}", s("k"))];
    let j = &items[&format!("{:?}", s("j"))];
    assert_eq!(get(k, "v"), &s("eleven"));
    assert_eq!(get(k, "shard_sequence_number"), &s("11"));
    assert_eq!(get(k, "kinesis_shard_id"), &s("shardId-000000000001"));
    assert_eq!(get(j, "v"), &s("hundred"));
}

#[tokio::test]
async fn sink_rejects_bad_records_and_writes_the_rest() {
    let (c, t) = new_table("sink-bad", ("id", N), None, false).await;
    let mut sink = DynamoSink::new(sink_cfg(&t, serde_json::json!({})))
        .await
        .expect("sink");
    let mut values: Vec<Vec<u8>> = (0..24)
        .map(|i| format!(r#"{{"id":{i}}}"#).into_bytes())
        .collect();
    values.push(b"not json".to_vec());
    values.push(br#"{"no_key":1}"#.to_vec());
    // The key has the wrong type: only the service can tell, and it fails the whole request.
    values.push(br#"{"id":"text"}"#.to_vec());
    let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    let (recs, mut b) = Batch::raw(&refs);
    sink.write(recs).await.expect("write");
    sink.flush().await.expect("flush");
    let rejects = b.take_rejects();
    assert_eq!(rejects.len(), 3, "{rejects:?}");
    assert!(
        rejects.iter().any(|r| r.contains("invalid JSON")),
        "{rejects:?}"
    );
    assert!(
        rejects.iter().any(|r| r.contains("no key attribute `id`")),
        "{rejects:?}"
    );
    assert!(
        rejects.iter().all(|r| r.contains(&t)),
        "errors name the table: {rejects:?}"
    );
    assert!(
        b.completed_ok(),
        "the batch completes once the rejects are dealt with"
    );
    assert_eq!(scan_all(&c, &t).await.len(), 24);
    // With fail_on_error the first bad record stops the sink.
    let mut strict = DynamoSink::new(sink_cfg(&t, serde_json::json!({"fail_on_error": true})))
        .await
        .expect("sink");
    let (recs, _b) = Batch::raw(&[b"nope"]);
    assert!(strict.write(recs).await.is_err());
}

#[tokio::test]
async fn sink_writes_dynamodb_json_items() {
    let (c, t) = new_table("sink-ddbjson", ("id", S), None, false).await;
    let mut sink = DynamoSink::new(sink_cfg(
        &t,
        serde_json::json!({"item_format": "dynamodb_json"}),
    ))
    .await
    .expect("sink");
    let item = serde_json::json!({"id": {"S": "x"}, "tags": {"SS": ["a", "b"]}, "n": {"N": "12345678901234567890.5"}});
    assert!(write_acked(&mut sink, &[item], &[]).await);
    let items = scan_all(&c, &t).await;
    assert_eq!(get(&items[0], "n"), &n("12345678901234567890.5"));
    assert!(matches!(get(&items[0], "tags"), AttributeValue::Ss(v) if v.len() == 2));
}

// ---------------------------------------------------------------- source

/// Runs a source until `until` holds for the records so far (or the source ends), then stops it.
async fn collect(
    mut src: DynamoSource,
    start: CommittedOffsets,
    committed: Option<watch::Receiver<Arc<CommittedOffsets>>>,
    until: impl Fn(&[SourceBatch]) -> bool,
    timeout: Duration,
) -> Vec<SourceBatch> {
    let (tx, mut rx) = mpsc::channel(16);
    let stop = CancellationToken::new();
    let (_ctx_tx, crx) = watch::channel(Arc::new(CommittedOffsets::new()));
    let ctx = SourceContext {
        start,
        output: tx,
        shutdown: stop.clone(),
        committed: committed.unwrap_or(crx),
        assigned: None,
        lag: Default::default(),
        grants: None,
        until_caught_up: false,
    };
    let task = tokio::spawn(async move { src.run(ctx).await });
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        tokio::select! {
            b = rx.recv() => match b {
                Some(b) => { got.push(b); if until(&got) { break; } }
                None => break,
            },
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    stop.cancel();
    drop(rx);
    task.await.expect("join").expect("source ok");
    got
}

fn records(batches: &[SourceBatch]) -> Vec<&Record> {
    batches.iter().flat_map(|b| b.records.iter()).collect()
}

fn parse(r: &Record) -> serde_json::Value {
    serde_json::from_slice(&r.value).expect("record JSON")
}

#[tokio::test]
async fn snapshot_scans_every_segment_and_resumes_after_the_committed_key() {
    let (c, t) = new_table("src-snap", ("id", N), None, false).await;
    put_items(&c, &t, 0..3000).await;
    let settings = serde_json::json!({"segments": 4, "page_size": 100});
    // A first run stopped early: keep what it delivered and the last offset per segment.
    let first = collect(
        source(&t, settings.clone()).await,
        CommittedOffsets::new(),
        None,
        |b| records(b).len() >= 1000,
        Duration::from_secs(60),
    )
    .await;
    let mut committed = CommittedOffsets::new();
    let mut seen: Vec<u64> = Vec::new();
    for b in &first {
        for r in &b.records {
            seen.push(parse(r)["id"].as_u64().expect("id"));
            assert_eq!(r.meta("table"), Some(t.as_str()));
        }
        let off = b
            .records
            .last()
            .map(|r| r.offset.clone())
            .or_else(|| b.end_offset.clone());
        if let Some(o) = off {
            committed.insert(
                b.partition.clone(),
                sluice_connectors::api::Committed {
                    offset: o,
                    finished: b.end_of_partition,
                },
            );
        }
    }
    assert!(
        seen.len() >= 1000 && seen.len() < 3000,
        "stopped in the middle: {}",
        seen.len()
    );
    assert!(
        committed
            .keys()
            .all(|p| p.starts_with("scan-") && p.ends_with("-of-4")),
        "{committed:?}"
    );
    let second = collect(
        source(&t, settings).await,
        committed,
        None,
        |_| false,
        Duration::from_secs(60),
    )
    .await;
    let ended: Vec<_> = second
        .iter()
        .filter(|b| b.end_of_partition)
        .map(|b| b.partition.to_string())
        .collect();
    assert_eq!(
        ended.len() + first.iter().filter(|b| b.end_of_partition).count(),
        4,
        "every segment ends once"
    );
    let mut again: Vec<u64> = records(&second)
        .iter()
        .map(|r| parse(r)["id"].as_u64().expect("id"))
        .collect();
    let overlap = again.iter().filter(|i| seen.contains(i)).count();
    assert_eq!(
        overlap, 0,
        "nothing delivered before the committed key is read again"
    );
    again.extend(seen);
    again.sort();
    assert_eq!(
        again,
        (0..3000).collect::<Vec<u64>>(),
        "every item exactly once across the two runs"
    );
}

#[tokio::test]
async fn cdc_delivers_inserts_updates_and_deletes_in_order_per_key() {
    let (c, t) = new_table("src-cdc", ("id", S), None, true).await;
    for round in 0..3 {
        for k in 0..5 {
            put(&c, &t, item([("id", s(&format!("k{k}"))), ("v", n(round))])).await;
        }
    }
    delete(&c, &t, item([("id", s("k2"))])).await;
    let src = source(&t, serde_json::json!({"mode": "cdc"})).await;
    let got = collect(
        src,
        CommittedOffsets::new(),
        None,
        |b| records(b).len() >= 16,
        Duration::from_secs(30),
    )
    .await;
    let recs = records(&got);
    assert_eq!(recs.len(), 16);
    let mut per_key: BTreeMap<String, Vec<(String, Option<i64>)>> = BTreeMap::new();
    for r in &recs {
        let v = parse(r);
        assert_eq!(r.meta("event-name"), v["event"].as_str());
        assert_eq!(r.meta("sequence-number"), v["sequence_number"].as_str());
        assert!(r.meta("shard-id").is_some() && r.meta("event-id").is_some());
        assert!(v["approximate_creation_time"].is_string(), "{v}");
        per_key
            .entry(v["keys"]["id"].as_str().expect("key").to_string())
            .or_default()
            .push((
                v["event"].as_str().expect("event").to_string(),
                v["new"]["v"].as_i64(),
            ));
        if v["event"] == "MODIFY" {
            assert!(v["old"]["v"].is_i64(), "old image present: {v}");
        }
    }
    assert_eq!(
        per_key["k0"],
        vec![
            ("INSERT".into(), Some(0)),
            ("MODIFY".into(), Some(1)),
            ("MODIFY".into(), Some(2))
        ]
    );
    assert_eq!(per_key["k2"].last(), Some(&("REMOVE".to_string(), None)));
    // Resuming after a sequence number delivers only what came after it.
    let mid = &recs[9];
    let mut start = CommittedOffsets::new();
    start.insert(
        mid.partition.clone(),
        sluice_connectors::api::Committed {
            offset: mid.offset.clone(),
            finished: false,
        },
    );
    let src = source(&t, serde_json::json!({"mode": "cdc"})).await;
    let rest = collect(
        src,
        start,
        None,
        |b| records(b).len() >= 6,
        Duration::from_secs(30),
    )
    .await;
    let rest: Vec<_> = records(&rest).iter().map(|r| r.offset.clone()).collect();
    let expected: Vec<_> = recs[10..].iter().map(|r| r.offset.clone()).collect();
    assert_eq!(rest, expected);
}

#[tokio::test]
async fn cdc_latest_skips_what_came_before() {
    let (c, t) = new_table("src-latest", ("id", S), None, true).await;
    put(&c, &t, item([("id", s("old"))])).await;
    let src = source(
        &t,
        serde_json::json!({"mode": "cdc", "start_position": "latest"}),
    )
    .await;
    // The source reads from `latest` once it has its shard iterators: write probes until one
    // arrives (no fixed wait for the source to be ready).
    let probing = CancellationToken::new();
    let writer = {
        let c = c.clone();
        let t = t.clone();
        let probing = probing.clone();
        tokio::spawn(async move {
            for i in 0.. {
                put(&c, &t, item([("id", s(&format!("new-{i}")))])).await;
                tokio::select! {
                    _ = probing.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        })
    };
    let got = collect(
        src,
        CommittedOffsets::new(),
        None,
        |b| !records(b).is_empty(),
        Duration::from_secs(20),
    )
    .await;
    probing.cancel();
    writer.await.expect("writer");
    let keys: Vec<_> = records(&got)
        .iter()
        .map(|r| parse(r)["keys"]["id"].as_str().map(str::to_string))
        .collect();
    assert!(!keys.is_empty(), "a write after the start arrives");
    assert!(
        keys.iter()
            .all(|k| k.as_deref().is_some_and(|k| k.starts_with("new-"))),
        "only writes after the start arrive, never the item written before: {keys:?}"
    );
}

#[tokio::test]
async fn snapshot_then_cdc_loses_nothing_written_during_the_scan() {
    let (c, t) = new_table("src-s2c", ("id", N), None, true).await;
    put_items(&c, &t, 0..1500).await;
    let src = source(
        &t,
        serde_json::json!({"mode": "snapshot_then_cdc", "segments": 3, "page_size": 50, "rate_limit": 400.0}),
    )
    .await;
    // Writes while the (rate-limited) scan runs: new items and updates of scanned ones.
    let writer = {
        let c = c.clone();
        let t = t.clone();
        tokio::spawn(async move {
            for i in 0..20u64 {
                put(&c, &t, item([("id", n(5000 + i)), ("body", s("during"))])).await;
                put(&c, &t, item([("id", n(i)), ("body", s("updated"))])).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let got = collect(
        src,
        CommittedOffsets::new(),
        None,
        |b| {
            let stream: Vec<_> = records(b)
                .into_iter()
                .filter(|r| !r.partition.starts_with("scan-"))
                .collect();
            stream
                .iter()
                .filter(|r| parse(r)["new"]["body"] == "during")
                .count()
                >= 20
                && stream
                    .iter()
                    .filter(|r| parse(r)["new"]["body"] == "updated")
                    .count()
                    >= 20
        },
        Duration::from_secs(60),
    )
    .await;
    writer.await.expect("writer");
    assert_eq!(
        got[0].partition.as_ref(),
        "snapshot-start",
        "the start time is recorded first"
    );
    let scanned: std::collections::BTreeSet<u64> = records(&got)
        .iter()
        .filter(|r| r.partition.starts_with("scan-"))
        .map(|r| parse(r)["id"].as_u64().expect("id"))
        .collect();
    assert!(
        (0..1500).all(|i| scanned.contains(&i)),
        "the snapshot has every original item"
    );
    let streamed = records(&got)
        .iter()
        .filter(|r| !r.partition.starts_with("scan-"))
        .count();
    assert!(
        streamed >= 40,
        "every write during the scan came through the stream ({streamed})"
    );
}

#[tokio::test]
async fn a_table_without_a_stream_is_a_clear_error() {
    let (_, t) = new_table("src-nostream", ("id", S), None, false).await;
    let mut src = source(&t, serde_json::json!({"mode": "cdc"})).await;
    let (tx, _rx) = mpsc::channel(1);
    let (_w, crx) = watch::channel(Arc::new(CommittedOffsets::new()));
    let ctx = SourceContext {
        start: CommittedOffsets::new(),
        output: tx,
        shutdown: CancellationToken::new(),
        committed: crx,
        assigned: None,
        lag: Default::default(),
        grants: None,
        until_caught_up: false,
    };
    let e = src.run(ctx).await.expect_err("no stream");
    assert!(
        e.to_string().contains(&t) && e.to_string().contains("no stream"),
        "{e}"
    );
}

#[tokio::test]
async fn rate_limit_paces_the_scan_by_consumed_capacity() {
    let (c, t) = new_table("src-rate", ("id", N), None, false).await;
    put_items(&c, &t, 0..1000).await;
    // moto reports 1 read unit per page here: 10+ pages at 4 units/s take 2.5 s or more.
    let settings = serde_json::json!({"segments": 2, "page_size": 100, "rate_limit": 4.0});
    let started = std::time::Instant::now();
    let got = collect(
        source(&t, settings).await,
        CommittedOffsets::new(),
        None,
        |_| false,
        Duration::from_secs(60),
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(records(&got).len(), 1000);
    assert!(
        elapsed >= Duration::from_millis(2000),
        "the scan was not paced: {elapsed:?}"
    );
    let fast = std::time::Instant::now();
    let got = collect(
        source(&t, serde_json::json!({"segments": 2, "page_size": 100})).await,
        CommittedOffsets::new(),
        None,
        |_| false,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(records(&got).len(), 1000);
    assert!(
        fast.elapsed() < elapsed,
        "unpaced {:?} vs paced {elapsed:?}",
        fast.elapsed()
    );
}
