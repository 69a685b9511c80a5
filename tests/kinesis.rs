//! End-to-end tests of the Kinesis source and sink through the `sluice` binary, against the
//! kinesis-local emulator that `scripts/test.sh` starts (`SLUICE_TEST_KINESIS_ENDPOINT`). Each
//! test makes its own randomly named stream.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is the test failing

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use sluice_test_kit::kinesis::*;
use sluice_test_kit::*;

/// Output lines parsed as (seq, key, shard, offset). Only complete lines: the file may be
/// being written.
fn parsed(s: &Scratch) -> Vec<(u64, String, String, String)> {
    let text = s.read("out/data.jsonl");
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete.lines().map(envelope).collect()
}

fn unique_seqs(s: &Scratch) -> BTreeSet<u64> {
    parsed(s).into_iter().map(|r| r.0).collect()
}

/// A scratch folder whose `spec.yaml` (pipeline `name`) reads `stream` from its start
/// (`trim_horizon`), with the source keys `more`.
fn from_start(k: &Kinesis, name: &str, stream: &str, more: &str) -> Scratch {
    let s = Scratch::new();
    let extra = format!("  stream: {stream}\n  start_position: trim_horizon\n{more}");
    s.write("spec.yaml", &source_spec(name, &k.endpoint, &extra));
    s
}

/// The rows `s` read: the seqs `0..n`, each exactly once, each key's in order.
fn all_once_in_key_order(s: &Scratch, n: u64, why: &str) -> Vec<(u64, String, String, String)> {
    let rows = parsed(s);
    assert_eq!(rows.len(), n as usize, "{why}");
    assert_eq!(unique_seqs(s), (0..n).collect());
    assert_key_order(&rows);
    rows
}

/// Per partition key, seqs arrive in increasing order (ignoring re-deliveries of a restart).
fn assert_key_order(rows: &[(u64, String, String, String)]) {
    let mut last: HashMap<&str, u64> = HashMap::new();
    for (seq, key, _, _) in rows {
        if let Some(prev) = last.get(key.as_str()) {
            assert!(seq > prev, "key {key}: seq {seq} after {prev}");
        }
        last.insert(key, *seq);
    }
}

#[test]
fn trim_horizon_reads_every_shard_with_metadata_and_per_key_order() {
    let k = Kinesis::new();
    let stream = k.stream_with_seqs(3, 0..1500, 17);
    let s = from_start(&k, "th", &stream, "");
    // With the Kinesis connector's debug log (the fast reader's at trace): every GetRecords
    // answer of kinesis-local is read by the fast reader (responses.rs), none left to the SDK's
    // (that happens only for a closed shard's last answer, and this stream is not resharded).
    let log =
        "--log=warn,sluice_connectors::kinesis=debug,sluice_connectors::kinesis::responses=trace";
    let err = stderr(&s.run_ok(&[log, "run", "--max-records", "1500", "spec.yaml"]));
    assert!(err.contains("1500 committed"), "{err}");
    assert!(err.contains("GetRecords"), "the debug log is on: {err}");
    assert!(
        err.contains("read by the fast reader"),
        "the fast reader is installed: {err}"
    );
    assert!(!err.contains("read by the SDK's reader"), "{err}");
    let rows = all_once_in_key_order(&s, 1500, "every record");
    // Each key lives in one shard, and every shard was read.
    let mut shard_of: HashMap<String, String> = HashMap::new();
    for (_, key, shard, _) in &rows {
        let s0 = shard_of.entry(key.clone()).or_insert_with(|| shard.clone());
        assert_eq!(s0, shard, "key {key} in two shards");
    }
    let shards: BTreeSet<&String> = rows.iter().map(|r| &r.2).collect();
    assert_eq!(shards.len(), 3, "{shards:?}");
    // Metadata of a record.
    let first: serde_json::Value =
        serde_json::from_str(&s.lines("out/data.jsonl")[0]).expect("json");
    let m = &first["metadata"];
    assert_eq!(m["stream"], stream.as_str());
    for f in [
        "shard-id",
        "sequence-number",
        "arrival-timestamp",
        "partition-key",
    ] {
        assert!(m[f].is_string(), "metadata {f} missing: {m}");
    }
    assert_eq!(m["offset"], m["sequence-number"]);
    k.delete(&stream);
}

