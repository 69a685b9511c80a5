//! Scale-out through shard leases: several `sluice run` workers share a Kinesis stream's shards
//! through the DynamoDB offsets table (kinesis-local and moto, started by `scripts/test.sh`).
//! Each test makes its own stream, table and workers; durations are short (3 s) so a test takes
//! seconds. Figures the tests measure are printed (`--nocapture` shows them).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is the test failing

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Child;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use sluice_test_kit::dynamodb::Dynamo;
use sluice_test_kit::kinesis::Kinesis;
use sluice_test_kit::*;

/// Lease duration of the tests' workers.
const DURATION: Duration = Duration::from_secs(3);

/// The tests measure takeover times and count duplicates: their workers run one test at a time,
/// not twenty processes side by side on two cores.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

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
    /// The Kinesis stream (a DynamoDB table's stream is the table's).
    stream: String,
    /// The spec's `source:` section.
    source: String,
    table: String,
    name: String,
    workers: Vec<Option<Child>>,
    /// Each worker's operations API port.
    ports: Vec<u16>,
}

impl Cluster {
    /// Workers reading a new Kinesis stream of `shards` shards.
    fn new(shards: i32) -> Self {
        let k = Kinesis::new();
        let stream = k.create_stream(shards);
        let source = format!(
            "source:\n  type: kinesis\n  stream: {stream}\n  start_position: trim_horizon\n  shard_discovery_interval: 500ms\n{}",
            aws_yaml(&k.endpoint, "  ")
        );
        Self::with(k, stream, source)
    }

    /// Three workers balanced over a new 8-shard stream, 300 records (seqs 0..300) delivered.
    fn three_running() -> Self {
        let mut c = Cluster::new(8);
        c.run_balanced(0);
        c
    }

    /// Starts workers `first..3` (plainly), puts seqs 0..300 and waits until the three share
    /// the 8 shards and everything is delivered.
    fn run_balanced(&mut self, first: usize) {
        for i in first..3 {
            self.start(i, "");
        }
        self.k.put_seqs(&self.stream, 0..300, 40);
        assert!(
            wait_for(Duration::from_secs(30), || self.balanced(&[0, 1, 2], 8)
                && self.all_delivered(300)),
            "not running: {:?}\n{}\n{}\n{}",
            self.owners(),
            self.log(0),
            self.log(1),
            self.log(2)
        );
    }

    /// Workers reading the stream of a new DynamoDB table keyed by a numeric `id`.
    fn cdc() -> (Self, String) {
        let d = Dynamo::new();
        let table = d.create_table("cdc", "id", true, true);
        let source = format!(
            "source:\n  type: dynamodb\n  table: {table}\n  mode: cdc\n  start_position: trim_horizon\n  shard_discovery_interval: 500ms\n  poll_interval: 100ms\n{}",
            aws_yaml(&d.endpoint, "  ")
        );
        (Self::with(Kinesis::new(), String::new(), source), table)
    }

    fn with(k: Kinesis, stream: String, source: String) -> Self {
        Self {
            s: Scratch::new(),
            k,
            d: Dynamo::new(),
            stream,
            source,
            table: unique_name("leases"),
            name: "bridge".into(),
            workers: Vec::new(),
            ports: Vec::new(),
        }
    }

    fn worker_id(i: usize) -> String {
        format!("w{i}")
    }

