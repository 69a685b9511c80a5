//! `sluice run --until-caught-up` through the binary against the real local servers: Kinesis
//! (kinesis-local, a stream with a split shard, polling and EFO), Kafka (noida-db, whose high
//! watermarks are true) and DynamoDB Streams (moto). Each run exits 0 with every record present
//! at its start delivered once and committed; a second run reads only what came since. Sources
//! without a tip are refused, located.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is the test failing

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_test_kit::emulator::noida_brokers;
use sluice_test_kit::kinesis::{self as kinesis_support, Kinesis};
use sluice_test_kit::{dynamodb as dynamo_support, kafka as k, *};

/// `sluice run --until-caught-up spec.yaml`: must exit 0 within a minute; returns its stderr.
fn run_caught_up(s: &Scratch) -> String {
    let mut child = s.spawn(&["run", "--no-progress", "--until-caught-up", "spec.yaml"]);
    let status = wait_exit(&mut child, Duration::from_secs(60));
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    assert!(status.success(), "{status:?}:\n{err}");
    err
}

/// Runs [`run_caught_up`] while a thread keeps writing records `10_000..` in steps of `step`
/// (`write(range)`, from a client of its own); returns how many it wrote.
fn run_caught_up_while_writing(
    s: &Scratch,
    step: u64,
    write: impl FnMut(std::ops::Range<u64>) + Send + 'static,
) -> u64 {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let mut write = write;
        std::thread::spawn(move || {
            let mut next = 10_000u64;
            while !stop.load(Ordering::Relaxed) {
                write(next..next + step);
                next += step;
            }
            next - 10_000
        })
    };
    run_caught_up(s);
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer")
}

/// The `seq` of every output line, sorted.
fn sorted_seqs(s: &Scratch) -> Vec<u64> {
    let mut got: Vec<u64> = s
        .lines("out/data.jsonl")
        .iter()
        .map(|l| kinesis_support::envelope(l).0)
        .collect();
    got.sort_unstable();
    got
}

/// Per shard, the offset of the last record delivered from it (sequence numbers are decimal
/// strings of up to 128 digits: compared by length, then text).
fn last_offsets(s: &Scratch) -> BTreeMap<String, String> {
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    for line in s.lines("out/data.jsonl") {
        let (_, _, shard, offset) = kinesis_support::envelope(&line);
        let e = last.entry(shard).or_default();
        if (offset.len(), &offset) > (e.len(), &*e) {
            *e = offset;
        }
    }
    last
}

fn kinesis_run_until_caught_up(reader: &str) {
    let kin = Kinesis::new();
    let stream = kin.stream_with_seqs(1, 0..150, 10);
    // A split before the run: the parent is closed with records, its children open.
    let parent = kin.shards(&stream).remove(0);
    kin.split(&stream, &parent);
    kin.put_seqs(&stream, 150..300, 10);
    let s = Scratch::new();
    s.write(
        "spec.yaml",
        &kinesis_support::source_spec(
            "caught",
            &kin.endpoint,
            &format!("  stream: {stream}\n  start_position: trim_horizon\n{reader}"),
        ),
    );
    run_caught_up(&s);
    assert_eq!(sorted_seqs(&s), (0..300).collect::<Vec<u64>>());
    // Everything delivered is committed: the parent finished, each child at its last record.
    let committed = committed_offsets(&s.path("offsets"), "caught");
    let last = last_offsets(&s);
    let parent_id = parent.shard_id().to_string();
    for (shard, offset, finished) in &committed {
        if *shard == parent_id {
            assert!(finished, "the closed parent is finished: {committed:?}");
        } else {
            assert!(!finished, "an open child is not finished: {committed:?}");
        }
        assert_eq!(Some(offset), last.get(shard), "{committed:?} vs {last:?}");
    }
    assert_eq!(committed.len(), 3, "{committed:?}");
    // A second run reads only what came since.
    kin.put_seqs(&stream, 300..340, 10);
    run_caught_up(&s);
    assert_eq!(sorted_seqs(&s), (0..340).collect::<Vec<u64>>());
    kin.delete(&stream);
}

#[test]
fn kinesis_polling_until_caught_up_reads_a_split_stream_to_its_tip_and_exits_0() {
    kinesis_run_until_caught_up("  reader: polling\n");
}

#[test]
fn kinesis_efo_until_caught_up_reads_a_split_stream_to_its_tip_and_exits_0() {
    kinesis_run_until_caught_up("  reader: efo\n  consumer_name: caught\n");
}

