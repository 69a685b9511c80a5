//! End-to-end tests of the DynamoDB sink, source and offset store through the `sluice` binary,
//! against the moto server that `scripts/test.sh` starts (`SLUICE_TEST_DYNAMODB_ENDPOINT`), and
//! Kinesis → DynamoDB against kinesis-local (`SLUICE_TEST_KINESIS_ENDPOINT`). Every test uses
//! tables and streams of its own.

mod common;
#[path = "common/dynamodb.rs"]
mod dynamo_support;
#[path = "common/kinesis.rs"]
mod kinesis_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use dynamo_support::*;

fn run_ok(s: &Scratch, args: &[&str]) -> String {
    let out = s.run(args);
    let err = stderr(&out);
    assert!(out.status.success(), "sluice {args:?} failed:\n{err}");
    err
}

fn offsets_yaml(d: &Dynamo, table: &str) -> String {
    format!(
        "offsets:\n  store: dynamodb\n  table: {table}\n  create_table: true\n  commit_interval: 200ms\n{}",
        aws_yaml(&d.endpoint, "  ")
    )
}

#[test]
fn generator_to_dynamodb_survives_kill_9_with_offsets_in_dynamodb() {
    let d = Dynamo::new();
    let table = d.create_table("e2e-gen", "seq", true, false);
    let offsets = format!("offsets-{:08x}", rand::random::<u32>());
    let s = Scratch::new();
    s.write(
        "spec.yaml",
        &format!(
            "version: 1\nname: gen-ddb\nsource:\n  type: generator\n  partitions: 2\n  count: 10000\n  rate: 1000\n  batch_size: 100\nformat:\n  decode: json\n  encode: json\nsink:\n  type: dynamodb\n  table: {table}\n  include_metadata:\n    partition: source_partition\n    offset: source_offset\n{aws}{offs}pipeline:\n  flush_interval: 100ms\n  max_buffered: 500\n",
            aws = aws_yaml(&d.endpoint, "  "),
            offs = offsets_yaml(&d, &offsets),
        ),
    );
    let mut child = s.spawn(&["run", "spec.yaml"]);
    let listed = |s: &Scratch| {
        let out = s.run(&["offsets", "list", "spec.yaml"]);
        stdout(&out)
    };
    assert!(
        wait_for(Duration::from_secs(60), || d.count(&table) > 1000
            && listed(&s).contains("gen-ddb")),
        "no progress before the kill: {} items",
        d.count(&table)
    );
    child.kill().expect("kill -9");
    child.wait().expect("reaped");
    let before = d.count(&table);
    assert!(before < 10000, "the run finished before the kill");
    let err = run_ok(&s, &["run", "spec.yaml"]);
    let items = d.by_key(&table, "seq");
    let seqs: BTreeSet<u64> = items.keys().map(|k| k.parse().expect("seq")).collect();
    let missing: Vec<u64> = (0..10000).filter(|i| !seqs.contains(i)).collect();
    assert!(
        missing.is_empty(),
        "{} records missing after the restart (first {:?}); {} items before the kill\n{err}",
        missing.len(),
        &missing[..missing.len().min(20)],
        before
    );
    let it = &items["7"];
    assert_eq!(it["source_partition"], s_("1"));
    assert_eq!(it["source_offset"], s_("3"));
    assert!(matches!(
        &it["user_id"],
        aws_sdk_dynamodb::types::AttributeValue::N(_)
    ));
    // The offsets live in DynamoDB: both partitions finished.
    let list = listed(&s);
    assert_eq!(list.matches("gen-ddb").count(), 2, "{list}");
}

fn s_(v: &str) -> aws_sdk_dynamodb::types::AttributeValue {
    s(v)
}

