//! End-to-end tests of the Kafka source, sink and offset store against a real Kafka-protocol
//! broker (tansu, started by `scripts/test.sh` through `scripts/emulators/kafka.sh`).
//! Every test uses its own random topics and group.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is the test failing

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sluice_test_kit::kafka as k;
use sluice_test_kit::*;

fn json_records(range: std::ops::Range<u64>) -> Vec<k::Produce> {
    range
        .map(|i| {
            (
                Some(format!("k{}", i % 10)),
                format!("{{\"seq\":{i},\"user\":\"k{}\"}}", i % 10),
                vec![("h".to_string(), i.to_string())],
            )
        })
        .collect()
}

#[test]
fn generator_to_kafka_then_kafka_to_file() {
    let brokers = k::brokers();
    let topic = k::topic("gen");
    let s = Scratch::with(
        "to-kafka.yaml",
        &format!(
            "version: 1\nname: to-kafka\nsource:\n  type: generator\n  count: 3000\n  partitions: 3\n  batch_size: 100\nformat:\n  decode: json\n  encode: json\npartitioner:\n  fields: [user_id]\nsink:\n  type: kafka\n  brokers: [{brokers}]\n  topic: {topic}\n  key: partition_key\n  include_metadata: [partition, offset]\n  create_topic:\n    partitions: 3\noffsets:\n  store: file\n  path: offsets\n  commit_interval: 100ms\n"
        ),
    );
    let started_ms = chrono::Utc::now().timestamp_millis();
    s.run_ok(&["run", "to-kafka.yaml"]);
    let msgs = k::read(&brokers, &topic, 3000, Duration::from_secs(30));
    assert_eq!(msgs.len(), 3000);
    // Records carry the time they were made (not the data's 2017 `ts`, which a broker's
    // retention would delete at once).
    let now_ms = chrono::Utc::now().timestamp_millis();
    for m in &msgs {
        let ts = m.timestamp.expect("a record timestamp");
        assert!(ts >= started_ms - 1000 && ts <= now_ms, "timestamp {ts}");
    }
    let seqs = k::seqs(&msgs);
    assert_eq!(seqs, (0..3000).collect(), "every record once");
    let mut by_source: BTreeMap<(i32, String), Vec<u64>> = BTreeMap::new();
    for m in &msgs {
        let v = m.json();
        assert_eq!(
            m.key_str(),
            Some(v["user_id"].to_string()),
            "the key is the partition key"
        );
        let src = m
            .headers
            .get("partition")
            .expect("source partition header")
            .clone();
        assert!(m.headers.contains_key("offset"), "source offset header");
        by_source
            .entry((m.partition, src))
            .or_default()
            .push(v["seq"].as_u64().expect("seq"));
    }
    for (k, seqs) in &by_source {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "order kept per source partition in {k:?}"
        );
    }
    // The same key always lands in the same Kafka partition.
    let mut key_part: BTreeMap<String, i32> = BTreeMap::new();
    for m in &msgs {
        let p = *key_part
            .entry(m.key_str().expect("key"))
            .or_insert(m.partition);
        assert_eq!(p, m.partition);
    }

    // And back out: Kafka → file, bounded by --max-records.
    let group = k::topic("group");
    s.write(
        "from-kafka.yaml",
        &format!(
            "version: 1\nname: from-kafka\nsource:\n  type: kafka\n  brokers: [{brokers}]\n  topics: [{topic}]\n  group: {group}\nsink:\n  type: file\n  path: out/data.jsonl\n  envelope: true\noffsets:\n  store: file\n  path: offsets\n  commit_interval: 100ms\npipeline:\n  flush_interval: 20ms\n"
        ),
    );
    let out = s.run_ok(&[
        "run",
        "from-kafka.yaml",
        "--max-records",
        "3000",
        "--log",
        "info,sluice_connectors=debug",
    ]);
    let lines = s.lines("out/data.jsonl");
    assert_eq!(lines.len(), 3000);
    let mut got = BTreeSet::new();
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).expect("envelope");
        got.insert(v["value"]["seq"].as_u64().expect("seq"));
        assert_eq!(v["metadata"]["topic"], topic.as_str());
        let part = v["metadata"]["partition"].as_str().expect("partition");
        assert_eq!(v["metadata"]["partition"], v["metadata"]["partition"]);
        assert_eq!(
            v["metadata"]["offset"].as_str(),
            v["metadata"]["offset"].as_str(),
            "offset metadata"
        );
        assert!(
            part.starts_with(&format!("{topic}/")) || part.parse::<i32>().is_ok(),
            "{part}"
        );
        assert!(v["key"].is_string(), "the key is kept");
        assert!(v["headers"]["partition"].is_string(), "headers are kept");
    }
    assert_eq!(got, (0..3000).collect());
    let offs = s.offsets("offsets", "from-kafka");
    assert_eq!(offs.len(), 3, "{offs:?}");
    assert!(
        offs.iter()
            .all(|(p, _, _)| p.starts_with(&format!("{topic}/"))),
        "{offs:?}"
    );
    let stored: u64 = offs.iter().map(|(_, o, _)| o + 1).sum();
    assert_eq!(stored, 3000, "{offs:?}");
    // The group's offsets (what Kafka tools see) are the store's after a clean stop.
    let group_offs = k::group_offsets(&brokers, &group, &topic, 3);
    for (p, g) in group_offs.iter().enumerate() {
        let store = offs
            .iter()
            .find(|(id, _, _)| *id == format!("{topic}/{p}"))
            .map(|(_, o, _)| *o as i64 + 1)
            .unwrap_or(-1);
        assert_eq!(
            *g,
            store,
            "group offset of partition {p}: {group_offs:?}, store {offs:?}; sluice said: {}",
            stderr(&out)
        );
    }
}