#[test]
fn restart_resumes_after_the_committed_sequence_numbers() {
    let k = Kinesis::new();
    let stream = k.stream_with_seqs(2, 0..1000, 5);
    let s = from_start(&k, "restart", &stream, "  max_records: 100\n");
    s.run_ok(&["run", "--max-records", "350", "spec.yaml"]);
    assert_eq!(s.lines("out/data.jsonl").len(), 350);
    let offs = committed(s.dir.path(), "restart");
    assert!(!offs.is_empty(), "nothing committed");
    s.run_ok(&["run", "--max-records", "650", "spec.yaml"]);
    all_once_in_key_order(&s, 1000, "no record twice, none lost");
    k.delete(&stream);
}

#[test]
fn latest_starts_at_new_records_and_at_timestamp_at_the_time() {
    let k = Kinesis::new();
    let stream = k.stream_with_seqs(2, 0..100, 4);
    // at_timestamp: just after the last old record arrived.
    let old = k.read_all(&stream);
    assert_eq!(old.len(), 100);
    let arrivals = {
        let s = Scratch::new();
        let extra = format!("  stream: {stream}\n  start_position: trim_horizon\n");
        s.write("spec.yaml", &source_spec("ts-probe", &k.endpoint, &extra));
        s.run_ok(&["run", "--max-records", "100", "spec.yaml"]);
        s.lines("out/data.jsonl")
            .iter()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).expect("json")["timestamp"]
                    .as_i64()
                    .expect("ts")
            })
            .max()
            .expect("arrivals")
    };
    // kinesis-local matches AT_TIMESTAMP only to the second, so start one second (and a
    // millisecond) after the last old record, and write new records only after that time.
    let at_ms = arrivals + 1001;
    assert!(wait_for(Duration::from_secs(5), || {
        chrono::Utc::now().timestamp_millis() > at_ms + 10
    }));
    let at = at_ms as f64 / 1000.0;

    // latest: start the pipeline, keep writing "probe" records until it reads one, then write
    // the records that must all arrive.
    let s = Scratch::new();
    let extra = format!("  stream: {stream}\n");
    s.write("spec.yaml", &source_spec("latest", &k.endpoint, &extra));
    let mut child = Running(s.spawn(&["run", "spec.yaml"]));
    let mut probe = 10_000;
    assert!(
        wait_for(Duration::from_secs(30), || {
            k.put_seqs(&stream, probe..probe + 1, 4);
            probe += 1;
            std::thread::sleep(Duration::from_millis(100));
            !s.lines("out/data.jsonl").is_empty()
        }),
        "latest never delivered a new record"
    );
    k.put_seqs(&stream, 100..300, 4);
    assert!(
        wait_for(Duration::from_secs(30), || unique_seqs(&s)
            .range(100..300)
            .count()
            == 200),
        "not every new record arrived: {}",
        unique_seqs(&s).range(100..300).count()
    );
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(20)).success());
    assert!(
        unique_seqs(&s).range(0..100).next().is_none(),
        "latest read old records"
    );

    // at_timestamp, given as epoch seconds: the 200 + probes written after `at`, none before.
    let s2 = Scratch::new();
    let extra =
        format!("  stream: {stream}\n  start_position: at_timestamp\n  timestamp: '{at:.3}'\n");
    s2.write("spec.yaml", &source_spec("at-ts", &k.endpoint, &extra));
    let total = 200 + (probe - 10_000) as usize;
    s2.run_ok(&["run", "--max-records", &total.to_string(), "spec.yaml"]);
    let got = unique_seqs(&s2);
    assert!(
        got.range(0..100).next().is_none(),
        "at_timestamp read records before the time"
    );
    assert_eq!(got.range(100..300).count(), 200);
    k.delete(&stream);
}

#[test]
fn split_and_merge_mid_run_deliver_everything_parents_before_children() {
    reshard_mid_run("");
}

#[test]
fn efo_split_and_merge_mid_run_deliver_everything_parents_before_children() {
    reshard_mid_run("  reader: efo\n  consumer_name: reshard\n");
}