#[test]
fn snapshot_of_thousands_of_items_across_segments_resumes_after_a_stop() {
    let d = Dynamo::new();
    let table = d.create_table("e2e-snap", "id", true, false);
    d.put_ids(&table, 0..3000);
    let s = Scratch::new();
    s.write(
        "spec.yaml",
        &format!(
            "version: 1\nname: snap\nsource:\n  type: dynamodb\n  table: {table}\n  mode: snapshot\n  segments: 4\n  page_size: 100\n{aws}sink:\n  type: file\n  path: out/items.jsonl\noffsets:\n  store: file\n  path: offsets\n  commit_interval: 100ms\npipeline:\n  flush_interval: 50ms\n  max_buffered: 500\n",
            aws = aws_yaml(&d.endpoint, "  "),
        ),
    );
    run_ok(&s, &["run", "--max-records", "1000", "spec.yaml"]);
    let first = s.lines("out/items.jsonl").len();
    assert!(
        (1000..3000).contains(&first),
        "stopped in the middle: {first}"
    );
    let committed = std::fs::read_to_string(s.path("offsets/snap.offsets.json")).expect("offsets");
    assert!(committed.contains("scan-0-of-4"), "{committed}");
    run_ok(&s, &["run", "spec.yaml"]);
    let ids: Vec<u64> = s
        .lines("out/items.jsonl")
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            assert_eq!(v["body"], format!("item {}", v["id"]));
            v["id"].as_u64().expect("id")
        })
        .collect();
    let unique: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(unique, (0..3000).collect(), "every item at least once");
    assert!(
        ids.len() - unique.len() <= 4 * 100,
        "at most a page per segment again ({} repeats)",
        ids.len() - unique.len()
    );
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(s.path("offsets/snap.offsets.json")).expect("offsets"),
    )
    .expect("json");
    let parts = v["partitions"].as_object().expect("partitions");
    assert_eq!(parts.len(), 4);
    assert!(parts.values().all(|p| p["finished"] == true), "{parts:?}");
    // A third run has nothing left to read.
    run_ok(&s, &["run", "spec.yaml"]);
    assert_eq!(s.lines("out/items.jsonl").len(), ids.len());
}

fn mirror_spec(d: &Dynamo, name: &str, from: &str, to: &str, source_extra: &str) -> String {
    format!(
        "version: 1\nname: {name}\nsource:\n  type: dynamodb\n  table: {from}\n{source_extra}  poll_interval: 100ms\n  shard_discovery_interval: 1s\n{aws}sink:\n  type: dynamodb\n  table: {to}\n  mode: mirror\n{aws}offsets:\n  store: file\n  path: offsets\n  commit_interval: 100ms\npipeline:\n  flush_interval: 50ms\n  max_buffered: 500\n",
        aws = aws_yaml(&d.endpoint, "  "),
    )
}

fn same(d: &Dynamo, a: &str, b: &str, key: &str) -> bool {
    d.by_key(a, key) == d.by_key(b, key)
}

#[test]
fn cdc_mirrors_inserts_updates_and_deletes_into_another_table() {
    let d = Dynamo::new();
    let from = d.create_table("e2e-cdc-from", "id", false, true);
    let to = d.create_table("e2e-cdc-to", "id", false, false);
    let s = Scratch::new();
    s.write(
        "spec.yaml",
        &mirror_spec(
            &d,
            "cdc",
            &from,
            &to,
            "  mode: cdc\n  start_position: trim_horizon\n",
        ),
    );
    let mut child = s.spawn(&["run", "spec.yaml"]);
    let key = |i: u64| std::collections::HashMap::from([("id".to_string(), s_(&format!("k{i}")))]);
    for i in 0..60 {
        let mut it = key(i);
        it.insert("v".into(), n(1));
        d.put(&from, it);
    }
    for i in 0..30 {
        let mut it = key(i);
        it.insert("v".into(), n(2));
        it.insert("extra".into(), s_("updated"));
        d.put(&from, it);
    }
    for i in 50..60 {
        d.delete(&from, key(i));
    }
    let ok = wait_for(Duration::from_secs(60), || same(&d, &from, &to, "id"));
    signal(&child, "-TERM");
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(
        ok,
        "the copy never matched: {} vs {} items",
        d.count(&from),
        d.count(&to)
    );
    assert!(status.success());
    let copy = d.by_key(&to, "id");
    assert_eq!(copy.len(), 50);
    assert_eq!(copy["k3"]["v"], n(2));
    assert_eq!(copy["k40"]["v"], n(1));
    assert!(!copy.contains_key("k55"));
    // Changes made while the pipeline is down arrive after a restart, from the committed
    // sequence numbers: nothing before them is applied again over newer data.
    let committed = std::fs::read_to_string(s.path("offsets/cdc.offsets.json")).expect("offsets");
    assert!(committed.contains("shardId-"), "{committed}");
    for i in 0..5 {
        let mut it = key(i);
        it.insert("v".into(), n(3));
        d.put(&from, it);
    }
    d.delete(&from, key(10));
    let mut child = s.spawn(&["run", "spec.yaml"]);
    let ok = wait_for(Duration::from_secs(60), || same(&d, &from, &to, "id"));
    signal(&child, "-TERM");
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(
        ok && status.success(),
        "the copy did not catch up after the restart"
    );
    let copy = d.by_key(&to, "id");
    assert_eq!(copy.len(), 49);
    assert_eq!(copy["k4"]["v"], n(3));
    assert_eq!(copy["k20"]["v"], n(2));
}