#[test]
fn kafka_to_kafka_on_the_kafka_offset_store_resumes_without_loss_or_duplicates() {
    let brokers = k::brokers();
    let (input, output, offsets) = (k::topic("in"), k::topic("out"), k::topic("offsets"));
    let group = k::topic("mirror");
    k::create_topic(&brokers, &input, 4);
    k::produce(&brokers, &input, &json_records(0..2000), None);
    let source = k::read(&brokers, &input, 2000, Duration::from_secs(30));
    assert_eq!(source.len(), 2000);
    let s = Scratch::with(
        "spec.yaml",
        &format!(
            "version: 1\nname: mirror\nsource:\n  type: kafka\n  brokers: [{brokers}]\n  topics: [{input}]\n  group: {group}\nsink:\n  type: kafka\n  brokers: [{brokers}]\n  topic: {output}\n  partition: hash\n  compression: lz4\n  create_topic:\n    partitions: 4\noffsets:\n  store: kafka\n  brokers: [{brokers}]\n  topic: {offsets}\n  commit_interval: 100ms\npipeline:\n  flush_interval: 20ms\n"
        ),
    );
    for n in ["700", "1300"] {
        s.run_ok(&["run", "spec.yaml", "--max-records", n]);
    }
    // Nothing more arrives: a bounded run commits exactly what it delivered.
    let msgs = k::read_settled(&brokers, &output, 2000, Duration::from_secs(30));
    assert_eq!(msgs.len(), 2000, "no duplicates across bounded runs");
    let seqs = k::seqs(&msgs);
    assert_eq!(seqs, (0..2000).collect());
    let ts_in: BTreeMap<u64, Option<i64>> = source.iter().map(|m| (m.seq(), m.timestamp)).collect();
    for m in &msgs {
        let seq = m.seq();
        assert_eq!(m.key_str(), Some(format!("k{}", seq % 10)), "key kept");
        assert_eq!(m.headers.get("h"), Some(&seq.to_string()), "headers kept");
        assert_eq!(m.timestamp, ts_in[&seq], "timestamp kept");
    }
    // Per key order is kept end to end.
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for m in &msgs {
        let seq = m.seq();
        let key = m.key_str().expect("key");
        if let Some(prev) = last.insert(key.clone(), seq) {
            assert!(prev < seq, "key {key}: {seq} after {prev}");
        }
    }
    // The CLI sees the Kafka store.
    let list = s.run_ok(&["offsets", "list", "spec.yaml", "--json"]);
    let rows: Vec<serde_json::Value> = stdout(&list)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json row"))
        .collect();
    assert!(!rows.is_empty() && rows.len() <= 4, "{rows:?}");
    let total: u64 = rows
        .iter()
        .map(|r| {
            r["offset"]
                .as_str()
                .expect("offset")
                .parse::<u64>()
                .expect("number")
                + 1
        })
        .sum();
    assert_eq!(total, 2000);
    let first = rows[0]["partition"]
        .as_str()
        .expect("partition")
        .to_string();
    assert!(first.starts_with(&format!("{input}/")), "{first}");
    s.run_ok(&["offsets", "reset", "spec.yaml", "--partition", &first]);
    let after = s.run(&["offsets", "list", "spec.yaml", "--json"]);
    assert_eq!(
        stdout(&after).lines().count(),
        rows.len() - 1,
        "{}",
        stdout(&after)
    );
}