    /// Writes worker `i`'s spec (its own output file) and starts it.
    fn start(&mut self, i: usize, lease_extra: &str) {
        let spec = format!(
            "version: 1\nname: {name}\n{source}sink:\n  type: file\n  path: out/w{i}.jsonl\n  envelope: true\noffsets:\n  store: dynamodb\n  table: {table}\n  create_table: true\n  commit_interval: 200ms\n{daws}  leases:\n    duration: {d}ms\n{lease_extra}pipeline:\n  flush_interval: 50ms\n  max_buffered: 1000\n",
            name = self.name,
            source = self.source,
            table = self.table,
            daws = aws_yaml(&self.d.endpoint, "  "),
            d = DURATION.as_millis(),
        );
        let path = format!("w{i}.yaml");
        self.s.write(&path, &spec);
        let port = free_port();
        let http = format!("127.0.0.1:{port}");
        let id = Self::worker_id(i);
        let mut c = self.s.cmd(&[
            "run",
            "--no-progress",
            "--worker-id",
            &id,
            "--http",
            &http,
            &path,
        ]);
        c.env("SLUICE_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(self.s.path(&format!("w{i}.log"))).expect("log"));
        let child = c.spawn().expect("spawn sluice");
        if self.workers.len() <= i {
            self.workers.resize_with(i + 1, || None);
            self.ports.resize(i + 1, 0);
        }
        self.workers[i] = Some(child);
        self.ports[i] = port;
    }

    /// A metric of worker `i` from its `GET /metrics` (summed over its label sets); NaN, which
    /// no comparison accepts, when the worker does not answer.
    fn metric(&self, i: usize, name: &str) -> f64 {
        http::metric_sum(self.ports[i], name).unwrap_or(f64::NAN)
    }

    /// SIGTERM to worker `i`, which must drain, commit, release and exit cleanly.
    fn terminate(&mut self, i: usize) {
        signal(self.child(i), "-TERM");
        let mut w = self.workers[i].take().expect("worker running");
        let status = wait_exit(&mut w, Duration::from_secs(30));
        assert!(
            status.success(),
            "w{i} exited with {status}: {}",
            self.log(i)
        );
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
        complete.lines().map(parse).collect()
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
        if !self.stream.is_empty() {
            self.k.delete(&self.stream);
        }
    }
}

/// An output line: (seq, shard, offset). The seq is a Kinesis record's `seq`, or the `id` of
/// the item a DynamoDB stream record shows.
fn parse(line: &str) -> (u64, String, String) {
    let v: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}"));
    let seq = v["value"]["seq"]
        .as_u64()
        .or_else(|| v["value"]["new"]["id"].as_u64())
        .unwrap_or_else(|| panic!("no seq or id in {line}"));
    let m = &v["metadata"];
    let s = |k: &str| m[k].as_str().unwrap_or_default().to_string();
    (seq, s("shard-id"), s("offset"))
}

/// Kinesis sequence numbers are decimal strings of varying length: order by length, then text.
fn seq_key(s: &str) -> (usize, &str) {
    (s.len(), s)
}

#[test]
fn three_workers_share_eight_shards_one_owner_each() {
    let _serial = one_at_a_time();
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
    println!(
        "balanced 3 workers over 8 shards in {:?}: {:?}",
        t.elapsed(),
        c.owners()
    );
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
    let text = stdout(&c.s.run_ok(&["offsets", "list", "w0.yaml"]));
    assert!(
        text.contains("OWNER") && text.contains("LEASE EXPIRES"),
        "{text}"
    );
    for i in 0..3 {
        assert!(text.contains(&Cluster::worker_id(i)), "{text}");
    }
}

/// Waits until none of `shards` is owned by `gone` any more and each has another owner;
/// returns how long that took.
fn taken_over(c: &Cluster, gone: &str, shards: &BTreeSet<String>, limit: Duration) -> Duration {
    let t = Instant::now();
    let ok = wait_for(limit, || {
        let rows = c.rows();
        shards.iter().all(|p| {
            rows.get(p)
                .and_then(|r| r.owner.as_deref())
                .is_some_and(|o| o != gone)
        })
    });
    assert!(
        ok,
        "{gone}'s shards not taken over within {limit:?}: {:?}",
        c.owners()
    );
    t.elapsed()
}