#[test]
fn snapshot_then_cdc_copies_a_table_that_changes_during_the_scan() {
    let d = Dynamo::new();
    let from = d.create_table("e2e-s2c-from", "id", true, true);
    let to = d.create_table("e2e-s2c-to", "id", true, false);
    d.put_ids(&from, 0..1500);
    let s = Scratch::new();
    s.write(
        "spec.yaml",
        &mirror_spec(
            &d,
            "s2c",
            &from,
            &to,
            "  mode: snapshot_then_cdc\n  segments: 3\n  page_size: 50\n  rate_limit: 300\n",
        ),
    );
    let mut child = s.spawn(&["run", "spec.yaml"]);
    // Change the table while the (rate-limited) scan runs.
    assert!(
        wait_for(Duration::from_secs(30), || d.count(&to) > 100),
        "the scan did not start"
    );
    let key = |i: u64| std::collections::HashMap::from([("id".to_string(), n(i))]);
    for i in 0..30 {
        let mut it = key(2000 + i);
        it.insert("body".into(), s_("written during the scan"));
        d.put(&from, it);
        let mut it = key(i * 37);
        it.insert("body".into(), s_("updated during the scan"));
        d.put(&from, it);
        d.delete(&from, key(1000 + i));
    }
    let ok = wait_for(Duration::from_secs(90), || same(&d, &from, &to, "id"));
    signal(&child, "-TERM");
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(
        ok,
        "the copy never matched: {} vs {} items",
        d.count(&from),
        d.count(&to)
    );
    assert!(status.success());
    assert_eq!(d.count(&to), 1500);
}