fn reshard_mid_run(reader: &str) {
    let k = Kinesis::new();
    let stream = k.create_stream(2);
    let s = from_start(&k, "reshard", &stream, reader);
    let mut child = Running(s.spawn(&["run", "spec.yaml"]));
    let keys = 23;

    k.put_seqs(&stream, 0..300, keys);
    assert!(
        wait_for(Duration::from_secs(30), || unique_seqs(&s).len() >= 300),
        "first 300"
    );
    // Split the first shard, then write more (some go to the children).
    let first = k.open_shards(&stream)[0].clone();
    k.split(&stream, &first);
    k.put_seqs(&stream, 300..600, keys);
    // Merge two adjacent open shards (the two children of the split), then write more.
    let mut open = k.open_shards(&stream);
    open.sort_by_key(|s| {
        s.hash_key_range()
            .map(|r| r.starting_hash_key().parse::<u128>().expect("hash"))
    });
    k.merge(&stream, open[0].shard_id(), open[1].shard_id());
    k.put_seqs(&stream, 600..900, keys);
    let ok = wait_for(Duration::from_secs(60), || unique_seqs(&s).len() >= 900);
    signal(&child, "-TERM");
    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert!(ok, "only {} of 900 records arrived", unique_seqs(&s).len());
    assert!(status.success());
    let rows = parsed(&s);
    assert_eq!(unique_seqs(&s), (0..900).collect());
    assert_key_order(&rows);

    // Parents before children: every record of a child comes after every record of its parents.
    let shards = k.shards(&stream);
    assert_eq!(shards.len(), 5, "2 original + 2 split children + 1 merged");
    let pos: BTreeMap<&str, (usize, usize)> = {
        let mut m: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for (i, r) in rows.iter().enumerate() {
            let e = m.entry(r.2.as_str()).or_insert((i, i));
            e.1 = i;
        }
        m
    };
    for sh in &shards {
        let Some((child_first, _)) = pos.get(sh.shard_id()) else {
            continue;
        };
        for p in sh
            .parent_shard_id()
            .into_iter()
            .chain(sh.adjacent_parent_shard_id())
        {
            if let Some((_, parent_last)) = pos.get(p) {
                assert!(
                    parent_last < child_first,
                    "shard {} read before its parent {p} ended",
                    sh.shard_id()
                );
            }
        }
    }
    // Closed shards are recorded as finished.
    let offs = committed(s.dir.path(), "reshard");
    let finished: BTreeSet<&str> = offs.iter().filter(|o| o.2).map(|o| o.0.as_str()).collect();
    let closed: BTreeSet<&str> = shards
        .iter()
        .filter(|s| {
            s.sequence_number_range()
                .is_some_and(|r| r.ending_sequence_number().is_some())
        })
        .map(|s| s.shard_id())
        .collect();
    assert_eq!(finished, closed, "offsets: {offs:?}");
    k.delete(&stream);
}

fn sink_spec(
    name: &str,
    endpoint: &str,
    stream: &str,
    sink_extra: &str,
    tolerance: &str,
) -> String {
    format!(
        "version: 1\nname: {name}\nsource:\n  type: file\n  paths: [in.jsonl]\nformat:\n  decode: json\n  encode: json\npartitioner:\n  fields: [key]\nsink:\n  type: kinesis\n  stream: {stream}\n{sink_extra}{aws}errors:\n  tolerance: {tolerance}\n  dead_letter:\n    type: file\n    path: dead.jsonl\noffsets:\n  store: file\n  path: offsets\npipeline:\n  flush_interval: 100ms\n",
        aws = aws_yaml(endpoint, "  "),
    )
}

/// Runs a pipeline `name` from a file of `records.0` records over `records.1` keys into a new
/// stream of `shards` shards through a Kinesis sink (`sink_extra` under `sink:`, tolerance
/// none); returns the stream and what it holds.
fn sink_run(
    k: &Kinesis,
    name: &str,
    shards: i32,
    records: (u64, u64),
    sink_extra: &str,
) -> (String, Vec<Got>) {
    let stream = k.create_stream(shards);
    let s = Scratch::new();
    let (n, keys) = records;
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!("{{\"seq\":{i},\"key\":\"k{}\"}}\n", i % keys));
    }
    s.write("in.jsonl", &text);
    s.write(
        "spec.yaml",
        &sink_spec(name, &k.endpoint, &stream, sink_extra, "none"),
    );
    s.run_ok(&["run", "spec.yaml"]);
    let got = k.read_all(&stream);
    (stream, got)
}

