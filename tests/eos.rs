//! Exactly-once into Kafka (`sink.exactly_once`): records and offsets in one Kafka transaction.
//! Runs against kinesis-local and noida-db (SLUICE_TEST_NOIDA_BROKERS, started by
//! `scripts/test.sh`), which hides aborted and open transactions from read_committed readers
//! and fences zombie producers (tansu does neither). Every read here is read_committed
//! (librdkafka's default `isolation.level`, which the Kafka test helpers keep).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is the test failing

use std::collections::BTreeMap;
use std::io::Read;
use std::time::{Duration, Instant};

use rand::Rng;
use sluice_test_kit::kafka as k;
use sluice_test_kit::kinesis::Kinesis;
use sluice_test_kit::*;

const KEYS: u64 = 13;

/// The record of `seq`: `{"seq":N,"key":"kK"}` keyed `kK`, as the kit's `put_seqs` writes them.
fn record(seq: u64) -> (String, String) {
    let key = format!("k{}", seq % KEYS);
    let value = format!(r#"{{"seq":{seq},"key":"{key}"}}"#);
    (key, value)
}

/// An exactly-once pipeline into `topic` on `brokers`, offsets in a fresh topic there.
fn spec(name: &str, source: &str, brokers: &str, topic: &str, extra: &str) -> String {
    format!(
        "version: 1\nname: {name}\n{source}format:\n  decode: json\n  encode: json\npartitioner:\n  fields: [key]\nsink:\n  type: kafka\n  brokers: [{brokers}]\n  topic: {topic}\n  key: partition_key\n  exactly_once: true\n  create_topic:\n    partitions: 3\noffsets:\n  store: kafka\n  brokers: [{brokers}]\n  topic: {offsets}\n  commit_interval: 300ms\npipeline:\n  flush_interval: 50ms\nrestart:\n  initial_backoff: 100ms\n  max_backoff: 1s\n{extra}",
        offsets = k::topic("eos-offsets"),
    )
}

fn kinesis_source(kinesis: &Kinesis, stream: &str) -> String {
    format!(
        "source:\n  type: kinesis\n  stream: {stream}\n  start_position: trim_horizon\n{aws}",
        aws = aws_yaml(&kinesis.endpoint, "  "),
    )
}

/// A Kinesis → Kafka exactly-once bridge (`bridge.yaml`) and a thread writing `total` records
/// into its stream, `step` every `pause_ms`.
struct Bridge {
    kinesis: Kinesis,
    stream: String,
    brokers: String,
    topic: String,
    scratch: Scratch,
    writer: std::thread::JoinHandle<()>,
}

impl Bridge {
    fn start(name: &str, shards: i32, total: u64, step: u64, pause_ms: u64) -> Self {
        let brokers = emulator::noida_brokers();
        let kinesis = Kinesis::new();
        let stream = kinesis.create_stream(shards);
        let topic = k::topic(name);
        let scratch = Scratch::new();
        let source = kinesis_source(&kinesis, &stream);
        scratch.write("bridge.yaml", &spec(name, &source, &brokers, &topic, ""));
        let writer = {
            let stream = stream.clone();
            std::thread::spawn(move || {
                let kinesis = Kinesis::new();
                for from in (0..total).step_by(step as usize) {
                    kinesis.put_seqs(&stream, from..from + step, KEYS);
                    // Pacing the producer, not waiting for a condition.
                    std::thread::sleep(Duration::from_millis(pause_ms));
                }
            })
        };
        Self {
            kinesis,
            stream,
            brokers,
            topic,
            scratch,
            writer,
        }
    }
}

/// Each of `0..total` exactly once, in order per key, each key on one partition.
fn assert_exactly_once_in_order(msgs: &[k::Msg], total: u64) {
    let mut copies: BTreeMap<u64, usize> = BTreeMap::new();
    let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut partition_of: BTreeMap<String, i32> = BTreeMap::new();
    for m in msgs {
        let s = m.seq();
        *copies.entry(s).or_default() += 1;
        let key = m.json()["key"].as_str().expect("key").to_string();
        assert_eq!(
            *partition_of.entry(key.clone()).or_insert(m.partition),
            m.partition,
            "one Kafka partition per key"
        );
        per_key.entry(key).or_default().push(s);
    }
    let dups: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "duplicates (seq, copies): {dups:?}");
    assert_eq!(
        copies.keys().copied().collect::<Vec<_>>(),
        (0..total).collect::<Vec<_>>(),
        "every record"
    );
    for (key, seqs) in &per_key {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "key {key}: {seqs:?}");
    }
}