#[test]
fn a_killed_worker_s_shards_are_taken_over_from_its_last_commit() {
    let _serial = one_at_a_time();
    let mut c = Cluster::three_running();
    // More records, and kill -9 while w0 reads them.
    let before = c.output(0).len();
    c.k.put_seqs(&c.stream, 300..1300, 40);
    assert!(wait_for(Duration::from_secs(10), || c.output(0).len() > before + 20));
    let mine = c.owners()["w0"].clone();
    signal(c.child(0), "-KILL");
    let _ = c.workers[0].take().map(|mut ch| ch.wait());
    // Its last commits: nobody else writes these rows before taking the lease.
    let last: BTreeMap<String, Option<String>> = c
        .rows()
        .into_iter()
        .filter(|(p, _)| mine.contains(p))
        .map(|(p, r)| (p, r.offset))
        .collect();
    let took = taken_over(&c, "w0", &mine, Duration::from_secs(30));
    let interval = DURATION / 3;
    println!(
        "kill -9: {} shards taken over in {took:?} (duration {DURATION:?}, renewal interval {interval:?})",
        mine.len()
    );
    // The bound: the lease's counter stops moving at most one interval before the kill; an
    // observer notices it unchanged for `duration`, at its next scan. Plus two seconds for a
    // loaded machine (the suite runs its workers side by side on two cores).
    assert!(
        took <= DURATION + interval * 2 + Duration::from_secs(2),
        "takeover took {took:?}"
    );
    // The others count what they took over, and hold every shard between them.
    assert!(
        wait_for(Duration::from_secs(10), || c
            .metric(1, "sluice_leases_held")
            + c.metric(2, "sluice_leases_held")
            == 8.0),
        "the survivors do not report 8 leases held"
    );
    let takeovers =
        c.metric(1, "sluice_lease_takeovers_total") + c.metric(2, "sluice_lease_takeovers_total");
    assert!(
        takeovers >= mine.len() as f64,
        "takeovers counted: {takeovers}"
    );
    c.k.put_seqs(&c.stream, 1300..1450, 40);
    assert!(
        wait_for(Duration::from_secs(60), || c.all_delivered(1450)),
        "records lost after the kill"
    );
    // Duplicates only past the killed worker's last commit of their shard.
    let counts = c.deliveries();
    let mut dups = 0;
    for i in 1..3 {
        for (seq, shard, offset) in c.output(i) {
            if counts[&seq] < 2 {
                continue;
            }
            dups += 1;
            assert!(
                mine.contains(&shard),
                "seq {seq} of {shard} delivered twice"
            );
            if let Some(Some(commit)) = last.get(&shard) {
                assert!(
                    seq_key(&offset) > seq_key(commit),
                    "seq {seq} at {offset} re-delivered though {shard} was committed up to {commit}"
                );
            }
        }
    }
    // What w0 wrote past its last commit is exactly what is re-delivered.
    let past: usize = c
        .output(0)
        .iter()
        .filter(|(_, shard, offset)| match last.get(shard) {
            Some(Some(commit)) => seq_key(offset) > seq_key(commit),
            Some(None) => true,
            None => false,
        })
        .count();
    assert_eq!(
        dups, past,
        "re-delivered records != what w0 wrote past its last commit"
    );
    println!("kill -9: {dups} records delivered twice = what w0 had written past its last commit");
}

#[test]
fn a_worker_stopped_with_sigterm_hands_its_shards_over_without_duplicates() {
    let _serial = one_at_a_time();
    let mut c = Cluster::three_running();
    c.k.put_seqs(&c.stream, 300..450, 40);
    let mine = c.owners()["w0"].clone();
    let takeovers = |c: &Cluster| {
        c.metric(1, "sluice_lease_takeovers_total") + c.metric(2, "sluice_lease_takeovers_total")
    };
    let before = takeovers(&c);
    c.terminate(0);
    let took = taken_over(&c, "w0", &mine, Duration::from_secs(30));
    println!(
        "SIGTERM: {} shards taken over {took:?} after w0 exited",
        mine.len()
    );
    assert!(
        took <= DURATION,
        "released leases are taken at once, not after expiry: {took:?}\n{}",
        c.log(0)
    );
    c.k.put_seqs(&c.stream, 450..600, 40);
    assert!(
        wait_for(Duration::from_secs(30), || c.all_delivered(600)),
        "records lost"
    );
    // A released lease is taken as free, which is not a takeover; an expired one is. The timing
    // above cannot tell them apart (an observer may judge a lease expired about one renewal
    // interval before `DURATION` after the exit), the counter can. It is read now, long after
    // the takeovers (a survivor counts one only after its write and read-back); one rebalancing
    // steal between the survivors may count, and w0 held at least 2 of the 8 shards.
    let counted = takeovers(&c) - before;
    assert!(counted.is_finite(), "a survivor's /metrics did not answer");
    assert!(
        counted <= 1.0,
        "w0's {} shards were taken as expired, not released: {counted} takeovers\n{}",
        mine.len(),
        c.log(0)
    );
    let dup: Vec<_> = c.deliveries().into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(
        dup.is_empty(),
        "records delivered twice after SIGTERM: {dup:?}\n{}\n{}\n{}",
        c.log(0),
        c.log(1),
        c.log(2)
    );
}

