//! `sluice offsets import --from-kcl-table`: a lease table in the KCL's schema (built here with
//! the DynamoDB client, attribute names as the KCL's `DynamoDBLeaseSerializer` writes them) on
//! moto, a stream on kinesis-local; after the import a run resumes exactly after the KCL's
//! checkpoints.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is the test failing

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::Shard;
use bytes::Bytes;
use sluice_connectors::kinesis::aggregation::{Aggregate, UserRecord};
use sluice_test_kit::dynamodb::{Dynamo, Item, n, s};
use sluice_test_kit::kinesis::{Kinesis, committed, envelope, source_spec};
use sluice_test_kit::*;

fn json(seq: u64) -> Vec<u8> {
    format!(r#"{{"seq":{seq},"key":"k"}}"#).into_bytes()
}

/// Writes one record to `shard` (by its starting hash key); returns its sequence number.
fn put_to(k: &Kinesis, stream: &str, shard: &Shard, data: Vec<u8>) -> String {
    let hash = shard.hash_key_range().expect("range").starting_hash_key();
    k.rt.block_on(
        k.client
            .put_record()
            .stream_name(stream)
            .partition_key("k")
            .explicit_hash_key(hash)
            .data(Blob::new(data))
            .send(),
    )
    .expect("PutRecord")
    .sequence_number()
    .to_string()
}

/// A lease item as the KCL writes it.
fn lease(key: &str, checkpoint: &str, sub: u64, parents: &[&str]) -> Item {
    let mut i = Item::from([
        ("leaseKey".to_string(), s(key)),
        ("leaseOwner".to_string(), s("kcl-worker-1")),
        ("leaseCounter".to_string(), n(42)),
        ("checkpoint".to_string(), s(checkpoint)),
        ("checkpointSubSequenceNumber".to_string(), n(sub)),
        ("ownerSwitchesSinceCheckpoint".to_string(), n(0)),
    ]);
    if !parents.is_empty() {
        i.insert(
            "parentShardId".into(),
            AttributeValue::Ss(parents.iter().map(|p| p.to_string()).collect()),
        );
    }
    i
}

/// `sluice offsets import` of `table` on a DynamoDB `endpoint` into `spec`'s store.
fn import_args<'a>(table: &'a str, endpoint: &'a str, spec: &'a str) -> [&'a str; 7] {
    [
        "offsets",
        "import",
        "--from-kcl-table",
        table,
        "--endpoint",
        endpoint,
        spec,
    ]
}

fn ok(s: &Scratch, args: &[&str]) -> (String, String) {
    let out = s.run_ok(args);
    (stdout(&out), stderr(&out))
}

fn refused(s: &Scratch, args: &[&str], says: &str) {
    let err = stderr(&s.run_err(args));
    assert!(
        err.contains(says),
        "sluice {args:?}: expected {says:?} in:\n{err}"
    );
}

/// Runs `spec.yaml` of `w` for `expected.len()` records: exactly `expected` arrive, none twice.
fn resumes_exactly(w: &Scratch, expected: &BTreeSet<u64>) {
    let max = expected.len().to_string();
    let mut run = Running(w.spawn(&["run", "--max-records", &max, "spec.yaml"]));
    // Complete lines only: the file may be being written.
    let read = || -> Vec<u64> {
        let text = w.read("out/data.jsonl");
        text[..text.rfind('\n').map_or(0, |i| i + 1)]
            .lines()
            .map(|l| envelope(l).0)
            .collect()
    };
    // A short read is reported by the comparison below, with what is missing.
    let _all_there = wait_for(Duration::from_secs(30), || read().len() >= expected.len());
    let got = read();
    assert_eq!(
        &got.iter().copied().collect::<BTreeSet<_>>(),
        expected,
        "none re-read, none skipped"
    );
    let status = wait_exit(&mut run, Duration::from_secs(10));
    assert!(status.success(), "the run failed: {status}");
    let got = read();
    assert_eq!(got.len(), expected.len(), "no record twice: {got:?}");
}

