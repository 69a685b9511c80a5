//! Chaos: the Kinesis → Kafka bridge killed with SIGKILL at random moments while records flow,
//! then finished. Every record arrives, first deliveries keep per-key order, and what repeats is
//! bounded by what a kill can have left uncommitted (one commit interval and the batches in flight).
//! Runs against kinesis-local and the tansu broker (started by `scripts/test.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is the test failing

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::Rng;
use sluice_test_kit::kafka as k;
use sluice_test_kit::*;

const TOTAL: u64 = 3000;
const KILLS: usize = 8;
const USERS: u64 = 17;

fn clicks(seqs: std::ops::Range<u64>) -> Vec<(String, Vec<u8>)> {
    seqs.map(|s| {
        let user = format!("u{}", s % USERS);
        (
            user.clone(),
            format!(r#"{{"seq":{s},"user_id":"{user}"}}"#).into_bytes(),
        )
    })
    .collect()
}

#[test]
fn a_bridge_killed_at_random_moments_delivers_everything_once_in_order_with_bounded_repeats() {
    let started = Instant::now();
    let brokers = k::brokers();
    let kinesis = kinesis::Kinesis::new();
    let stream = kinesis.create_stream(2);
    let topic = k::topic("chaos");
    let s = Scratch::with(
        "bridge.yaml",
        &format!(
            "version: 1\nname: chaos\nsource:\n  type: kinesis\n  stream: {stream}\n  start_position: trim_horizon\n{aws}format:\n  decode: json\n  encode: json\npartitioner:\n  fields: [user_id]\nsink:\n  type: kafka\n  brokers: [{brokers}]\n  topic: {topic}\n  key: partition_key\n  create_topic:\n    partitions: 4\noffsets:\n  store: file\n  path: offsets\n  commit_interval: 300ms\npipeline:\n  flush_interval: 50ms\n",
            aws = kinesis::aws_yaml(&kinesis.endpoint, "  "),
        ),
    );
    // Records keep arriving while the bridge is killed: 100 every 250 ms.
    let writer = {
        let stream = stream.clone();
        std::thread::spawn(move || {
            let kinesis = kinesis::Kinesis::new();
            for from in (0..TOTAL).step_by(100) {
                kinesis.put(&stream, &clicks(from..from + 100));
                // Pacing the producer, not waiting for a condition.
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };

    let mut rng = rand::rng();
    let mut delivered = 0;
    for kill in 0..KILLS {
        let mut run = s.spawn(&["run", "bridge.yaml"]);
        // Let this run deliver something new, then kill it at a random moment.
        let got = k::read_until(&brokers, &topic, Duration::from_secs(60), |m| {
            k::seqs(m).len() > delivered
        });
        let now = k::seqs(&got).len();
        assert!(now > delivered, "run {kill} delivered nothing new");
        delivered = now;
        std::thread::sleep(Duration::from_millis(rng.random_range(0..1500)));
        run.kill().expect("kill -9");
        run.wait().expect("reaped");
    }
    writer.join().expect("writer");

    // A last run finishes the stream and stops cleanly.
    let mut run = s.spawn(&["run", "bridge.yaml"]);
    let all = k::read_until(&brokers, &topic, Duration::from_secs(90), |m| {
        k::seqs(m).len() as u64 >= TOTAL
    });
    signal(&run, "-TERM");
    let status = wait_exit(&mut run, Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
    assert_eq!(
        k::seqs(&all),
        (0..TOTAL).collect(),
        "every record at least once"
    );

    // First deliveries keep per-key order (a key's records share a shard and a Kafka partition).
    let mut first_seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut copies: BTreeMap<u64, usize> = BTreeMap::new();
    let mut partition_of: BTreeMap<String, i32> = BTreeMap::new();
    for m in &all {
        let seq = m.seq();
        let user = m.json()["user_id"].as_str().expect("user_id").to_string();
        assert_eq!(
            *partition_of.entry(user.clone()).or_insert(m.partition),
            m.partition,
            "one Kafka partition per user"
        );
        *copies.entry(seq).or_default() += 1;
        if copies[&seq] == 1 {
            first_seen.entry(user).or_default().push(seq);
        }
    }
    for (user, seqs) in &first_seen {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "user {user}: {seqs:?}"
        );
    }
    // Repeats: a kill can only re-deliver what it left uncommitted, so no record comes more than
    // once per kill, and all repeats together stay far below re-reading from the start (which
    // would repeat about TOTAL * KILLS / 2 records).
    let repeats = all.len() - TOTAL as usize;
    let most = copies.values().max().copied().unwrap_or(0);
    eprintln!(
        "chaos: {KILLS} kills, {} records delivered, {repeats} repeats ({} per kill), at most {most} copies, {:.0?}",
        all.len(),
        repeats / KILLS,
        started.elapsed()
    );
    assert!(most <= KILLS + 1, "a record came {most} times");
    assert!(
        repeats <= KILLS * 600,
        "{repeats} repeats for {KILLS} kills: commits are not keeping up"
    );
    kinesis.delete(&stream);
}