#[test]
fn a_paused_worker_whose_leases_were_taken_commits_nothing_more_and_stops_reading() {
    let _serial = one_at_a_time();
    let mut c = Cluster::new(8);
    // w0 asks for no leases back after its pause, so whatever it holds later it can only have
    // kept (which it must not). It starts first and takes every shard; the others ask it for
    // theirs.
    c.start(0, "    max_steals: 0\n");
    assert!(
        wait_for(Duration::from_secs(30), || c
            .owners()
            .get("w0")
            .is_some_and(|s| s.len() == 8)),
        "w0 did not take the shards: {:?}",
        c.owners()
    );
    c.run_balanced(1);
    c.k.put_seqs(&c.stream, 300..450, 40);
    let mine = c.owners()["w0"].clone();
    signal(c.child(0), "-STOP");
    let before = c.output(0).len();
    let took = taken_over(&c, "w0", &mine, Duration::from_secs(30));
    assert!(
        wait_for(Duration::from_secs(30), || c.all_delivered(450)),
        "records lost while w0 was paused"
    );
    let logged = c.log(0).len();
    signal(c.child(0), "-CONT");
    // Back, w0 finds its leases gone: by its own clock before any request, or at its next
    // renewal or commit, refused by the table's condition.
    assert!(
        wait_for(Duration::from_secs(10), || c.log(0)[logged..]
            .matches("lease lost")
            .count()
            >= mine.len()),
        "w0 did not notice its lost leases:\n{}",
        c.log(0)
    );
    c.k.put_seqs(&c.stream, 450..600, 40);
    // While the rest flows, w0 never shows as the owner of a lost shard: a commit of its would
    // write its id.
    let mut owned_again = Vec::new();
    let done = wait_for(Duration::from_secs(30), || {
        for (p, r) in c.rows() {
            if mine.contains(&p) && r.owner.as_deref() == Some("w0") {
                owned_again.push(p);
            }
        }
        c.all_delivered(600)
    });
    assert!(done, "records lost after w0 resumed");
    assert!(
        owned_again.is_empty(),
        "w0 wrote lost shards again: {owned_again:?}"
    );
    assert!(c.metric(0, "sluice_lease_losses_total") >= mine.len() as f64);
    assert_eq!(c.metric(0, "sluice_leases_held"), 0.0);
    let written: Vec<_> = c.output(0).into_iter().skip(before).collect();
    assert!(
        written.iter().all(|(seq, _, _)| *seq < 450),
        "w0 read records put after it noticed its lost leases: {:?}\n{}",
        written.iter().filter(|r| r.0 >= 450).collect::<Vec<_>>(),
        c.log(0)
    );
    let counts = c.deliveries();
    let twice = written.iter().filter(|(seq, _, _)| counts[seq] > 1).count();
    println!(
        "SIGSTOP past duration: {} shards taken over in {took:?}; after SIGCONT w0's sink still wrote {} records ({twice} of them also delivered by the new owners), none put after it noticed the loss",
        mine.len(),
        written.len()
    );
}

/// Each shard's parents, as the stream lists them now.
fn lineage(c: &Cluster) -> BTreeMap<String, Vec<String>> {
    c.k.shards(&c.stream)
        .iter()
        .map(|s| {
            let parents = s
                .parent_shard_id()
                .into_iter()
                .chain(s.adjacent_parent_shard_id())
                .map(str::to_string)
                .collect();
            (s.shard_id().to_string(), parents)
        })
        .collect()
}

/// Children whose lease was taken (or offset committed) while a parent's end was not committed.
fn early_children(c: &Cluster, lineage: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let rows = c.rows();
    let mut early = Vec::new();
    for (child, parents) in lineage {
        let started = rows
            .get(child)
            .is_some_and(|r| r.owner.is_some() || r.offset.is_some());
        for p in parents {
            if started && !rows.get(p).is_some_and(|r| r.finished) {
                early.push(format!("{child} before its parent {p}"));
            }
        }
    }
    early
}