#[test]
fn sink_writes_every_record_by_key_and_dead_letters_oversized_ones() {
    let k = Kinesis::new();
    let stream = k.create_stream(3);
    let s = Scratch::new();
    let mut text = String::new();
    for i in 0..1500u64 {
        text.push_str(&format!("{{\"seq\":{i},\"key\":\"k{}\"}}\n", i % 11));
        if i == 300 {
            // A partition key over 256 characters is that record's error.
            let key = "k".repeat(300);
            text.push_str(&format!("{{\"seq\":99998,\"key\":\"{key}\"}}\n"));
        }
        if i == 700 {
            let big = "x".repeat(1024 * 1024 + 10);
            text.push_str(&format!(
                "{{\"seq\":99999,\"key\":\"big\",\"pad\":\"{big}\"}}\n"
            ));
        }
    }
    s.write("in.jsonl", &text);
    s.write(
        "spec.yaml",
        &sink_spec("sink", &k.endpoint, &stream, "  max_in_flight: 4\n", "all"),
    );
    // Every PutRecords answer is read by the fast reader (responses.rs), none by the SDK's.
    let log = "--log=warn,sluice_connectors::kinesis::responses=trace";
    let err = stderr(&s.run_ok(&[log, "run", "spec.yaml"]));
    assert!(err.contains("2 dead-lettered"), "{err}");
    assert!(err.contains("read by the fast reader"), "{err}");
    assert!(!err.contains("read by the SDK's reader"), "{err}");
    let dead = s.read("dead.jsonl");
    assert!(
        dead.contains("partition key of 300 characters exceeds Kinesis's 256"),
        "{}",
        &dead[..dead.len().min(500)]
    );
    assert!(
        dead.contains("exceeds Kinesis's 1 MiB limit") && dead.contains(&stream),
        "{}",
        &dead[..dead.len().min(500)]
    );
    let got = k.read_all(&stream);
    assert_eq!(got.len(), 1500);
    let mut shard_of: HashMap<String, String> = HashMap::new();
    let mut seqs = BTreeSet::new();
    for g in &got {
        let v: serde_json::Value = serde_json::from_slice(&g.data).expect("json");
        assert_eq!(
            v["key"].as_str(),
            Some(g.key.as_str()),
            "partition key = the key field"
        );
        seqs.insert(v["seq"].as_u64().expect("seq"));
        let s0 = shard_of
            .entry(g.key.clone())
            .or_insert_with(|| g.shard.clone());
        assert_eq!(s0, &g.shard);
    }
    assert_eq!(seqs, (0..1500).collect());
    // With tolerance none the oversized record stops the pipeline, naming the problem.
    let s2 = Scratch::new();
    s2.write(
        "in.jsonl",
        &format!(
            "{{\"seq\":1,\"key\":\"big\",\"pad\":\"{}\"}}\n",
            "y".repeat(1024 * 1024 + 10)
        ),
    );
    s2.write(
        "spec.yaml",
        &sink_spec("sink-none", &k.endpoint, &stream, "", "none"),
    );
    let err = stderr(&s2.run_err(&["run", "spec.yaml"]));
    assert!(err.contains("exceeds Kinesis's 1 MiB limit"), "{err}");
    k.delete(&stream);
}

#[test]
fn sink_keeps_per_key_order_with_many_calls_in_flight() {
    let k = Kinesis::new();
    // One record per call and 50 calls at once: without one call per shard at a time, calls
    // carrying the same key race each other to the service.
    let (stream, got) = sink_run(
        &k,
        "order",
        3,
        (800, 4),
        "  max_batch_records: 1\n  max_in_flight: 50\n",
    );
    assert_eq!(got.len(), 800);
    let mut shards: BTreeSet<&str> = BTreeSet::new();
    let mut last: HashMap<String, u64> = HashMap::new();
    for g in &got {
        let v: serde_json::Value = serde_json::from_slice(&g.data).expect("json");
        let seq = v["seq"].as_u64().expect("seq");
        if let Some(prev) = last.insert(g.key.clone(), seq) {
            assert!(seq > prev, "key {}: seq {seq} stored after {prev}", g.key);
        }
        shards.insert(g.shard.as_str());
    }
    assert!(shards.len() > 1, "the keys spread over shards: {shards:?}");
    k.delete(&stream);
}