#[test]
fn kinesis_until_caught_up_leaves_the_children_of_a_split_made_during_the_run() {
    let kin = Kinesis::new();
    let stream = kin.stream_with_seqs(1, 0..100, 10);
    let s = Scratch::new();
    // 10 records per call, two calls a second: the run takes about 5 s to reach the tip.
    s.write(
        "spec.yaml",
        &kinesis_support::source_spec(
            "split",
            &kin.endpoint,
            &format!(
                "  stream: {stream}\n  start_position: trim_horizon\n  max_records: 10\n  interval: 500ms\n"
            ),
        ),
    );
    let mut run = Running(s.spawn(&["run", "--no-progress", "--until-caught-up", "spec.yaml"]));
    assert!(
        wait_for(Duration::from_secs(30), || !s
            .lines("out/data.jsonl")
            .is_empty()),
        "nothing read"
    );
    let parent = kin.shards(&stream).remove(0);
    kin.split(&stream, &parent);
    // Written after the start, into the children: left for the next run.
    kin.put_seqs(&stream, 1000..1050, 10);
    let status = wait_exit(&mut run.0, Duration::from_secs(60));
    assert!(status.success(), "{status:?}");
    let got = sorted_seqs(&s);
    assert!(
        got.len() < 150,
        "a child made during the run was read: {got:?}"
    );
    assert_eq!(got, (0..100).collect::<Vec<u64>>());
    // The next run reads the children.
    run_caught_up(&s);
    let got = sorted_seqs(&s);
    assert_eq!(got, (0..100).chain(1000..1050).collect::<Vec<u64>>());
    kin.delete(&stream);
}

fn produce_seqs(brokers: &str, topic: &str, seqs: std::ops::Range<u64>) {
    let records: Vec<k::Produce> = seqs
        .map(|i| {
            (
                Some(format!("k{i}")),
                format!("{{\"seq\":{i}}}"),
                Vec::new(),
            )
        })
        .collect();
    k::produce(brokers, topic, &records, None);
}

fn kafka_spec(brokers: &str, topic: &str) -> String {
    format!(
        "version: 1\nname: kcaught\nsource:\n  type: kafka\n  brokers: [{brokers}]\n  topics: [{topic}]\n  group: g-{topic}\n  start: earliest\nsink:\n  type: file\n  path: out/data.jsonl\noffsets:\n  store: file\n  path: offsets\n  commit_interval: 100ms\npipeline:\n  flush_interval: 20ms\n"
    )
}

/// A fresh topic on noida-db holding `0..records`, and a scratch folder with a spec reading it.
fn kafka_setup(prefix: &str, partitions: i32, records: u64) -> (String, String, Scratch) {
    let brokers = noida_brokers();
    let topic = k::topic(prefix);
    k::create_topic(&brokers, &topic, partitions);
    produce_seqs(&brokers, &topic, 0..records);
    let s = Scratch::with("spec.yaml", &kafka_spec(&brokers, &topic));
    (brokers, topic, s)
}

#[test]
fn kafka_until_caught_up_stops_at_each_partitions_high_watermark_and_exits_0() {
    let (brokers, topic, s) = kafka_setup("caught", 3, 300);
    let seqs = |s: &Scratch| {
        let mut v = seqs(&s.lines("out/data.jsonl"));
        v.sort_unstable();
        v
    };
    run_caught_up(&s);
    assert_eq!(seqs(&s), (0..300).collect::<Vec<u64>>());
    // Committed up to each partition's last record: the high watermark minus one.
    let ends = k::read(&brokers, &topic, 300, Duration::from_secs(30))
        .into_iter()
        .fold(BTreeMap::new(), |mut m: BTreeMap<String, u64>, msg| {
            let e = m.entry(format!("{topic}/{}", msg.partition)).or_default();
            *e = (*e).max(msg.offset as u64);
            m
        });
    let committed: BTreeMap<String, u64> = s
        .offsets("offsets", "kcaught")
        .into_iter()
        .map(|(p, o, _)| (p, o))
        .collect();
    assert_eq!(committed, ends);
    // A second run reads only what came since.
    produce_seqs(&brokers, &topic, 300..350);
    run_caught_up(&s);
    assert_eq!(seqs(&s), (0..350).collect::<Vec<u64>>());
}

#[test]
fn kafka_until_caught_up_ends_while_records_keep_arriving() {
    let (brokers, topic, s) = kafka_setup("busy", 2, 200);
    // A producer writes on through the whole run: the run still ends at the tips it started with.
    let (b, t) = (brokers.clone(), topic.clone());
    let written = run_caught_up_while_writing(&s, 20, move |r| produce_seqs(&b, &t, r));
    let got = seqs(&s.lines("out/data.jsonl"));
    let mut before: Vec<u64> = got.iter().copied().filter(|n| *n < 10_000).collect();
    before.sort_unstable();
    let missing: Vec<u64> = (0..200)
        .filter(|n| before.binary_search(n).is_err())
        .collect();
    assert!(
        before.len() == 200 && missing.is_empty(),
        "{} delivered, missing {missing:?}",
        before.len()
    );
    // Records written during the run may be read too (up to the tips fetched when the
    // partitions were assigned); the run ended while the writer still wrote.
    assert!(written > 0, "nothing was written during the run");
    // What was delivered is what was committed: per partition, no gap and nothing beyond.
    let committed: u64 = s.committed_records("offsets", "kcaught");
    assert_eq!(committed, got.len() as u64);
}