/// Two workers of one pipeline sharing a Kafka consumer group.
struct Workers {
    a: Scratch,
    b: Scratch,
    wa: std::process::Child,
    wb: std::process::Child,
    /// Whether `b` got records before the writing stopped.
    joined: bool,
    /// How many records were written to the topic.
    total: u64,
}

impl Workers {
    /// Makes a topic of 4 partitions holding 1000 records and lets worker `a` (pipeline `spec`,
    /// writing `out.jsonl`) read them alone; then starts `b` and keeps writing while the group
    /// rebalances, until `b` gets records too.
    fn start(brokers: &str, topic: &str, spec: &str) -> Self {
        k::create_topic(brokers, topic, 4);
        k::produce(brokers, topic, &json_records(0..1000), None);
        let (a, b) = (Scratch::new(), Scratch::new());
        a.write("spec.yaml", spec);
        b.write("spec.yaml", spec);
        let wa = a.spawn(&["run", "spec.yaml"]);
        assert!(
            wait_for(Duration::from_secs(60), || a.lines("out.jsonl").len()
                >= 1000),
            "the first worker did not read the topic"
        );
        let wb = b.spawn(&["run", "spec.yaml"]);
        let mut next = 1000u64;
        let joined = wait_for(Duration::from_secs(90), || {
            if next < 6000 {
                k::produce(brokers, topic, &json_records(next..next + 100), None);
                next += 100;
            }
            !b.lines("out.jsonl").is_empty() && next >= 3000
        });
        Workers {
            a,
            b,
            wa,
            wb,
            joined,
            total: next,
        }
    }

    /// Waits until the two outputs together hold every record written; false at the deadline.
    fn all_read(&self) -> bool {
        wait_for(Duration::from_secs(60), || {
            let mut got: BTreeSet<u64> = seqs(&self.a.lines("out.jsonl")).into_iter().collect();
            got.extend(seqs(&self.b.lines("out.jsonl")));
            got.len() as u64 == self.total
        })
    }

    /// Stops both workers with SIGTERM; their exit statuses.
    fn stop(&mut self) -> (std::process::ExitStatus, std::process::ExitStatus) {
        signal(&self.wa, "-TERM");
        signal(&self.wb, "-TERM");
        (
            wait_exit(&mut self.wa, Duration::from_secs(30)),
            wait_exit(&mut self.wb, Duration::from_secs(30)),
        )
    }
}

#[test]
fn two_workers_share_a_kafka_source_through_the_consumer_group() {
    let brokers = k::brokers();
    let topic = k::topic("shared");
    let group = k::topic("workers");
    let spec = format!(
        "version: 1\nname: shared\nsource:\n  type: kafka\n  brokers: [{brokers}]\n  topics: [{topic}]\n  group: {group}\n  rebalance_drain: 10s\n  properties:\n    session.timeout.ms: 6000\n    heartbeat.interval.ms: 500\nsink:\n  type: file\n  path: out.jsonl\noffsets:\n  store: file\n  path: offsets\n  commit_interval: 100ms\npipeline:\n  flush_interval: 20ms\n"
    );
    let mut w = Workers::start(&brokers, &topic, &spec);
    assert!(w.joined, "the second worker never got a partition");
    let total = w.total;
    let all = w.all_read();
    let (sa, sb) = w.stop();
    let (la, lb) = (seqs(&w.a.lines("out.jsonl")), seqs(&w.b.lines("out.jsonl")));
    assert!(
        all,
        "records missing: a has {}, b has {}, {total} written",
        la.len(),
        lb.len()
    );
    assert!(sa.success() && sb.success(), "{sa:?} {sb:?}");
    let after_join: BTreeSet<u64> = lb.iter().copied().collect();
    assert!(!after_join.is_empty());
    let dups = la.len() + lb.len() - total as usize;
    assert!(
        dups < 1000,
        "{dups} records read twice: revoked partitions are committed before they are given up"
    );
}