#[test]
fn aggregated_records_round_trip_and_resume_inside_an_aggregate() {
    let k = Kinesis::new();
    let (stream, raw) = sink_run(
        &k,
        "agg-w",
        2,
        (1000, 13),
        "  aggregate: true\n  aggregation_max_size: 4KiB\n",
    );
    // Fewer, aggregated Kinesis records.
    assert!(
        raw.len() < 200,
        "{} Kinesis records for 1000 user records",
        raw.len()
    );
    assert!(
        raw.iter()
            .any(|g| g.data.starts_with(&[0xF3, 0x89, 0x9A, 0xC2])),
        "no KPL magic"
    );

    // Read back, stopping in the middle of an aggregate, then resuming.
    let r = Scratch::new();
    let extra = format!("  stream: {stream}\n  start_position: trim_horizon\n");
    r.write("spec.yaml", &source_spec("agg-r", &k.endpoint, &extra));
    r.run_ok(&["run", "--max-records", "333", "spec.yaml"]);
    let offs = committed(r.dir.path(), "agg-r");
    assert!(
        offs.iter().any(|o| o.1.contains(':')),
        "offsets carry sub-sequence numbers: {offs:?}"
    );
    r.run_ok(&["run", "--max-records", "667", "spec.yaml"]);
    all_once_in_key_order(&r, 1000, "none lost, none repeated");
    let first: serde_json::Value =
        serde_json::from_str(&r.lines("out/data.jsonl")[0]).expect("json");
    assert!(
        first["metadata"]["sub-sequence-number"].is_string(),
        "{first}"
    );
    assert_eq!(
        first["metadata"]["partition-key"], first["value"]["key"],
        "user record keys"
    );

    // The same through enhanced fan-out: AT_SEQUENCE_NUMBER subscriptions skip the delivered
    // sub-records.
    let e = from_start(
        &k,
        "agg-efo",
        &stream,
        "  reader: efo\n  consumer_name: agg\n",
    );
    e.run_ok(&["run", "--max-records", "411", "spec.yaml"]);
    e.run_ok(&["run", "--max-records", "589", "spec.yaml"]);
    all_once_in_key_order(&e, 1000, "EFO: none lost, none repeated");
    k.delete(&stream);
}

#[test]
fn efo_reads_through_subscriptions_and_deregisters_a_lazy_consumer() {
    let k = Kinesis::new();
    let stream = k.stream_with_seqs(2, 0..400, 7);
    let s = from_start(
        &k,
        "efo",
        &stream,
        "  reader: efo\n  consumer_name: sluice-e2e\n",
    );
    let mut child = Running(s.spawn(&["run", "spec.yaml"]));
    let arn = k.stream_arn(&stream);
    assert!(
        wait_for(Duration::from_secs(30), || unique_seqs(&s).len() >= 400),
        "EFO delivered {}",
        unique_seqs(&s).len()
    );
    assert_eq!(k.consumers(&arn), ["sluice-e2e"]);
    // Records written while subscribed arrive too.
    k.put_seqs(&stream, 400..500, 7);
    assert!(
        wait_for(Duration::from_secs(30), || unique_seqs(&s).len() >= 500),
        "EFO delivered {}",
        unique_seqs(&s).len()
    );
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
    assert_eq!(unique_seqs(&s), (0..500).collect());
    assert_key_order(&parsed(&s));
    assert!(
        wait_for(Duration::from_secs(10), || k.consumers(&arn).is_empty()),
        "lazy consumer not deregistered"
    );
    k.delete(&stream);
}