#[test]
fn kcl_checkpoints_are_imported_and_a_run_resumes_right_after_them() {
    let k = Kinesis::new();
    let d = Dynamo::new();
    let stream = k.create_stream(2);
    let shards = k.open_shards(&stream);
    let (parent, agg_shard) = (&shards[0], &shards[1]);

    // The parent: records 0..10, then split.
    for i in 0..10 {
        put_to(&k, &stream, parent, json(i));
    }
    // The other shard: 30..35 plain, 35..40 in one KPL aggregate, 40..45 plain.
    for i in 30..35 {
        put_to(&k, &stream, agg_shard, json(i));
    }
    let mut agg = Aggregate::default();
    for i in 35..40 {
        agg.add(UserRecord {
            partition_key: "k".into(),
            explicit_hash_key: None,
            data: Bytes::from(json(i)),
        });
    }
    let agg_seq = put_to(&k, &stream, agg_shard, agg.finish().to_vec());
    for i in 40..45 {
        put_to(&k, &stream, agg_shard, json(i));
    }
    k.split(&stream, parent);
    let mut children: Vec<Shard> = k
        .open_shards(&stream)
        .into_iter()
        .filter(|s| s.parent_shard_id() == Some(parent.shard_id()))
        .collect();
    children.sort_by_key(|s| {
        s.hash_key_range()
            .expect("range")
            .starting_hash_key()
            .parse::<u128>()
            .expect("hash")
    });
    assert_eq!(children.len(), 2, "the split made two children");
    let (c1, c2) = (&children[0], &children[1]);
    let mut c1_seqs = Vec::new();
    for i in 10..20 {
        c1_seqs.push(put_to(&k, &stream, c1, json(i)));
    }
    for i in 20..30 {
        put_to(&k, &stream, c2, json(i));
    }

    // The KCL had finished the parent, processed c1 up to record 14 and the aggregate up to its
    // sub-record 2 (record 37), and not started c2.
    let table = d.create_table("kcl-app", "leaseKey", false, false);
    let (p, a, s1, s2) = (
        parent.shard_id(),
        agg_shard.shard_id(),
        c1.shard_id(),
        c2.shard_id(),
    );
    let mut end = lease(p, "SHARD_END", 0, &[]);
    end.insert(
        "childShardIds".into(),
        AttributeValue::Ss(vec![s1.into(), s2.into()]),
    );
    for item in [
        end,
        lease(a, &agg_seq, 2, &[]),
        lease(s1, &c1_seqs[4], 0, &[p]),
        lease(s2, "TRIM_HORIZON", 0, &[p]),
    ] {
        d.put(&table, item);
    }

    let offsets_table = unique_name("sluice-offsets");
    let spec = |name: &str, reader: &str| {
        format!(
            "version: 1\nname: {name}\nsource:\n  type: kinesis\n  stream: {stream}\n  start_position: trim_horizon\n  shard_discovery_interval: 500ms\n{reader}{kaws}sink:\n  type: file\n  path: out/data.jsonl\n  envelope: true\noffsets:\n  store: dynamodb\n  table: {offsets_table}\n  create_table: true\n  commit_interval: 100ms\n{daws}pipeline:\n  flush_interval: 50ms\n",
            kaws = aws_yaml(&k.endpoint, "  "),
            daws = aws_yaml(&d.endpoint, "  "),
        )
    };
    let w = Scratch::new();
    w.write("spec.yaml", &spec("kcl-app", ""));
    let import = ["offsets", "import", "--from-kcl-table", &table, "spec.yaml"];

    // --dry-run says what it would write, and writes nothing.
    let mut dry = import.to_vec();
    dry.push("--dry-run");
    let (plan, err) = ok(&w, &dry);
    assert!(err.contains("dry run: 3 offset(s)"), "{err}");
    assert!(plan.contains(&format!("offset {agg_seq}:2")), "{plan}");
    assert!(
        plan.contains("TRIM_HORIZON") && plan.contains("finished"),
        "{plan}"
    );
    let (listed, _) = ok(&w, &["offsets", "list", "--json", "spec.yaml"]);
    assert_eq!(listed.trim(), "", "the dry run wrote nothing");

    let (_, err) = ok(&w, &import);
    assert!(
        err.contains(&format!("1 shard(s) left to the start position ({s2})")),
        "{err}"
    );
    let (listed, _) = ok(&w, &["offsets", "list", "--json", "spec.yaml"]);
    let rows: Vec<serde_json::Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).expect("row"))
        .collect();
    let row = |shard: &str| {
        rows.iter()
            .find(|r| r["partition"] == shard)
            .unwrap_or_else(|| panic!("no row of {shard}: {listed}"))
    };
    assert_eq!(rows.len(), 3, "{listed}");
    assert_eq!(row(p)["finished"], true);
    assert_eq!(row(a)["offset"], format!("{agg_seq}:2"));
    assert_eq!(row(s1)["offset"], format!("{}:0", c1_seqs[4]));
    // A second import would replace what the store holds.
    refused(&w, &import, "already holds 3 offset(s)");

    // The run reads exactly what the KCL had not processed: nothing of the parent, c1 after
    // record 14, all of c2, the aggregate after its sub-record 2.
    let expected: BTreeSet<u64> = (15..30).chain(38..45).collect();
    resumes_exactly(&w, &expected);

    // The same through enhanced fan-out (AT_SEQUENCE_NUMBER subscriptions).
    let e = Scratch::new();
    e.write(
        "spec.yaml",
        &spec(
            "kcl-app-efo",
            "  reader: efo\n  consumer_name: kcl-import\n",
        ),
    );
    ok(&e, &import);
    resumes_exactly(&e, &expected);
    k.delete(&stream);
}