/// Two workers share a pipeline's partitions through the consumer group and one DynamoDB offset
/// table. When the group moves partitions to the second worker, it claims them in the store, so
/// its commits are not refused as stale (without the claim it would be fenced and stop).
#[test]
fn a_worker_taking_over_partitions_in_a_rebalance_commits_them_to_the_shared_dynamodb_store() {
    let brokers = k::brokers();
    let endpoint = dynamodb::endpoint();
    let topic = k::topic("claimed");
    let group = k::topic("claimers");
    let table = k::topic("offsets");
    let spec = format!(
        "version: 1\nname: claimed\nsource:\n  type: kafka\n  brokers: [{brokers}]\n  topics: [{topic}]\n  group: {group}\n  rebalance_drain: 10s\n  properties:\n    session.timeout.ms: 6000\n    heartbeat.interval.ms: 500\nsink:\n  type: file\n  path: out.jsonl\noffsets:\n  store: dynamodb\n  table: {table}\n  create_table: true\n  commit_interval: 100ms\n{}pipeline:\n  flush_interval: 20ms\n",
        dynamodb::aws_yaml(&endpoint, "  ")
    );
    let mut w = Workers::start(&brokers, &topic, &spec);
    let b_early_exit = w.wb.try_wait().expect("try_wait");
    assert!(
        w.joined && b_early_exit.is_none(),
        "the second worker never got a partition, or stopped: {b_early_exit:?}"
    );
    let all = w.all_read();
    // Both keep committing the partitions they own: neither is fenced.
    let running = (
        w.wa.try_wait().expect("try_wait"),
        w.wb.try_wait().expect("try_wait"),
    );
    let (sa, sb) = w.stop();
    assert!(all, "records missing");
    assert_eq!(running, (None, None), "a worker stopped before the end");
    assert!(sa.success() && sb.success(), "{sa:?} {sb:?}");
}

#[test]
fn a_broker_restart_during_a_run_loses_nothing() {
    let (s, mut broker, brokers, topic) = k::private_broker("restart", true);
    k::create_topic(&brokers, &topic, 1);
    s.write(
        "spec.yaml",
        &format!(
            "version: 1\nname: restart\nsource:\n  type: generator\n  count: 12000\n  rate: 2000\n  batch_size: 100\nsink:\n  type: kafka\n  brokers: [{brokers}]\n  topic: {topic}\n  delivery_timeout: 60s\noffsets:\n  store: file\n  path: offsets\n  commit_interval: 100ms\npipeline:\n  flush_interval: 50ms\n"
        ),
    );
    let mut run = s.spawn(&["run", "spec.yaml"]);
    let committed = |s: &Scratch| s.committed_records("offsets", "restart");
    assert!(
        wait_for(Duration::from_secs(30), || committed(&s) >= 2000),
        "no progress before the restart"
    );
    broker.kill();
    let at_kill = committed(&s);
    broker.restart();
    // Memory storage: the restarted broker lost the topic; recreate it as an operator would.
    k::create_topic(&brokers, &topic, 1);
    // The restarted broker lost the idempotent producer's state (memory storage), so the
    // producer fails for good: the run stops with an error naming the topic and brokers, and
    // the next run resends everything after the last commit. (A broker that keeps its state
    // lets the run carry on; either way nothing is lost.)
    let status = wait_exit(&mut run, Duration::from_secs(150));
    let mut err = String::new();
    if let Some(mut e) = run.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    if !status.success() {
        assert!(
            err.contains(&topic) && err.contains(&brokers),
            "a clear error: {err}"
        );
        s.run_ok(&["run", "spec.yaml"]);
    }
    assert_eq!(committed(&s), 12000);
    // Everything not acknowledged before the kill reached the new broker, without holes.
    // Records acknowledged before the kill but committed only after it were lost with the
    // broker's memory; they are bounded by one commit interval (100ms at 2000 records/s).
    let msgs = k::read(
        &brokers,
        &topic,
        12000 - at_kill as usize,
        Duration::from_secs(30),
    );
    let got = k::seqs(&msgs);
    let first = *got.first().expect("records after the restart");
    assert!(
        first <= at_kill + 1000,
        "records {at_kill}..{first} were lost"
    );
    assert_eq!(got, (first..12000).collect(), "no holes after the restart");
}