#[test]
fn a_missing_stream_fails_fast_naming_the_stream_and_the_call() {
    let k = Kinesis::new();
    let s = Scratch::new();
    let extra = "  stream: no-such-stream-here\n".to_string();
    s.write("spec.yaml", &source_spec("missing", &k.endpoint, &extra));
    let started = std::time::Instant::now();
    let err = stderr(&s.run_err(&["run", "spec.yaml"]));
    assert!(
        err.contains("no-such-stream-here")
            && err.contains("DescribeStreamSummary")
            && err.contains("ResourceNotFound"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "not retried");
}

/// Starts `sluice run spec.yaml` in `s` with the Kinesis connector's debug lines (one
/// "subscribed" a subscription) on a pipe.
fn spawn_logging_subscriptions(s: &Scratch) -> Running {
    Running(
        s.cmd(&["run", "spec.yaml"])
            .env("SLUICE_LOG", "warn,sluice_connectors::kinesis=debug")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn sluice"),
    )
}

/// Writes `n` more records (seqs from `next` on, 3 keys) and waits until `s`'s output holds
/// all written so far.
fn put_and_await(k: &Kinesis, stream: &str, s: &Scratch, next: &mut u64, n: u64) {
    k.put_seqs(stream, *next..*next + n, 3);
    *next += n;
    let want = *next as usize;
    assert!(
        wait_for(Duration::from_secs(20), || unique_seqs(s).len() >= want),
        "EFO delivered {} of {want}",
        unique_seqs(s).len()
    );
}

/// Stops `child` with SIGTERM, checks that it exits cleanly, and returns its log.
fn stop_for_log(child: &mut Running) -> String {
    use std::io::Read;
    signal(child, "-TERM");
    assert!(wait_exit(child, Duration::from_secs(30)).success());
    let mut log = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut log)
        .expect("log");
    log
}

#[test]
fn efo_renews_subscriptions_and_continues_without_loss_or_repeats() {
    let k = Kinesis::new();
    let stream = k.create_stream(1);
    let s = from_start(
        &k,
        "efo-renew",
        &stream,
        "  reader: efo\n  consumer_name: renew\n  registration: eager\n  subscription_renewal: 1s\n",
    );
    let mut child = spawn_logging_subscriptions(&s);
    // Rounds of records spread over several subscription lifetimes.
    let started = std::time::Instant::now();
    let mut next = 0;
    while started.elapsed() < Duration::from_secs(4) || next < 300 {
        put_and_await(&k, &stream, &s, &mut next, 50);
    }
    let log = stop_for_log(&mut child);
    let subscriptions = log.matches("subscribed").count();
    assert!(subscriptions >= 3, "{subscriptions} subscriptions:\n{log}");
    all_once_in_key_order(&s, next, "no repeats across renewals");
    // `eager` keeps the consumer after a clean shutdown.
    assert_eq!(k.consumers(&k.stream_arn(&stream)), ["renew"]);
    k.delete(&stream);
}

#[test]
fn efo_subscriptions_outlive_the_aws_call_timeouts() {
    let k = Kinesis::new();
    let stream = k.create_stream(1);
    let s = Scratch::new();
    let extra = format!(
        "  stream: {stream}\n  start_position: trim_horizon\n  reader: efo\n  consumer_name: long\n"
    );
    // Calls time out after 1s; a subscription (renewed only after 290s) must not.
    let spec = source_spec("efo-long", &k.endpoint, &extra).replacen(
        "  aws:\n",
        "  aws:\n    timeouts: {attempt: 1s, operation: 1s}\n",
        1,
    );
    assert!(spec.contains("timeouts"), "{spec}");
    s.write("spec.yaml", &spec);
    let mut child = spawn_logging_subscriptions(&s);
    let started = std::time::Instant::now();
    let mut next = 0;
    while started.elapsed() < Duration::from_secs(5) {
        put_and_await(&k, &stream, &s, &mut next, 20);
    }
    let log = stop_for_log(&mut child);
    assert_eq!(
        log.matches("subscribed").count(),
        1,
        "one subscription for the whole run:\n{log}"
    );
    assert_eq!(unique_seqs(&s), (0..next).collect());
    k.delete(&stream);
}

#[test]
fn retriable_failures_back_off_per_call_policy_then_fail_naming_the_call() {
    // Nothing listens on this port: every DescribeStreamSummary is a retriable dispatch failure.
    let port = free_port();
    let s = Scratch::new();
    let extra = "  stream: anything\n  retries:\n    describe:\n      max_retries: 2\n      backoff: {base: 10ms, max: 20ms}\n";
    // The connector's own policy is under test: no pipeline restarts on top of it.
    let spec = source_spec("retry", &format!("http://127.0.0.1:{port}"), extra);
    s.write("spec.yaml", &format!("{spec}restart:\n  attempts: 0\n"));
    let err = stderr(&s.run_err(&["run", "spec.yaml"]));
    assert_eq!(
        err.matches("retriable error; backing off").count(),
        2,
        "{err}"
    );
    assert!(
        err.contains("stream anything: DescribeStreamSummary failed"),
        "{err}"
    );
}