/// Waits (up to `deliver`) until `run` delivered `total` records to `topic`, stops it with
/// SIGTERM (a clean exit), and asserts that read_committed sees every record once, in order:
/// those records.
fn finish_exactly_once(
    run: &mut Running,
    brokers: &str,
    topic: &str,
    total: u64,
    deliver: Duration,
) -> Vec<k::Msg> {
    k::read(brokers, topic, total as usize, deliver);
    signal(run, "-TERM");
    let status = wait_exit(run, Duration::from_secs(30));
    assert!(status.success(), "{status:?}: {}", stderr_of(run));
    let all = k::read_settled(brokers, topic, total as usize, Duration::from_secs(30));
    assert_exactly_once_in_order(&all, total);
    all
}

fn stderr_of(child: &mut std::process::Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

#[test]
fn validate_refuses_exactly_once_without_the_kafka_store_on_the_sinks_cluster() {
    let s = Scratch::new();
    let base = "version: 1\nname: v\nsource:\n  type: stdin\nsink:\n  type: kafka\n  brokers: [127.0.0.1:9092]\n  topic: t\n  exactly_once: true\n";
    s.write(
        "file.yaml",
        &format!("{base}offsets:\n  store: file\n  path: o\n"),
    );
    let said = |out: &std::process::Output| format!("{}{}", stdout(out), stderr(out));
    let out = s.run_err(&["validate", "file.yaml"]);
    let err = said(&out);
    assert!(err.contains("file.yaml:9:"), "{err}");
    assert!(
        err.contains("needs the Kafka offset store on the sink's cluster")
            && err.contains("`file` offset store cannot join a Kafka transaction"),
        "{err}"
    );
    s.write(
        "other.yaml",
        &format!("{base}offsets:\n  store: kafka\n  brokers: [127.0.0.1:9093]\n"),
    );
    let out = s.run_err(&["validate", "other.yaml"]);
    let err = said(&out);
    assert!(err.contains("other.yaml:12:"), "{err}");
    assert!(
        err.contains("the offset store's brokers must be the sink's (127.0.0.1:9092)"),
        "{err}"
    );
    s.write(
        "props.yaml",
        &format!(
            "{base}  properties:\n    transactional.id: x\noffsets:\n  store: kafka\n  brokers: [127.0.0.1:9092]\n"
        ),
    );
    let err = said(&s.run(&["validate", "props.yaml"]));
    assert!(
        err.contains("`transactional.id` is set by `exactly_once`"),
        "{err}"
    );
    s.write(
        "ok.yaml",
        &format!("{base}offsets:\n  store: kafka\n  brokers: [127.0.0.1:9092]\n"),
    );
    s.run_ok(&["validate", "ok.yaml"]);
}

#[test]
fn a_bridge_killed_at_random_moments_delivers_every_record_exactly_once_in_order() {
    const TOTAL: u64 = 1500;
    const KILLS: usize = 5;
    let started = Instant::now();
    // Records keep arriving while the bridge is killed: 100 every 200 ms.
    let b = Bridge::start("eos-chaos", 2, TOTAL, 100, 200);
    let (brokers, topic, s) = (&b.brokers, &b.topic, &b.scratch);
    let mut rng = rand::rng();
    let mut visible = 0;
    for kill in 0..KILLS {
        let mut run = Running(s.spawn(&["run", "bridge.yaml"]));
        // Let this run commit something new, then kill it at a random moment.
        let got = k::read_until(brokers, topic, Duration::from_secs(60), |m| {
            m.len() > visible
        });
        assert!(got.len() > visible, "run {kill} committed nothing new");
        visible = got.len();
        std::thread::sleep(Duration::from_millis(rng.random_range(0..1000)));
        run.kill().expect("kill -9");
        run.wait().expect("reaped");
    }
    b.writer.join().expect("writer");
    // A last run finishes the stream and stops cleanly.
    let mut run = Running(s.spawn(&["run", "bridge.yaml"]));
    let all = finish_exactly_once(&mut run, brokers, topic, TOTAL, Duration::from_secs(90));
    eprintln!(
        "eos chaos: {KILLS} kills, {} records visible to read_committed, 0 duplicates, {:.0?}",
        all.len(),
        started.elapsed()
    );
    b.kinesis.delete(&b.stream);
}

#[test]
fn a_second_run_fences_the_first_and_nothing_the_first_writes_afterwards_is_visible() {
    const TOTAL: u64 = 1000;
    let b = Bridge::start("eos-zombie", 1, TOTAL, 50, 150);
    let (brokers, topic, s) = (&b.brokers, &b.topic, &b.scratch);
    let mut first = Running(s.spawn(&["run", "bridge.yaml"]));
    let got = k::read_until(brokers, topic, Duration::from_secs(60), |m| !m.is_empty());
    assert!(!got.is_empty(), "the first run committed nothing");
    // The same pipeline again (a restarted host while the old one still runs).
    let mut second = Running(s.spawn(&["run", "bridge.yaml"]));
    let status = wait_exit(&mut first, Duration::from_secs(30));
    assert!(!status.success(), "the fenced run must fail");
    let err = stderr_of(&mut first);
    assert!(
        err.contains("was fenced: another instance of this pipeline"),
        "{err}"
    );
    b.writer.join().expect("writer");
    finish_exactly_once(&mut second, brokers, topic, TOTAL, Duration::from_secs(60));
    b.kinesis.delete(&b.stream);
}

/// A topic whose broker limit refuses one record: inside a transaction that makes the
/// transaction abort-required. (The limit is on a whole batch: the sink's batches stay below.)
fn refusing_topic(brokers: &str) -> String {
    let topic = k::topic("eos-limit");
    k::create_topic_with(brokers, &topic, 1, &[("max.message.bytes", "2000")]);
    topic
}

/// An exactly-once file → Kafka spec whose batches fit the refusing topic.
fn limited_spec(name: &str, brokers: &str, topic: &str, extra: &str) -> String {
    spec(
        name,
        "source:\n  type: file\n  paths: [in.jsonl]\n",
        brokers,
        topic,
        extra,
    )
    .replace(
        "exactly_once: true\n",
        "exactly_once: true\n  batch_bytes: 1KiB\n",
    )
}

/// The brokers, a topic that refuses large records, and a scratch folder whose `in.jsonl` holds
/// 200 small records with one of 5,000 bytes (seq 150) among them, as a file source.
fn one_large_record_for_a_refusing_topic() -> (String, String, Scratch) {
    let brokers = emulator::noida_brokers();
    let topic = refusing_topic(&brokers);
    let s = Scratch::new();
    let lines: Vec<String> = (0..200u64)
        .map(|i| {
            let pad = if i == 150 {
                "x".repeat(5000)
            } else {
                String::new()
            };
            format!(r#"{{"seq":{i},"key":"k{}","pad":"{pad}"}}"#, i % KEYS)
        })
        .collect();
    s.write("in.jsonl", &(lines.join("\n") + "\n"));
    (brokers, topic, s)
}

#[test]
fn a_record_the_broker_refuses_aborts_its_transaction_and_tolerance_none_stops() {
    let (brokers, topic, s) = one_large_record_for_a_refusing_topic();
    let (brokers, topic) = (&brokers, &topic);
    // One transaction for everything (a long commit interval): the refusal aborts all of it.
    let text = limited_spec("eos-none", brokers, topic, "errors:\n  tolerance: none\n")
        .replace("commit_interval: 300ms", "commit_interval: 30s");
    s.write("p.yaml", &text);
    let err = stderr(&s.run_err(&["run", "p.yaml"]));
    assert!(
        err.contains("bad record at partition in.jsonl")
            && err.contains("Kafka refused this record"),
        "{err}"
    );
    let seen = k::read(brokers, topic, 1, Duration::from_secs(3));
    assert!(
        seen.is_empty(),
        "nothing of the aborted transaction is visible: {} records",
        seen.len()
    );
}

#[test]
fn a_record_the_broker_refuses_is_dead_lettered_with_tolerance_all_and_the_rest_arrives_once() {
    let (brokers, topic, s) = one_large_record_for_a_refusing_topic();
    let (brokers, topic) = (&brokers, &topic);
    let text = limited_spec(
        "eos-all",
        brokers,
        topic,
        "errors:\n  tolerance: all\n  dead_letter:\n    type: file\n    path: dead.jsonl\n",
    );
    s.write("p.yaml", &text);
    let out = s
        .cmd(&["run", "p.yaml"])
        .env("SLUICE_LOG", "info")
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    let all = k::read_settled(brokers, topic, 199, Duration::from_secs(30));
    let mut seqs: Vec<u64> = all.iter().map(k::Msg::seq).collect();
    seqs.sort();
    let want: Vec<u64> = (0..200).filter(|i| *i != 150).collect();
    assert_eq!(seqs, want, "every other record exactly once");
    let dead = s.lines("dead.jsonl");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].contains("\"seq\":150"), "{}", dead[0]);
}

