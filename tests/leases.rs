//! Scale-out through shard leases: several `sluice run` workers share a Kinesis stream's shards
//! through the DynamoDB offsets table (kinesis-local and moto, started by `scripts/test.sh`).
//! Each test makes its own stream, table and workers; durations are short (3 s) so a test takes
//! seconds. Figures the tests measure are printed (`--nocapture` shows them).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is the test failing

mod common;
#[path = "common/dynamodb.rs"]
mod dynamo_support;
#[path = "common/kinesis.rs"]
mod kinesis_support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Child;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use common::*;
use dynamo_support::Dynamo;
use kinesis_support::*;

/// Lease duration of the tests' workers.
const DURATION: Duration = Duration::from_secs(3);

/// A lease row as the table holds it.
#[derive(Debug, Clone, Default)]
struct Row {
    owner: Option<String>,
    offset: Option<String>,
    finished: bool,
}

/// A stream, an offsets table and the workers sharing the stream.
struct Cluster {
    s: Scratch,
    k: Kinesis,
    d: Dynamo,
    stream: String,
    table: String,
    name: String,
    workers: Vec<Option<Child>>,
}

impl Cluster {
    fn new(shards: i32) -> Self {
        let k = Kinesis::new();
        let stream = k.create_stream(shards);
        Self {
            s: Scratch::new(),
            k,
            d: Dynamo::new(),
            stream,
            table: format!("leases-{:016x}", rand::random::<u64>()),
            name: "bridge".into(),
            workers: Vec::new(),
        }
    }

    fn worker_id(i: usize) -> String {
        format!("w{i}")
    }

