//! End-to-end tests of the DynamoDB sink, source and offset store through the `sluice` binary,
//! against the moto server that `scripts/test.sh` starts (`SLUICE_TEST_DYNAMODB_ENDPOINT`), and
//! Kinesis → DynamoDB against kinesis-local (`SLUICE_TEST_KINESIS_ENDPOINT`). Every test uses
//! tables and streams of its own.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is the test failing

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use sluice_test_kit::dynamodb::*;
use sluice_test_kit::*;

fn offsets_yaml(d: &Dynamo, table: &str) -> String {
    format!(
        "offsets:\n  store: dynamodb\n  table: {table}\n  create_table: true\n  commit_interval: 200ms\n{}",
        aws_yaml(&d.endpoint, "  ")
    )
}

#[test]
fn offsets_commands_print_a_store_failure_once() {
    let table = format!("offsets-missing-{:08x}", rand::random::<u32>());
    let offsets =
        offsets_yaml(&Dynamo::new(), &table).replace("create_table: true", "create_table: false");
    let s = Scratch::new();
    let spec =
        "version: 1\nname: missing\nsource: {type: generator, count: 1}\nsink: {type: discard}\n";
    s.write("spec.yaml", &format!("{spec}{offsets}"));
    let err = stderr(&s.run_err(&["offsets", "list", "spec.yaml"]));
    assert!(err.contains(&table), "{err}");
    assert_eq!(err.matches("the table does not exist").count(), 1, "{err}");
}

