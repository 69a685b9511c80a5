//! Source lag through `sluice run --http` against the real local servers: a paused Kinesis
//! pipeline's lag rises while records arrive and falls to 0 after resume (kinesis-local); Kafka's
//! `sluice_source_lag_records` is the high watermark minus the position (noida-db, whose high
//! watermarks are true); DynamoDB Streams' `sluice_source_lag_seconds` is the age of the records
//! read (moto).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is the test failing

use std::io::Read;
use std::process::{ChildStdout, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use sluice_test_kit::http::{get_json, http, series};
use sluice_test_kit::{
    dynamodb as dynamo_support, kafka as kafka_support, kinesis as kinesis_support, *,
};

/// Starts `sluice run --http` on a free port; stdout piped (for the stdout sink), stderr null.
fn serve(s: &Scratch) -> (Running, u16) {
    let (port, mut cmd) = s.http_cmd("spec.yaml");
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sluice");
    (Running(child), port)
}

fn state(port: u16, name: &str) -> Option<serde_json::Value> {
    get_json(port, &format!("/pipelines/{name}")).map(|(_, v)| v)
}

#[test]
fn a_paused_kinesis_pipeline_shows_its_lag_rising_and_it_falls_to_zero_after_resume() {
    let kin = kinesis_support::Kinesis::new();
    let stream = kin.stream_with_seqs(1, 0..50, 5);
    let s = Scratch::new();
    s.write(
        "spec.yaml",
        &kinesis_support::source_spec(
            "paused",
            &kin.endpoint,
            &format!("  stream: {stream}\n  start_position: trim_horizon\n  interval: 200ms\n"),
        ),
    );
    let shard = kin.shards(&stream)[0].shard_id().to_string();
    let (_run, port) = serve(&s);
    let lag = || series(port, "sluice_source_lag_seconds", "paused");
    assert!(
        wait_for(Duration::from_secs(30), || s.lines("out/data.jsonl").len()
            == 50
            && lag().get(&shard) == Some(&0.0)),
        "not caught up: {:?}, {} lines",
        lag(),
        s.lines("out/data.jsonl").len()
    );
    assert_eq!(
        http(port, "POST", "/pipelines/paused/pause", &[]).map(|r| r.0),
        Some(202)
    );
    assert!(
        wait_for(Duration::from_secs(30), || state(port, "paused")
            .is_some_and(|v| v["state"] == "paused")),
        "not paused"
    );
    // Nothing is read while paused, but the lag of the committed position rises as records
    // arrive. (kinesis-local's MillisBehindLatest is the newest record's arrival minus the
    // returned record's, so it grows with each later record.)
    let mut next = 50u64;
    let mut rising: Vec<f64> = Vec::new();
    while rising.len() < 2 && next < 70 {
        kin.put_seqs(&stream, next..next + 1, 5);
        next += 1;
        let before = rising.last().copied().unwrap_or(0.0);
        if wait_for(Duration::from_secs(5), || {
            lag().get(&shard).is_some_and(|l| *l > before)
        }) {
            rising.push(lag()[&shard]);
        }
    }
    assert!(
        rising.len() == 2,
        "the lag did not rise while paused: {rising:?}, now {:?}",
        lag()
    );
    let v = state(port, "paused").expect("status");
    assert_eq!(v["state"], "paused");
    assert_eq!(v["counts"]["read"], 50, "nothing is read while paused: {v}");
    assert!(v["lag_seconds"][shard.as_str()].as_f64() > Some(0.0), "{v}");
    assert_eq!(
        http(port, "POST", "/pipelines/paused/resume", &[]).map(|r| r.0),
        Some(202)
    );
    assert!(
        wait_for(Duration::from_secs(30), || s.lines("out/data.jsonl").len()
            == next as usize
            && lag().get(&shard) == Some(&0.0)),
        "not caught up after resume: {:?}, {} lines",
        lag(),
        s.lines("out/data.jsonl").len()
    );
    kin.delete(&stream);
}

/// Reads the stdout sink slowly (a few KiB every 10 ms, so the pipeline runs under
/// backpressure) until `fast` is set, then as fast as it comes; counts the lines.
fn trickle(mut out: ChildStdout, fast: Arc<AtomicBool>) -> Arc<AtomicUsize> {
    let lines = Arc::new(AtomicUsize::new(0));
    let counted = lines.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            let n = match out.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            counted.fetch_add(
                buf[..n].iter().filter(|b| **b == b'\n').count(),
                Ordering::Relaxed,
            );
            if !fast.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    });
    lines
}