    /// Writes worker `i`'s spec (its own output file) and starts it.
    fn start(&mut self, i: usize, lease_extra: &str) {
        let spec = format!(
            "version: 1\nname: {name}\nsource:\n  type: kinesis\n  stream: {stream}\n  start_position: trim_horizon\n  shard_discovery_interval: 500ms\n{kaws}sink:\n  type: file\n  path: out/w{i}.jsonl\n  envelope: true\noffsets:\n  store: dynamodb\n  table: {table}\n  create_table: true\n  commit_interval: 200ms\n{daws}  leases:\n    duration: {d}ms\n{lease_extra}pipeline:\n  flush_interval: 50ms\n  max_buffered: 1000\n",
            name = self.name,
            stream = self.stream,
            table = self.table,
            kaws = aws_yaml(&self.k.endpoint, "  "),
            daws = dynamo_support::aws_yaml(&self.d.endpoint, "  "),
            d = DURATION.as_millis(),
        );
        let path = format!("w{i}.yaml");
        self.s.write(&path, &spec);
        let mut c = self.s.cmd(&["run", "--no-progress", "--worker-id", &Self::worker_id(i), &path]);
        c.env("SLUICE_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(self.s.path(&format!("w{i}.log"))).expect("log"));
        let child = c.spawn().expect("spawn sluice");
        if self.workers.len() <= i {
            self.workers.resize_with(i + 1, || None);
        }
        self.workers[i] = Some(child);
    }

    fn child(&self, i: usize) -> &Child {
        self.workers[i].as_ref().expect("worker running")
    }

    /// The table's rows of the pipeline, by partition.
    fn rows(&self) -> BTreeMap<String, Row> {
        let out = self.d.rt.block_on(
            self.d
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#ns = :ns")
                .expression_attribute_names("#ns", "namespace")
                .expression_attribute_values(":ns", AttributeValue::S(self.name.clone()))
                .consistent_read(true)
                .send(),
        );
        let Ok(out) = out else {
            return BTreeMap::new(); // the table is not created yet
        };
        let s = |it: &HashMap<String, AttributeValue>, k: &str| match it.get(k) {
            Some(AttributeValue::S(v)) => Some(v.clone()),
            _ => None,
        };
        out.items()
            .iter()
            .map(|it| {
                (
                    s(it, "partition").unwrap_or_default(),
                    Row {
                        owner: s(it, "owner"),
                        offset: s(it, "offset"),
                        finished: matches!(it.get("finished"), Some(AttributeValue::Bool(true))),
                    },
                )
            })
            .collect()
    }

    /// Shards held by each worker (open shards only, unfinished rows).
    fn owners(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut by: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (p, r) in self.rows() {
            if let (Some(o), false) = (r.owner, r.finished) {
                by.entry(o).or_default().insert(p);
            }
        }
        by
    }

    /// Every open shard has one owner among `workers`, each holding 2 or 3 of 8 (or the share
    /// of `shards` among them).
    fn balanced(&self, workers: &[usize], shards: usize) -> bool {
        let by = self.owners();
        let ids: BTreeSet<String> = workers.iter().map(|i| Self::worker_id(*i)).collect();
        let held: usize = by.values().map(BTreeSet::len).sum();
        let lo = shards / workers.len();
        let hi = shards.div_ceil(workers.len());
        held == shards
            && by.keys().all(|o| ids.contains(o))
            && ids
                .iter()
                .all(|w| by.get(w).is_some_and(|s| (lo..=hi).contains(&s.len())))
    }

    /// Output records of worker `i`: (seq, shard, offset), complete lines only.
    fn output(&self, i: usize) -> Vec<(u64, String, String)> {
        let text = self.s.read(&format!("out/w{i}.jsonl"));
        let complete = &text[..text.rfind('\n').map_or(0, |n| n + 1)];
        complete
            .lines()
            .map(envelope)
            .map(|(seq, _, shard, offset)| (seq, shard, offset))
            .collect()
    }

    /// How many times each seq was delivered, over every worker's output.
    fn deliveries(&self) -> BTreeMap<u64, usize> {
        let mut n = BTreeMap::new();
        for i in 0..self.workers.len() {
            for (seq, _, _) in self.output(i) {
                *n.entry(seq).or_default() += 1;
            }
        }
        n
    }

    fn all_delivered(&self, total: u64) -> bool {
        let d = self.deliveries();
        (0..total).all(|s| d.contains_key(&s))
    }

    fn stop_all(&mut self) {
        for c in self.workers.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self, i: usize) -> String {
        self.s.read(&format!("w{i}.log"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
        self.k.delete(&self.stream);
    }
}

/// Kinesis sequence numbers are decimal strings of varying length: order by length, then text.
fn seq_key(s: &str) -> (usize, &str) {
    (s.len(), s)
}

#[test]
fn three_workers_share_eight_shards_one_owner_each() {
    let mut c = Cluster::new(8);
    for i in 0..3 {
        c.start(i, "");
    }
    c.k.put_seqs(&c.stream, 0..400, 40);
    let t = Instant::now();
    assert!(
        wait_for(Duration::from_secs(30), || c.balanced(&[0, 1, 2], 8)),
        "not balanced: {:?}\n{}",
        c.owners(),
        c.log(0)
    );
    println!("balanced 3 workers over 8 shards in {:?}: {:?}", t.elapsed(), c.owners());
    assert!(
        wait_for(Duration::from_secs(30), || c.all_delivered(400)),
        "missing records"
    );
    // Each record once: nobody read a shard another worker read.
    let dup: Vec<_> = c.deliveries().into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(dup.is_empty(), "records delivered twice: {dup:?}");
    // Shards that moved while balancing were handed over where the sink had acknowledged:
    // still no record twice (checked above).
    let moved: usize = (0..3)
        .map(|i| {
            let mine = &c.owners()[&Cluster::worker_id(i)];
            c.output(i)
                .into_iter()
                .map(|r| r.1)
                .collect::<BTreeSet<_>>()
                .difference(mine)
                .count()
        })
        .sum();
    println!("shards handed over while balancing: {moved}");
    // `offsets list` shows each lease's owner and expiry.
    let out = c.s.run(&["offsets", "list", "w0.yaml"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.contains("OWNER") && text.contains("LEASE EXPIRES"), "{text}");
    for i in 0..3 {
        assert!(text.contains(&Cluster::worker_id(i)), "{text}");
    }
}