#[test]
fn kcl_import_filters_multi_stream_leases_into_a_file_store_and_refuses_what_it_cannot_import() {
    let d = Dynamo::new();
    let k = Kinesis::new();
    let k_endpoint = k.endpoint.clone();
    let stream = k.create_stream(3);
    let shards = k.open_shards(&stream);
    let seq = put_to(&k, &stream, &shards[0], json(1));
    let table = d.create_table("kcl-multi", "leaseKey", false, false);
    for item in [
        lease(
            &format!("123456789012:{stream}:1700000000:shardId-000000000000"),
            &seq,
            0,
            &[],
        ),
        lease(
            &format!("123456789012:{stream}:1700000000:shardId-000000000001"),
            "SHARD_END",
            0,
            &[],
        ),
        lease(
            &format!("123456789012:{stream}:1700000000:shardId-000000000002"),
            "TRIM_HORIZON",
            0,
            &[],
        ),
        lease(
            "123456789012:payments:1700000001:shardId-000000000000",
            "49590338271490256608559692538361571095921575989136588999",
            0,
            &[],
        ),
    ] {
        d.put(&table, item);
    }
    let w = Scratch::new();
    // The default start position, `latest`, would skip what the KCL reads from TRIM_HORIZON.
    let extra = format!("  stream: {stream}\n");
    w.write("spec.yaml", &source_spec("multi", &k_endpoint, &extra));
    let import = import_args(&table, &d.endpoint, "spec.yaml");
    let mut dry = import.to_vec();
    dry.push("--dry-run");
    let (plan, err) = ok(&w, &dry);
    assert!(plan.contains(&format!("offset {seq}:0")), "{plan}");
    assert!(
        err.contains("skipped 1 lease(s) of stream payments"),
        "{err}"
    );
    assert!(
        committed(w.dir.path(), "multi").is_empty(),
        "the dry run wrote nothing"
    );

    ok(&w, &import);
    assert_eq!(
        committed(w.dir.path(), "multi"),
        [
            (
                "shardId-000000000000".to_string(),
                format!("{seq}:0"),
                false
            ),
            (
                "shardId-000000000001".to_string(),
                "SHARD_END".to_string(),
                true
            ),
        ]
    );
    refused(&w, &import, "pass --force");
    // --force makes the store say what the table says: a row of a shard the KCL has no position
    // for is forgotten.
    ok(
        &w,
        &[
            "offsets",
            "reset",
            "spec.yaml",
            "--partition",
            "shardId-000000000002",
            "--to",
            "7",
        ],
    );
    let mut force = import.to_vec();
    force.push("--force");
    ok(&w, &force);
    let shards: Vec<String> = committed(w.dir.path(), "multi")
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(shards, ["shardId-000000000000", "shardId-000000000001"]);

    // Leases of another stream only.
    let other = w.write(
        "other.yaml",
        &source_spec("other", &k_endpoint, "  stream: nobody\n"),
    );
    let other = other.to_str().expect("path");
    refused(
        &w,
        &import_args(&table, &d.endpoint, other),
        &format!(
            "holds no lease of stream nobody (only of payments (account 123456789012), {stream} (account 123456789012))"
        ),
    );
    // A single-stream table of another stream: its checkpoints lie before this stream's shards.
    let foreign = d.create_table("kcl-foreign", "leaseKey", false, false);
    d.put(&foreign, lease("shardId-000000000000", "1234", 0, &[]));
    refused(
        &w,
        &import_args(&foreign, &d.endpoint, "spec.yaml"),
        &format!(
            "KCL table {foreign} does not belong to stream {stream}: the checkpoint of shard shardId-000000000000 (1234) is before the shard's first sequence number"
        ),
    );
    // A table that is not a KCL lease table.
    let plain = d.create_table("not-kcl", "id", true, false);
    refused(
        &w,
        &import_args(&plain, &d.endpoint, "spec.yaml"),
        &format!("table {plain} is not a KCL lease table: its key is `id`"),
    );
    // Without --endpoint, a file store's import reaches DynamoDB at AWS's endpoint or
    // AWS_ENDPOINT_URL_DYNAMODB, never at the source's (Kinesis) endpoint.
    let out = w
        .cmd(&[
            "offsets",
            "import",
            "--from-kcl-table",
            &table,
            "spec.yaml",
            "--dry-run",
            "--force",
        ])
        .env("AWS_ENDPOINT_URL_DYNAMODB", &d.endpoint)
        .output()
        .expect("run sluice");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&format!("offset {seq}:0")));
    // A table that does not exist.
    refused(
        &w,
        &import_args("no-such-kcl-table", &d.endpoint, "spec.yaml"),
        "KCL table no-such-kcl-table: DescribeTable failed: ResourceNotFoundException",
    );
    // A spec whose source is not Kinesis, and one whose store forgets.
    w.write("in.jsonl", "{}\n");
    w.write(
        "file.yaml",
        "version: 1\nname: f\nsource:\n  type: file\n  paths: [in.jsonl]\nsink:\n  type: stdout\n",
    );
    refused(
        &w,
        &["offsets", "import", "--from-kcl-table", &table, "file.yaml"],
        "the source of pipeline `f` is `file`, not `kinesis`",
    );
    w.write(
        "memory.yaml",
        &format!(
            "version: 1\nname: m\nsource:\n  type: kinesis\n  stream: {stream}\n{}sink:\n  type: stdout\noffsets:\n  store: memory\n",
            aws_yaml(&k_endpoint, "  ")
        ),
    );
    refused(
        &w,
        &[
            "offsets",
            "import",
            "--from-kcl-table",
            &table,
            "memory.yaml",
        ],
        "keeps its offsets in memory",
    );
    k.delete(&stream);
}