/// Two open shards whose hash ranges touch.
fn adjacent_pair(c: &Cluster) -> (String, String) {
    let mut open: Vec<(u128, u128, String)> =
        c.k.open_shards(&c.stream)
            .iter()
            .map(|s| {
                let r = s.hash_key_range().expect("range");
                (
                    r.starting_hash_key().parse().expect("start"),
                    r.ending_hash_key().parse().expect("end"),
                    s.shard_id().to_string(),
                )
            })
            .collect();
    open.sort();
    open.windows(2)
        .find(|w| w[0].1 + 1 == w[1].0)
        .map(|w| (w[0].2.clone(), w[1].2.clone()))
        .expect("two adjacent open shards")
}

#[test]
fn a_split_and_a_merge_under_three_workers_read_parents_before_children() {
    let _serial = one_at_a_time();
    let mut c = Cluster::new(4);
    c.k.put_seqs(&c.stream, 0..100, 40);
    // A parent closed before any worker started is still read first.
    let first = c.k.open_shards(&c.stream)[0].clone();
    c.k.split(&c.stream, &first);
    c.k.put_seqs(&c.stream, 100..200, 40);
    for i in 0..3 {
        c.start(i, "");
    }
    let mut early = Vec::new();
    let lin = lineage(&c);
    let ok = wait_for(Duration::from_secs(30), || {
        early.extend(early_children(&c, &lin));
        c.all_delivered(200)
    });
    assert!(ok, "records lost around the split: {:?}", c.owners());
    // A merge while the three run.
    let (a, b) = adjacent_pair(&c);
    c.k.merge(&c.stream, &a, &b);
    c.k.put_seqs(&c.stream, 200..400, 40);
    let lin = lineage(&c);
    let ok = wait_for(Duration::from_secs(40), || {
        early.extend(early_children(&c, &lin));
        c.all_delivered(400)
    });
    assert!(ok, "records lost around the merge: {:?}", c.owners());
    assert!(
        early.is_empty(),
        "children read before their parents: {early:?}"
    );
    let finished: Vec<String> = c
        .rows()
        .into_iter()
        .filter(|(_, r)| r.finished)
        .map(|(p, _)| p)
        .collect();
    let dups = c.deliveries().values().filter(|n| **n > 1).count();
    println!(
        "split + merge under 3 workers: 400 records delivered ({dups} twice), parents finished first: {finished:?}"
    );
    assert_eq!(
        dups,
        0,
        "a lease moved with duplicates\n{}\n{}\n{}",
        c.log(0),
        c.log(1),
        c.log(2)
    );
}

#[test]
fn two_workers_share_a_dynamodb_stream_and_hand_it_over_on_sigterm() {
    let _serial = one_at_a_time();
    let (mut c, table) = Cluster::cdc();
    for i in 0..2 {
        c.start(i, "");
    }
    c.d.put_ids(&table, 0..100);
    assert!(
        wait_for(Duration::from_secs(30), || c.all_delivered(100)),
        "changes lost: {:?}\n{}",
        c.owners(),
        c.log(0)
    );
    // Every open shard has one owner.
    let owners = c.owners();
    let held: Vec<&String> = owners.values().flatten().collect();
    let distinct: BTreeSet<&String> = held.iter().copied().collect();
    assert_eq!(
        held.len(),
        distinct.len(),
        "a shard with two owners: {owners:?}"
    );
    // The worker holding the shards stops; the other takes them at once, from its commit.
    let (busy, mine) = owners
        .iter()
        .max_by_key(|(_, s)| s.len())
        .expect("an owner");
    let i: usize = busy.trim_start_matches('w').parse().expect("worker id");
    let mine = mine.clone();
    c.terminate(i);
    let took = taken_over(&c, busy, &mine, Duration::from_secs(30));
    c.d.put_ids(&table, 100..200);
    assert!(
        wait_for(Duration::from_secs(30), || c.all_delivered(200)),
        "changes lost after the handover"
    );
    let dup: Vec<_> = c.deliveries().into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(dup.is_empty(), "changes delivered twice: {dup:?}");
    println!(
        "DynamoDB Streams, 2 workers: {} shard(s) handed over {took:?} after SIGTERM, 200 changes once each",
        mine.len()
    );
}