fn clicks(seqs: std::ops::Range<u64>) -> Vec<(String, Vec<u8>)> {
    seqs.map(|s| {
        let user = format!("u{}", s % 17);
        let value = format!(r#"{{"seq":{s},"user_id":"{user}","email":"{user}@example.com"}}"#);
        (user, value.into_bytes())
    })
    .collect()
}

#[test]
fn the_bridge_kinesis_to_kafka_survives_resharding_and_a_crash() {
    let brokers = k::brokers();
    let kinesis = kinesis::Kinesis::new();
    let stream = kinesis.create_stream(2);
    let topic = k::topic("bridge");
    let plugins = wasm::plugins_dir();
    let s = Scratch::with(
        "bridge.yaml",
        &format!(
            "version: 1\nname: bridge\nsource:\n  type: kinesis\n  stream: {stream}\n  start_position: trim_horizon\n  shard_discovery_interval: 500ms\n{aws}format:\n  decode: json\n  encode: json\ntransforms:\n  - wasm: {dir}/mask_fields.wasm\n    config:\n      fields: [email]\npartitioner:\n  wasm: {dir}/field_partitioner.wasm\n  config:\n    fields: [user_id]\nsink:\n  type: kafka\n  brokers: [{brokers}]\n  topic: {topic}\n  key: partition_key\n  include_metadata: [shard-id, sequence-number]\n  create_topic:\n    partitions: 4\noffsets:\n  store: file\n  path: offsets\n  commit_interval: 200ms\npipeline:\n  flush_interval: 50ms\n",
            aws = kinesis::aws_yaml(&kinesis.endpoint, "  "),
            dir = plugins.display(),
        ),
    );
    kinesis.put(&stream, &clicks(0..300));
    let mut run = s.spawn(&["run", "bridge.yaml"]);
    let seen = |n: usize, secs: u64| {
        k::read_until(&brokers, &topic, Duration::from_secs(secs), |m| {
            k::seqs(m).len() >= n
        })
    };
    assert!(
        k::seqs(&seen(300, 60)).len() >= 300,
        "the first 300 records"
    );
    // Reshard while it runs, write more, and crash it in the middle.
    let first = kinesis.open_shards(&stream)[0].clone();
    kinesis.split(&stream, &first);
    kinesis.put(&stream, &clicks(300..600));
    assert!(
        k::seqs(&seen(400, 60)).len() >= 400,
        "records after the split"
    );
    run.kill().expect("kill -9");
    run.wait().expect("reaped");
    kinesis.put(&stream, &clicks(600..900));
    let mut run = s.spawn(&["run", "bridge.yaml"]);
    let all = seen(900, 90);
    signal(&run, "-TERM");
    let status = wait_exit(&mut run, Duration::from_secs(30));
    assert_eq!(
        k::seqs(&all),
        (0..900).collect(),
        "every record at least once"
    );
    assert!(status.success(), "{status:?}");

    let mut first_seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut key_partition: BTreeMap<String, i32> = BTreeMap::new();
    for m in &all {
        let v = m.json();
        let user = v["user_id"].as_str().expect("user_id").to_string();
        assert_ne!(
            v["email"],
            format!("{user}@example.com").as_str(),
            "emails are masked"
        );
        assert_eq!(
            m.key_str().as_deref(),
            Some(user.as_str()),
            "the key is the user id"
        );
        assert!(
            m.headers
                .get("shard-id")
                .is_some_and(|h| h.starts_with("shardId-")),
            "{:?}",
            m.headers
        );
        assert!(
            m.headers
                .get("sequence-number")
                .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_digit()))
        );
        assert_eq!(
            *key_partition.entry(user.clone()).or_insert(m.partition),
            m.partition,
            "one partition per user"
        );
        let seq = v["seq"].as_u64().expect("seq");
        let seen = first_seen.entry(user).or_default();
        if !seen.contains(&seq) {
            seen.push(seq);
        }
    }
    // Per-user order: replays after the crash repeat records, but never reorder them.
    for (user, seqs) in &first_seen {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "user {user}: {seqs:?}"
        );
    }
    kinesis.delete(&stream);
}