fn dynamodb_spec(d: &dynamo_support::Dynamo, table: &str) -> String {
    format!(
        "version: 1\nname: dcaught\nsource:\n  type: dynamodb\n  table: {table}\n  mode: cdc\n  start_position: trim_horizon\n{aws}sink:\n  type: file\n  path: out/data.jsonl\noffsets:\n  store: file\n  path: offsets\n  commit_interval: 100ms\npipeline:\n  flush_interval: 20ms\n",
        aws = dynamo_support::aws_yaml(&d.endpoint, "  "),
    )
}

/// A new table with a stream, holding the ids `0..ids`, and a scratch folder whose `spec.yaml`
/// reads its stream.
fn table_with_ids_and_spec(prefix: &str, ids: u64) -> (dynamo_support::Dynamo, String, Scratch) {
    let d = dynamo_support::Dynamo::new();
    let table = d.create_table(prefix, "id", true, true);
    d.put_ids(&table, 0..ids);
    let s = Scratch::new();
    s.write("spec.yaml", &dynamodb_spec(&d, &table));
    (d, table, s)
}

/// The `keys.id` of every stream record delivered, sorted.
fn delivered_ids(s: &Scratch) -> Vec<u64> {
    let mut v: Vec<u64> = s
        .lines("out/data.jsonl")
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            v["keys"]["id"].as_u64().expect("id")
        })
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn dynamodb_streams_until_caught_up_reads_every_change_made_before_the_start_and_exits_0() {
    let (d, table, s) = table_with_ids_and_spec("caught", 120);
    run_caught_up(&s);
    assert_eq!(delivered_ids(&s), (0..120).collect::<Vec<u64>>());
    // Committed at the last record of each shard read.
    let seq = |v: &serde_json::Value| -> u128 {
        v.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string())
            .parse()
            .expect("sequence number")
    };
    let last_seq = s
        .lines("out/data.jsonl")
        .iter()
        .map(|l| {
            seq(&serde_json::from_str::<serde_json::Value>(l).expect("json")["sequence_number"])
        })
        .max();
    let committed = committed_offsets(&s.path("offsets"), "dcaught");
    let top = committed
        .iter()
        .map(|(_, o, _)| seq(&serde_json::Value::String(o.clone())))
        .max();
    assert_eq!(top, last_seq, "{committed:?}");
    // A second run reads only what came since.
    d.put_ids(&table, 120..150);
    run_caught_up(&s);
    assert_eq!(delivered_ids(&s), (0..150).collect::<Vec<u64>>());
}

#[test]
fn dynamodb_streams_until_caught_up_ends_while_items_keep_changing() {
    let (_, table, s) = table_with_ids_and_spec("busy", 100);
    let t = table.clone();
    let mut writer = None;
    let written = run_caught_up_while_writing(&s, 25, move |r| {
        writer
            .get_or_insert_with(dynamo_support::Dynamo::new)
            .put_ids(&t, r)
    });
    let got = delivered_ids(&s);
    let before: Vec<u64> = got.iter().copied().filter(|n| *n < 10_000).collect();
    assert_eq!(before, (0..100).collect::<Vec<u64>>());
    assert!(written > 0, "nothing was written during the run");
    let mut unique = got.clone();
    unique.dedup();
    assert_eq!(unique, got, "a change delivered twice");
    assert!(
        got.len() - before.len() <= written as usize,
        "more changes delivered than were made during the run"
    );
}

#[test]
fn until_caught_up_is_refused_for_sources_without_a_tip_and_a_file_ends_at_its_end() {
    let s = Scratch::new();
    s.write(
        "stdin.yaml",
        "version: 1\nname: in\nsource:\n  type: stdin\nsink:\n  type: file\n  path: out.jsonl\n",
    );
    s.write(
        "endless.yaml",
        "version: 1\nname: gen\nsource:\n  type: generator\n  rate: 10\nsink:\n  type: file\n  path: out.jsonl\n",
    );
    for (spec, at, says) in [
        ("stdin.yaml", "stdin.yaml:4:9", "standard input has none"),
        ("endless.yaml", "endless.yaml:4:9", "give it a `count`"),
    ] {
        for cmd in [
            &["validate", "--until-caught-up", spec][..],
            &["run", "--no-progress", "--until-caught-up", spec][..],
        ] {
            let out = s.run_err(cmd);
            let text = format!("{}{}", stdout(&out), stderr(&out));
            assert!(
                text.contains(at) && text.contains("source.type"),
                "{cmd:?}: {text}"
            );
            assert!(text.contains(says), "{cmd:?}: {text}");
        }
        // Without the flag the same spec is valid.
        s.run_ok(&["validate", spec]);
    }
    s.write("in.jsonl", "{\"seq\":0}\n{\"seq\":1}\n");
    s.write(
        "file.yaml",
        "version: 1\nname: f\nsource:\n  type: file\n  paths: [in.jsonl]\nsink:\n  type: file\n  path: out/data.jsonl\n",
    );
    s.run_ok(&["run", "--no-progress", "--until-caught-up", "file.yaml"]);
    assert_eq!(seqs(&s.lines("out/data.jsonl")), vec![0, 1]);
}