#[test]
fn kafka_lag_in_records_is_the_high_watermark_minus_the_position_and_falls_to_zero() {
    let brokers = sluice_test_kit::emulator::noida_brokers();
    let topic = kafka_support::topic("lagrec");
    kafka_support::create_topic(&brokers, &topic, 1);
    let pad = "x".repeat(1000);
    let total = 1500usize;
    let records: Vec<kafka_support::Produce> = (0..total)
        .map(|i| {
            (
                None,
                format!("{{\"seq\":{i},\"pad\":\"{pad}\"}}"),
                Vec::new(),
            )
        })
        .collect();
    kafka_support::produce(&brokers, &topic, &records, Some(0));
    let s = Scratch::new();
    s.write(
        "spec.yaml",
        &format!(
            "version: 1\nname: klag\nsource:\n  type: kafka\n  brokers: [{brokers}]\n  topics: [{topic}]\n  group: g-{topic}\n  batch_size: 10\nsink:\n  type: stdout\noffsets:\n  store: file\n  path: offsets\n  commit_interval: 100ms\npipeline:\n  channel_capacity: 1\n  max_buffered: 10\n  flush_interval: 20ms\n"
        ),
    );
    let (mut run, port) = serve(&s);
    let fast = Arc::new(AtomicBool::new(false));
    let lines = trickle(run.0.stdout.take().expect("stdout"), fast.clone());
    let partition = format!("{topic}/0");
    let lag = || series(port, "sluice_source_lag_records", "klag");
    let mut seen = None;
    assert!(
        wait_for(Duration::from_secs(60), || {
            seen = lag().get(&partition).copied().filter(|n| *n > 0.0);
            seen.is_some()
        }),
        "no lag in records above 0 while behind: {:?}",
        lag()
    );
    let seen = seen.expect("seen");
    assert!(seen <= total as f64 && seen.fract() == 0.0, "{seen}");
    fast.store(true, Ordering::Relaxed);
    assert!(
        wait_for(Duration::from_secs(60), || lines.load(Ordering::Relaxed)
            == total
            && lag().get(&partition) == Some(&0.0)),
        "lag {:?} with {} of {total} lines",
        lag(),
        lines.load(Ordering::Relaxed)
    );
    let v = state(port, "klag").expect("status");
    assert_eq!(v["lag_records"][partition.as_str()], 0, "{v}");
}

#[test]
fn dynamodb_streams_lag_is_the_age_of_the_records_read_and_zero_at_the_tip() {
    let d = dynamo_support::Dynamo::new();
    let table = d.create_table("lag", "id", true, true);
    let total = 4000usize;
    d.put_ids(&table, 0..total as u64);
    let s = Scratch::new();
    s.write(
        "spec.yaml",
        &format!(
            "version: 1\nname: dlag\nsource:\n  type: dynamodb\n  table: {table}\n  mode: cdc\n  start_position: trim_horizon\n  poll_interval: 100ms\n{aws}sink:\n  type: stdout\noffsets:\n  store: file\n  path: offsets\n  commit_interval: 100ms\npipeline:\n  channel_capacity: 1\n  max_buffered: 10\n  flush_interval: 20ms\n",
            aws = dynamo_support::aws_yaml(&d.endpoint, "  "),
        ),
    );
    let (mut run, port) = serve(&s);
    let lag = || series(port, "sluice_source_lag_seconds", "dlag");
    // Nothing reads the stdout sink yet: the reader stops behind, holding records made before
    // the pipeline started.
    let mut seen = None;
    assert!(
        wait_for(Duration::from_secs(60), || {
            seen = lag().values().copied().find(|l| *l > 0.0);
            seen.is_some()
        }),
        "no lag above 0 while behind: {:?}",
        lag()
    );
    let fast = Arc::new(AtomicBool::new(true));
    let lines = trickle(run.0.stdout.take().expect("stdout"), fast);
    assert!(
        wait_for(Duration::from_secs(60), || lines.load(Ordering::Relaxed)
            == total
            && !lag().is_empty()
            && lag().values().all(|l| *l == 0.0)),
        "lag {:?} with {} of {total} lines",
        lag(),
        lines.load(Ordering::Relaxed)
    );
}