#[test]
fn an_oversized_record_is_dead_lettered_and_the_rest_delivered() {
    let brokers = k::brokers();
    let topic = k::topic("big");
    let s = Scratch::new();
    let big = format!("{{\"seq\":1,\"pad\":\"{}\"}}", "x".repeat(1_200_000));
    s.write(
        "in/a.jsonl",
        &format!("{{\"seq\":0}}\n{big}\n{{\"seq\":2}}\n"),
    );
    s.write(
        "spec.yaml",
        &format!(
            "version: 1\nname: big\nsource:\n  type: file\n  paths: [in/*.jsonl]\nsink:\n  type: kafka\n  brokers: [{brokers}]\n  topic: {topic}\n  create_topic:\n    partitions: 1\noffsets:\n  store: file\n  path: offsets\nerrors:\n  tolerance: all\n  dead_letter:\n    type: file\n    path: dlq.jsonl\n"
        ),
    );
    s.run_ok(&["run", "spec.yaml"]);
    let dlq = s.lines("dlq.jsonl");
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert!(
        dlq[0].contains("message.max.bytes") && dlq[0].contains(&topic),
        "{}",
        &dlq[0][..300.min(dlq[0].len())]
    );
    let msgs = k::read(&brokers, &topic, 2, Duration::from_secs(20));
    let seqs: Vec<u64> = msgs.iter().map(|m| m.seq()).collect();
    assert_eq!(seqs, vec![0, 2]);
    assert_eq!(
        s.offsets("offsets", "big"),
        vec![("in/a.jsonl".to_string(), 3, true)]
    );
}

#[test]
fn secret_librdkafka_properties_never_show() {
    let (printed, err) = validate_print(
        "version: 1\nname: sec\nsource:\n  type: generator\n  count: 1\nsink:\n  type: kafka\n  brokers: [127.0.0.1:9092]\n  topic: t\n  properties:\n    sasl.password: hunter2\n    ssl.key.password: hunter3\n    security.protocol: SASL_SSL\n",
        &[],
    );
    let text = printed + &err;
    assert!(text.contains("sasl.password: <redacted>"), "{text}");
    sluice_test_kit::assert_hidden(&text, &["hunter2", "hunter3"]);
    assert!(text.contains("security.protocol: SASL_SSL"), "{text}");
}

#[test]
fn client_config_errors_never_echo_property_values() {
    // A misspelt property is refused by validation; properties librdkafka rejects at run time
    // (the OAuth/OIDC ones, unsupported in this build) are reported without their values.
    let s = Scratch::new();
    for (i, prop) in [
        "sasl.pasword",
        "sasl.oauthbearer.client.secret",
        "sasl.oauthbearer.assertion.private.key.pem",
    ]
    .into_iter()
    .enumerate()
    {
        let file = format!("spec{i}.yaml");
        s.write(
            &file,
            &format!(
                "version: 1\nname: sec{i}\nsource:\n  type: generator\n  count: 1\nsink:\n  type: kafka\n  brokers: [127.0.0.1:9]\n  topic: t\n  properties:\n    {prop}: hunter2\n"
            ),
        );
        let out = s.run_err(&["run", &file, "--log", "debug"]);
        let text = stdout(&out) + &stderr(&out);
        assert!(text.contains(prop), "the error names `{prop}`: {text}");
        sluice_test_kit::assert_hidden(&text, &["hunter2"]);
    }
}