#[test]
fn kafka_to_kafka_is_exactly_once_across_kill_9() {
    const TOTAL: u64 = 3000;
    let brokers = &emulator::noida_brokers();
    let input = &k::topic("eos-in");
    k::create_topic(brokers, input, 2);
    let records: Vec<k::Produce> = (0..TOTAL)
        .map(|seq| {
            let (key, value) = record(seq);
            (Some(key), value, Vec::new())
        })
        .collect();
    k::produce(brokers, input, &records, None);
    let output = &k::topic("eos-out");
    let s = Scratch::new();
    let source = format!(
        "source:\n  type: kafka\n  brokers: [{brokers}]\n  topics: [{input}]\n  group: {}\n",
        k::topic("eos-group")
    );
    // Slow enough to be killed in the middle: small batches, one at a time.
    s.write(
        "p.yaml",
        &spec("eos-k2k", &source, brokers, output, "").replace(
            "flush_interval: 50ms",
            "flush_interval: 50ms\n  max_buffered: 50",
        ),
    );
    let mut visible = 0;
    for kill in 0..2 {
        let mut run = Running(s.spawn(&["run", "p.yaml"]));
        let got = k::read_until(brokers, output, Duration::from_secs(60), |m| {
            m.len() > visible
        });
        assert!(got.len() > visible, "run {kill} committed nothing new");
        visible = got.len();
        run.kill().expect("kill -9");
        run.wait().expect("reaped");
    }
    let (port, mut run) = s.spawn_http("p.yaml");
    // Up (its signal handlers installed) before it is told to stop, even when the earlier runs
    // already delivered everything.
    assert!(
        wait_for(Duration::from_secs(30), || {
            http::http(port, "GET", "/health", &[]).is_some_and(|(code, _)| code == 200)
        }),
        "the last run did not come up"
    );
    finish_exactly_once(&mut run, brokers, output, TOTAL, Duration::from_secs(90));
}