#[test]
fn generator_to_dynamodb_survives_kill_9_with_offsets_in_dynamodb() {
    let d = Dynamo::new();
    let table = d.create_table("e2e-gen", "seq", true, false);
    let offsets = format!("offsets-{:08x}", rand::random::<u32>());
    let s = Scratch::with(
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
    let err = stderr(&s.run_ok(&["run", "spec.yaml"]));
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
    let s = Scratch::with(
        "spec.yaml",
        &format!(
            "version: 1\nname: snap\nsource:\n  type: dynamodb\n  table: {table}\n  mode: snapshot\n  segments: 4\n  page_size: 100\n{aws}sink:\n  type: file\n  path: out/items.jsonl\noffsets:\n  store: file\n  path: offsets\n  commit_interval: 100ms\npipeline:\n  flush_interval: 50ms\n  max_buffered: 500\n",
            aws = aws_yaml(&d.endpoint, "  "),
        ),
    );
    s.run_ok(&["run", "--max-records", "1000", "spec.yaml"]);
    let first = s.lines("out/items.jsonl").len();
    assert!(
        (1000..3000).contains(&first),
        "stopped in the middle: {first}"
    );
    let committed = std::fs::read_to_string(s.path("offsets/snap.offsets.json")).expect("offsets");
    assert!(committed.contains("scan-0-of-4"), "{committed}");
    s.run_ok(&["run", "spec.yaml"]);
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
    s.run_ok(&["run", "spec.yaml"]);
    assert_eq!(s.lines("out/items.jsonl").len(), ids.len());
}

fn mirror_spec(d: &Dynamo, name: &str, from: &str, to: &str, source_extra: &str) -> String {
    format!(
        "version: 1\nname: {name}\nsource:\n  type: dynamodb\n  table: {from}\n  item_format: dynamodb_json\n{source_extra}  poll_interval: 100ms\n  shard_discovery_interval: 1s\n{aws}sink:\n  type: dynamodb\n  table: {to}\n  mode: mirror\n  item_format: dynamodb_json\n{aws}offsets:\n  store: file\n  path: offsets\n  commit_interval: 100ms\npipeline:\n  flush_interval: 50ms\n  max_buffered: 500\n",
        aws = aws_yaml(&d.endpoint, "  "),
    )
}

/// Waits up to `timeout` until table `to` matches `from` (by `id`), then stops the copy with
/// SIGTERM; it must have matched and exited cleanly.
fn stop_when_copied(
    d: &Dynamo,
    child: &mut std::process::Child,
    from: &str,
    to: &str,
    timeout: Duration,
) {
    let ok = wait_for(timeout, || same(d, from, to, "id"));
    signal(child, "-TERM");
    let status = wait_exit(child, Duration::from_secs(30));
    assert!(
        ok,
        "the copy never matched: {} vs {} items",
        d.count(from),
        d.count(to)
    );
    assert!(status.success());
}

fn same(d: &Dynamo, a: &str, b: &str, key: &str) -> bool {
    d.by_key(a, key) == d.by_key(b, key)
}

#[test]
fn cdc_mirrors_inserts_updates_and_deletes_into_another_table() {
    let d = Dynamo::new();
    let from = d.create_table("e2e-cdc-from", "id", false, true);
    let to = d.create_table("e2e-cdc-to", "id", false, false);
    let s = Scratch::with(
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
    stop_when_copied(&d, &mut child, &from, &to, Duration::from_secs(60));
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
    let s = Scratch::with(
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
    stop_when_copied(&d, &mut child, &from, &to, Duration::from_secs(90));
    assert_eq!(d.count(&to), 1500);
}

/// An item with every attribute type; `generation` changes its values.
fn typed_item(id: &str, generation: u64) -> Item {
    use aws_sdk_dynamodb::primitives::Blob;
    use aws_sdk_dynamodb::types::AttributeValue as A;
    let g = generation;
    Item::from([
        ("id".to_string(), A::S(id.to_string())),
        (
            "ss".into(),
            A::Ss(vec![format!("a-{id}"), format!("b-{g}")]),
        ),
        (
            "ns".into(),
            A::Ns(vec!["1.50".into(), format!("{g}"), "-0.001".into()]),
        ),
        (
            "bs".into(),
            A::Bs(vec![
                Blob::new(vec![0, 1, 2]),
                Blob::new(vec![0xff, g as u8]),
            ]),
        ),
        (
            "bin".into(),
            A::B(Blob::new(vec![0xff, 0x00, 0xfe, g as u8])),
        ),
        ("num".into(), A::N("10.250".into())),
        (
            "big".into(),
            A::N("123456789012345678901234567890.5".into()),
        ),
        ("nul".into(), A::Null(true)),
        ("flag".into(), A::Bool(g.is_multiple_of(2))),
        (
            "map".into(),
            A::M(HashMap::from([
                ("inner_ss".to_string(), A::Ss(vec!["q".into(), "r".into()])),
                (
                    "list".to_string(),
                    A::L(vec![
                        A::S("x".into()),
                        A::N("2.0".into()),
                        A::Null(true),
                        A::Bool(false),
                    ]),
                ),
                ("bin".to_string(), A::B(Blob::new(vec![9, 8, 7]))),
            ])),
        ),
        (
            "list".into(),
            A::L(vec![A::Ns(vec!["3".into()]), A::M(HashMap::new())]),
        ),
        ("gen".into(), A::N(g.to_string())),
    ])
}

/// Sets compare as sets: their order is not part of the item.
fn normalized(items: BTreeMap<String, Item>) -> BTreeMap<String, Item> {
    use aws_sdk_dynamodb::types::AttributeValue as A;
    fn norm(v: A) -> A {
        match v {
            A::Ss(mut s) => {
                s.sort();
                A::Ss(s)
            }
            A::Ns(mut s) => {
                s.sort();
                A::Ns(s)
            }
            A::Bs(mut s) => {
                s.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
                A::Bs(s)
            }
            A::M(m) => A::M(m.into_iter().map(|(k, v)| (k, norm(v))).collect()),
            A::L(l) => A::L(l.into_iter().map(norm).collect()),
            other => other,
        }
    }
    items
        .into_iter()
        .map(|(k, it)| (k, it.into_iter().map(|(a, v)| (a, norm(v))).collect()))
        .collect()
}

#[test]
fn a_replica_keeps_every_attribute_type_through_the_snapshot_and_the_stream() {
    let d = Dynamo::new();
    let from = d.create_table("e2e-types-from", "id", false, true);
    let to = d.create_table("e2e-types-to", "id", false, false);
    for i in 0..400 {
        d.put(&from, typed_item(&format!("k{i}"), 0));
    }
    let s = Scratch::with(
        "spec.yaml",
        &mirror_spec(
            &d,
            "types",
            &from,
            &to,
            "  mode: snapshot_then_cdc\n  segments: 3\n  page_size: 25\n  rate_limit: 100\n",
        ),
    );
    let mut child = s.spawn(&["run", "spec.yaml"]);
    let differs = || {
        let (a, b) = (
            normalized(d.by_key(&from, "id")),
            normalized(d.by_key(&to, "id")),
        );
        let diff: Vec<&String> = a
            .keys()
            .chain(b.keys())
            .filter(|k| a.get(*k) != b.get(*k))
            .collect();
        (
            diff.len(),
            diff.first()
                .map(|k| (a.get(*k).cloned(), b.get(*k).cloned())),
        )
    };
    // Churn while the (rate-limited) scan runs: updates, new items, deletes.
    assert!(
        wait_for(Duration::from_secs(30), || d.count(&to) > 25),
        "the scan did not start"
    );
    for i in 0..40 {
        d.put(&from, typed_item(&format!("k{}", i * 7), 1));
        d.put(&from, typed_item(&format!("new{i}"), 2));
        d.delete(
            &from,
            Item::from([("id".to_string(), s_(&format!("k{}", 399 - i)))]),
        );
    }
    let ok = wait_for(Duration::from_secs(120), || differs().0 == 0);
    assert!(ok, "the copy differs after the snapshot: {:?}", differs());
    // And through the stream alone.
    for i in 0..30 {
        d.put(&from, typed_item(&format!("k{}", i * 3), 3));
        d.delete(
            &from,
            Item::from([("id".to_string(), s_(&format!("new{i}")))]),
        );
        d.put(&from, typed_item(&format!("late{i}"), 4));
    }
    let ok = wait_for(Duration::from_secs(60), || differs().0 == 0);
    signal(&child, "-TERM");
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(ok, "the copy differs after stream changes: {:?}", differs());
    assert!(status.success());
    let copy = d.by_key(&to, "id");
    assert_eq!(copy.len(), 400 + 40 - 40 - 30 + 30);
    assert!(matches!(
        copy["k0"]["ss"],
        aws_sdk_dynamodb::types::AttributeValue::Ss(_)
    ));
    assert!(matches!(
        copy["k21"]["bs"],
        aws_sdk_dynamodb::types::AttributeValue::Bs(_)
    ));
}

#[test]
fn validate_refuses_a_table_to_table_copy_through_plain_json() {
    let d = Dynamo::new();
    let s = Scratch::new();
    let spec = mirror_spec(&d, "plain", "from-table", "to-table", "  mode: cdc\n");
    s.write(
        "default.yaml",
        &spec.replace("  item_format: dynamodb_json\n", ""),
    );
    let out = s.run_err(&["validate", "default.yaml"]);
    let err = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        err.contains("item_format") && err.contains("dynamodb_json") && err.contains("sets"),
        "{err}"
    );
    // Mixed formats are refused too; dynamodb_json at both ends, or json said at both, pass.
    s.write(
        "mixed.yaml",
        &spec.replacen("  item_format: dynamodb_json\n", "", 1),
    );
    s.run_err(&["validate", "mixed.yaml"]);
    s.write("typed.yaml", &spec);
    s.run_ok(&["validate", "typed.yaml"]);
    s.write(
        "json.yaml",
        &spec.replace("item_format: dynamodb_json", "item_format: json"),
    );
    s.run_ok(&["validate", "json.yaml"]);
}

#[test]
fn kinesis_to_dynamodb_stores_shard_and_sequence_and_a_replay_never_goes_back() {
    let k = kinesis::Kinesis::new();
    let d = Dynamo::new();
    let stream = k.stream_with_seqs(2, 0..600, 13);
    let table = d.create_table("e2e-kin", "key", false, false);
    let s = Scratch::new();
    let spec = |name: &str| {
        format!(
            "version: 1\nname: {name}\nsource:\n  type: kinesis\n  stream: {stream}\n  start_position: trim_horizon\n  shard_discovery_interval: 500ms\n{kaws}sink:\n  type: dynamodb\n  table: {table}\n  include_metadata:\n    shard-id: kinesis_shard_id\n    sequence-number: shard_sequence_number\n  only_newer_by: sequence-number\n{daws}offsets:\n  store: file\n  path: offsets\n  commit_interval: 100ms\npipeline:\n  flush_interval: 50ms\n  max_buffered: 500\n",
            kaws = kinesis::aws_yaml(&k.endpoint, "  "),
            daws = aws_yaml(&d.endpoint, "  "),
        )
    };
    s.write("spec.yaml", &spec("kin-ddb"));
    s.run_ok(&["run", "--max-records", "600", "spec.yaml"]);
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
    s.run_ok(&["run", "--max-records", "600", "replay.yaml"]);
    assert_eq!(check(), first);
    k.delete(&stream);
}

#[test]
fn only_newer_by_sequence_number_keeps_the_last_update_inside_one_kpl_aggregate() {
    let k = kinesis::Kinesis::new();
    let d = Dynamo::new();
    let stream = k.create_stream(1);
    // KPL-aggregated Kinesis records, each holding many updates of the same few items.
    let s = Scratch::new();
    let lines: String = (0..400u64)
        .map(|i| format!("{{\"seq\":{i},\"key\":\"k{}\"}}\n", i % 5))
        .collect();
    s.write("in.jsonl", &lines);
    s.write(
        "produce.yaml",
        &format!(
            "version: 1\nname: agg-produce\nsource:\n  type: file\n  paths: [in.jsonl]\nformat:\n  decode: json\n  encode: json\npartitioner:\n  fields: [key]\nsink:\n  type: kinesis\n  stream: {stream}\n  aggregate: true\n  aggregation_max_size: 2KiB\n{kaws}offsets:\n  store: file\n  path: offsets\n",
            kaws = kinesis::aws_yaml(&k.endpoint, "  "),
        ),
    );
    s.run_ok(&["run", "produce.yaml"]);
    let raw = k.read_all(&stream);
    assert!(raw.len() < 100, "{} Kinesis records for 400", raw.len());
    // Without and with the sub-sequence number stored.
    for (name, extra) in [
        ("agg-ddb", ""),
        (
            "agg-ddb-sub",
            "    sub-sequence-number: kinesis_sub_sequence\n",
        ),
    ] {
        let table = d.create_table("e2e-agg", "key", false, false);
        let spec = format!(
            "version: 1\nname: {name}\nsource:\n  type: kinesis\n  stream: {stream}\n  start_position: trim_horizon\n{kaws}sink:\n  type: dynamodb\n  table: {table}\n  include_metadata:\n    sequence-number: shard_sequence_number\n{extra}  only_newer_by: sequence-number\n{daws}offsets:\n  store: file\n  path: offsets\n  commit_interval: 100ms\npipeline:\n  flush_interval: 50ms\n",
            kaws = kinesis::aws_yaml(&k.endpoint, "  "),
            daws = aws_yaml(&d.endpoint, "  "),
        );
        s.write(&format!("{name}.yaml"), &spec);
        s.run_ok(&["run", "--max-records", "400", &format!("{name}.yaml")]);
        let check = || {
            let items = d.by_key(&table, "key");
            assert_eq!(items.len(), 5, "{name}");
            for (key, it) in &items {
                let k: u64 = key[1..].parse().expect("key");
                let want = (0..400u64).filter(|i| i % 5 == k).max().expect("max");
                assert_eq!(it["seq"], n(want), "{name}: the last update of {key} wins");
            }
        };
        check();
        // A replay from the start (a pipeline with no offsets) ends with the same items.
        s.write(
            &format!("{name}-replay.yaml"),
            &spec.replace(
                &format!("name: {name}\n"),
                &format!("name: {name}-replay\n"),
            ),
        );
        s.run_ok(&[
            "run",
            "--max-records",
            "400",
            &format!("{name}-replay.yaml"),
        ]);
        check();
    }
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
    let err = stderr(&s.run_ok(&["run", "spec.yaml"]));
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
    let err = stderr(&s2.run_err(&["run", "spec.yaml"]));
    assert!(err.contains("invalid JSON"), "{err}");
}