#[test]
fn records_topic_from_may_not_write_go_to_the_error_policy() {
    let brokers = k::brokers();
    let (input, main, other, offsets) = (
        k::topic("in"),
        k::topic("main"),
        k::topic("other"),
        k::topic("offsets"),
    );
    let missing = k::topic("missing");
    k::create_topic(&brokers, &input, 1);
    k::create_topic(&brokers, &main, 1);
    k::create_topic(&brokers, &other, 1);
    let dest = |t: &str| vec![("dest".to_string(), t.to_string())];
    let records: Vec<k::Produce> = vec![
        (None, "{\"seq\":0}".into(), dest(&other)),
        (None, "{\"seq\":1}".into(), dest(&missing)),
        (None, "{\"seq\":2}".into(), dest(&offsets)),
        (None, "{\"seq\":3}".into(), vec![]),
        (None, "{\"seq\":4}".into(), dest("__consumer_offsets")),
        (None, "{\"seq\":5}".into(), dest(&other)),
    ];
    k::produce(&brokers, &input, &records, Some(0));
    let s = Scratch::with(
        "spec.yaml",
        &format!(
            "version: 1\nname: route\nsource:\n  type: kafka\n  brokers: [{brokers}]\n  topics: [{input}]\n  group: {input}\nsink:\n  type: kafka\n  brokers: [{brokers}]\n  topic: {main}\n  topic_from: {{header: dest}}\n  retry: {{max_retries: 1}}\noffsets:\n  store: kafka\n  brokers: [{brokers}]\n  topic: {offsets}\n  commit_interval: 100ms\nerrors:\n  tolerance: all\n  dead_letter:\n    type: file\n    path: dlq.jsonl\n"
        ),
    );
    let started = std::time::Instant::now();
    s.run_ok(&["run", "spec.yaml", "--max-records", "6"]);
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "a missing topic is not waited for: {:?}",
        started.elapsed()
    );
    let dlq = s.lines("dlq.jsonl");
    assert_eq!(dlq.len(), 3, "{dlq:#?}");
    assert!(
        dlq.iter()
            .any(|l| l.contains(&missing) && l.contains("does not exist")),
        "{dlq:#?}"
    );
    assert!(dlq.iter().any(|l| l.contains("offset store")), "{dlq:#?}");
    assert!(
        dlq.iter().any(|l| l.contains("internal to Kafka")),
        "{dlq:#?}"
    );
    let seqs = |t: &str, n: usize| -> Vec<u64> {
        k::read(&brokers, t, n, Duration::from_secs(20))
            .iter()
            .map(|m| m.seq())
            .collect()
    };
    assert_eq!(seqs(&other, 2), vec![0, 5]);
    assert_eq!(seqs(&main, 1), vec![3]);
    // Nothing reached the offset store's topic but the store's own entries.
    let store = k::read(&brokers, &offsets, 100, Duration::from_secs(3));
    assert!(
        store
            .iter()
            .all(|m| !String::from_utf8_lossy(&m.value).contains("seq")),
        "{store:?}"
    );
}

#[test]
fn a_stale_store_never_rewinds_the_consumer_group() {
    let brokers = k::brokers();
    let (input, group) = (k::topic("stale"), k::topic("group"));
    k::create_topic(&brokers, &input, 1);
    k::produce(&brokers, &input, &json_records(0..20), Some(0));
    let s = Scratch::with(
        "spec.yaml",
        &format!(
            "version: 1\nname: stale\nsource:\n  type: kafka\n  brokers: [{brokers}]\n  topics: [{input}]\n  group: {group}\n  rebalance_drain: 2s\nsink:\n  type: file\n  path: out.jsonl\noffsets:\n  store: file\n  path: offsets\n  commit_interval: 100ms\npipeline:\n  flush_interval: 20ms\n"
        ),
    );
    // This worker's store ends at offset 4 ...
    s.run_ok(&["run", "spec.yaml", "--max-records", "5"]);
    assert_eq!(
        s.offsets("offsets", "stale"),
        vec![(format!("{input}/0"), 4, false)]
    );
    // ... while another worker took the group to the end.
    k::commit_group_offset(&brokers, &group, &input, 0, 20);
    // This worker is assigned the partition, starts at the group's 20, reads nothing, and stops.
    let mut child = s
        .cmd(&["run", "spec.yaml", "--log", "info"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    let stderr_pipe = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr_pipe)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut log = String::new();
    let assigned = wait_for(Duration::from_secs(30), || {
        while let Ok(l) = rx.try_recv() {
            log.push_str(&l);
            log.push('\n');
        }
        log.contains("partition assigned")
    });
    assert!(assigned, "{log}");
    signal(&child, "-TERM");
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(status.success(), "{log}");
    assert_eq!(
        k::group_offsets(&brokers, &group, &input, 1),
        vec![20],
        "the group is not rewound to the stale store's offset"
    );
    assert_eq!(s.lines("out.jsonl").len(), 5, "nothing read twice");
}

#[test]
fn an_offset_topic_that_is_not_compacted_is_refused() {
    let brokers = k::brokers();
    let offsets = k::topic("offsets-delete");
    k::create_topic_with(&brokers, &offsets, 1, &[("cleanup.policy", "delete")]);
    let s = Scratch::with(
        "spec.yaml",
        &format!(
            "version: 1\nname: notcompact\nsource:\n  type: generator\n  count: 10\nsink:\n  type: file\n  path: out.jsonl\noffsets:\n  store: kafka\n  brokers: [{brokers}]\n  topic: {offsets}\n"
        ),
    );
    let out = s.run_err(&["run", "spec.yaml"]);
    assert!(
        stderr(&out).contains("cleanup.policy=delete"),
        "{}",
        stderr(&out)
    );
}