#[test]
fn validate_refuses_leases_where_they_cannot_work() {
    let s = Scratch::new();
    let kinesis = "source:\n  type: kinesis\n  stream: s\n";
    let dynamo = "offsets:\n  store: dynamodb\n  table: offsets\n  leases:\n    duration: 10s\n";
    let cases = [
        (
            "file-store",
            format!("{kinesis}offsets:\n  store: file\n  leases:\n    duration: 10s\n"),
            "need `store: dynamodb`",
        ),
        (
            "kafka",
            format!(
                "source:\n  type: kafka\n  brokers: [b:9092]\n  topics: [t]\n  group: g\n{dynamo}"
            ),
            "consumer group",
        ),
        (
            "generator",
            format!("source:\n  type: generator\n{dynamo}"),
            "has none",
        ),
        (
            "snapshot",
            format!("source:\n  type: dynamodb\n  table: orders\n  mode: snapshot\n{dynamo}"),
            "mode: cdc",
        ),
        (
            "efo-lazy",
            format!("{kinesis}  reader: efo\n  consumer_name: c\n{dynamo}"),
            "registration: eager",
        ),
        (
            "short",
            format!("{kinesis}{}", dynamo.replace("10s", "100ms")),
            "at least 300ms",
        ),
    ];
    for (name, body, want) in cases {
        let file = format!("{name}.yaml");
        s.write(
            &file,
            &format!("version: 1\nname: p\n{body}sink: {{type: stdout}}\n"),
        );
        let out = s.run_err(&["validate", &file]);
        let err = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            err.contains(want) && err.contains("offsets.leases"),
            "{name}: {err}"
        );
        assert!(
            err.contains(&format!("{name}.yaml:")),
            "{name}: not located: {err}"
        );
    }
    // `--until-caught-up` stops at one process's tip: refused with leases.
    s.write(
        "caught.yaml",
        &format!("version: 1\nname: p\n{kinesis}{dynamo}sink: {{type: stdout}}\n"),
    );
    let out = s.run_err(&["validate", "--until-caught-up", "caught.yaml"]);
    let err = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        err.contains("--until-caught-up") && err.contains("caught.yaml:"),
        "{err}"
    );
    // Kinesis and DynamoDB Streams with the dynamodb store pass.
    for (name, src) in [
        ("ok-kinesis", kinesis.to_string()),
        (
            "ok-cdc",
            "source:\n  type: dynamodb\n  table: orders\n  mode: cdc\n".to_string(),
        ),
    ] {
        let file = format!("{name}.yaml");
        s.write(
            &file,
            &format!("version: 1\nname: p\n{src}{dynamo}sink: {{type: stdout}}\n"),
        );
        s.run_ok(&["validate", &file]);
    }
}

#[test]
fn efo_readers_hand_shards_over_on_sigterm_without_duplicates() {
    let _serial = one_at_a_time();
    let k = Kinesis::new();
    let stream = k.create_stream(4);
    let source = format!(
        "source:\n  type: kinesis\n  stream: {stream}\n  start_position: trim_horizon\n  shard_discovery_interval: 500ms\n  reader: efo\n  consumer_name: leases-efo\n  registration: eager\n{}",
        aws_yaml(&k.endpoint, "  ")
    );
    let mut c = Cluster::with(k, stream, source);
    for i in 0..2 {
        c.start(i, "");
    }
    c.k.put_seqs(&c.stream, 0..200, 40);
    assert!(
        wait_for(Duration::from_secs(40), || c.balanced(&[0, 1], 4)
            && c.all_delivered(200)),
        "not running: {:?}\n{}",
        c.owners(),
        c.log(0)
    );
    let mine = c.owners()["w0"].clone();
    c.terminate(0);
    let took = taken_over(&c, "w0", &mine, Duration::from_secs(30));
    c.k.put_seqs(&c.stream, 200..400, 40);
    assert!(
        wait_for(Duration::from_secs(40), || c.all_delivered(400)),
        "records lost: {}",
        c.log(1)
    );
    let dup: Vec<_> = c.deliveries().into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(dup.is_empty(), "records delivered twice: {dup:?}");
    println!(
        "EFO, 2 workers on 4 shards: {} shards handed over {took:?} after SIGTERM, 400 records once each",
        mine.len()
    );
}