#[test]
fn kinesis_to_dynamodb_stores_shard_and_sequence_and_a_replay_never_goes_back() {
    let k = kinesis_support::Kinesis::new();
    let d = Dynamo::new();
    let stream = k.create_stream(2);
    k.put_seqs(&stream, 0..600, 13);
    let table = d.create_table("e2e-kin", "key", false, false);
    let s = Scratch::new();
    let spec = |name: &str| {
        format!(
            "version: 1\nname: {name}\nsource:\n  type: kinesis\n  stream: {stream}\n  start_position: trim_horizon\n  shard_discovery_interval: 500ms\n{kaws}sink:\n  type: dynamodb\n  table: {table}\n  include_metadata:\n    shard-id: kinesis_shard_id\n    sequence-number: shard_sequence_number\n  only_newer_by: sequence-number\n{daws}offsets:\n  store: file\n  path: offsets\n  commit_interval: 100ms\npipeline:\n  flush_interval: 50ms\n  max_buffered: 500\n",
            kaws = kinesis_support::aws_yaml(&k.endpoint, "  "),
            daws = aws_yaml(&d.endpoint, "  "),
        )
    };
    s.write("spec.yaml", &spec("kin-ddb"));
    run_ok(&s, &["run", "--max-records", "600", "spec.yaml"]);
    let check = || {
        let items = d.by_key(&table, "key");
        assert_eq!(items.len(), 13);
        let got: BTreeMap<String, (u64, String, String)> = items
            .iter()
            .map(|(k, it)| {
                let seq = match &it["seq"] {
                    aws_sdk_dynamodb::types::AttributeValue::N(v) => v.parse().expect("seq"),
                    other => panic!("seq {other:?}"),
                };
                let txt = |a: &str| match &it[a] {
                    aws_sdk_dynamodb::types::AttributeValue::S(v) => v.clone(),
                    other => panic!("{a} {other:?}"),
                };
                (
                    k.clone(),
                    (seq, txt("kinesis_shard_id"), txt("shard_sequence_number")),
                )
            })
            .collect();
        for (key, (seq, shard, sn)) in &got {
            let k: u64 = key[1..].parse().expect("key");
            assert_eq!(
                *seq,
                (0..600u64).filter(|s| s % 13 == k).max().expect("max"),
                "the newest record of {key} wins"
            );
            assert!(shard.starts_with("shardId-"), "{shard}");
            assert!(
                sn.len() > 10 && sn.chars().all(|c| c.is_ascii_digit()),
                "{sn}"
            );
        }
        got
    };
    let first = check();
    // A replay from the start (a new pipeline name has no offsets) never overwrites newer items.
    s.write("replay.yaml", &spec("kin-ddb-replay"));
    run_ok(&s, &["run", "--max-records", "600", "replay.yaml"]);
    assert_eq!(check(), first);
    k.delete(&stream);
}

#[test]
fn items_dynamodb_refuses_go_to_the_dead_letter_file_and_the_rest_is_written() {
    let d = Dynamo::new();
    let table = d.create_table("e2e-bad", "id", true, false);
    let s = Scratch::new();
    let mut lines: Vec<String> = (0..40)
        .map(|i| format!(r#"{{"id":{i},"v":"ok"}}"#))
        .collect();
    lines.insert(
        7,
        r#"{"id":"seven","v":"key of the wrong type"}"#.to_string(),
    );
    lines.insert(20, r#"{"v":"no key at all"}"#.to_string());
    lines.insert(30, "not json".to_string());
    s.write("in/records.jsonl", &(lines.join("\n") + "\n"));
    s.write(
        "spec.yaml",
        &format!(
            "version: 1\nname: bad\nsource:\n  type: file\n  paths: [in/*.jsonl]\nsink:\n  type: dynamodb\n  table: {table}\n{aws}offsets:\n  store: file\n  path: offsets\nerrors:\n  tolerance: all\n  dead_letter:\n    type: file\n    path: dlq.jsonl\n",
            aws = aws_yaml(&d.endpoint, "  "),
        ),
    );
    let err = run_ok(&s, &["run", "spec.yaml"]);
    assert!(err.contains("3 dead-lettered"), "{err}");
    assert_eq!(d.count(&table), 40);
    let dlq = s.lines("dlq.jsonl");
    assert_eq!(dlq.len(), 3, "{dlq:?}");
    for l in &dlq {
        let v: serde_json::Value = serde_json::from_str(l).expect("json");
        assert_eq!(v["stage"], "sink");
        assert!(v["error"].as_str().expect("error").contains(&table), "{v}");
    }
    assert!(
        dlq.iter()
            .any(|l| l.contains("ValidationException") || l.contains("Type mismatch")),
        "{dlq:?}"
    );
    // With tolerance none the first refused item stops the pipeline, committing nothing past it.
    let s2 = Scratch::new();
    s2.write("in/records.jsonl", "{\"id\":1}\nnot json\n{\"id\":2}\n");
    s2.write(
        "spec.yaml",
        &format!(
            "version: 1\nname: strict\nsource:\n  type: file\n  paths: [in/*.jsonl]\nsink:\n  type: dynamodb\n  table: {table}\n{aws}offsets:\n  store: file\n  path: offsets\n",
            aws = aws_yaml(&d.endpoint, "  "),
        ),
    );
    let out = s2.run(&["run", "spec.yaml"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("invalid JSON"), "{}", stderr(&out));
}
