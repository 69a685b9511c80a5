//! Operating Sluice: the `--http` API read by a real Prometheus server, readiness, restarts with
//! backoff against a Kafka broker that comes late, and pipelines that fail alone.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is the test failing

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sluice_test_kit::http::{get_json, http, series};
use sluice_test_kit::kafka as k;
use sluice_test_kit::*;

/// A Prometheus server (Debian's `prometheus`, installed by scripts/lib/setup.sh) scraping one
/// target every second, with its storage in a temp dir; killed on drop.
struct Prometheus {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target_port: u16) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: sluice\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
            ),
        )
        .expect("config");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start prometheus (scripts/lib/setup.sh installs it)");
        let p = Self {
            port,
            child,
            _dir: dir,
        };
        assert!(
            wait_for(Duration::from_secs(30), || http(
                port,
                "GET",
                "/-/ready",
                &[]
            )
            .is_some_and(|(c, _)| c == 200)),
            "prometheus did not become ready"
        );
        p
    }

    /// The value of an instant query with one series, if it has one.
    fn value(&self, query: &str) -> Option<f64> {
        let encoded: String = query
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (_, v) = get_json(self.port, &format!("/api/v1/query?query={encoded}"))?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A spec named `name` from `source` (its keys, indented) to `out/data.jsonl`, committing to
/// the file store `offsets` every 100 ms and flushing every 50 ms.
fn to_file_spec(name: &str, source: &str) -> String {
    format!(
        "version: 1\nname: {name}\nsource:\n{source}sink:\n  type: file\n  path: out/data.jsonl\noffsets:\n  store: file\n  path: offsets\n  commit_interval: 100ms\npipeline:\n  flush_interval: 50ms\n"
    )
}

#[test]
fn prometheus_reads_the_record_counters_of_a_running_pipeline() {
    let s = Scratch::with(
        "spec.yaml",
        &to_file_spec("scraped", "  type: stdin\n  batch_size: 2\n"),
    );
    let (port, mut cmd) = s.http_cmd("spec.yaml");
    let mut child = cmd.stdin(Stdio::piped()).spawn().expect("spawn sluice");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut run = Running(child);
    let sent = 1234u64;
    let mut text = String::new();
    for i in 0..sent {
        text.push_str(&format!("{{\"seq\":{i}}}\n"));
    }
    stdin.write_all(text.as_bytes()).expect("write stdin");
    stdin.flush().expect("flush");
    let prom = Prometheus::start(port);
    // The pipeline stays up (stdin is open) while Prometheus scrapes it.
    let read = "sluice_source_records_total{pipeline=\"scraped\"}";
    let written = "sluice_sink_records_total{pipeline=\"scraped\"}";
    let bytes = "sluice_source_bytes_total{pipeline=\"scraped\"}";
    let up = "sluice_pipeline_up{pipeline=\"scraped\"}";
    assert!(
        wait_for(Duration::from_secs(60), || prom.value(read)
            == Some(sent as f64)
            && prom.value(written) == Some(sent as f64)
            && prom.value(up) == Some(1.0)),
        "prometheus saw read={:?} written={:?} up={:?}",
        prom.value(read),
        prom.value(written),
        prom.value(up)
    );
    assert_eq!(prom.value(bytes), Some((text.len() as u64 - sent) as f64));
    assert!(
        wait_for(Duration::from_secs(30), || prom
            .value("sluice_offsets_committed_timestamp_seconds{pipeline=\"scraped\"}")
            .is_some_and(|t| t > 1.7e9)),
        "no commit time"
    );
    drop(stdin);
    let status = wait_exit(&mut run.0, Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
    assert_eq!(s.lines("out/data.jsonl").len(), sent as usize);
}

#[test]
fn pause_commits_and_stops_reading_resume_goes_on_and_the_token_guards_control() {
    let s = Scratch::with(
        "spec.yaml",
        &to_file_spec(
            "api",
            "  type: generator\n  count: 3000\n  rate: 600\n  batch_size: 50\n",
        ),
    );
    let (port, mut cmd) = s.http_cmd("spec.yaml");
    let child = cmd
        .env("SLUICE_HTTP_TOKEN", "s3cret")
        .spawn()
        .expect("spawn sluice");
    let mut run = Running(child);
    assert!(
        wait_for(Duration::from_secs(30), || get_json(port, "/pipelines/api")
            .is_some_and(|(c, v)| c == 200
                && v["state"] == "running"
                && v["counts"]["committed"].as_u64() >= Some(300))),
        "{:?}",
        get_json(port, "/pipelines/api")
    );
    let (code, all) = get_json(port, "/pipelines").expect("list");
    assert_eq!((code, all[0]["name"].as_str()), (200, Some("api")));
    assert_eq!(http(port, "GET", "/health", &[]).map(|r| r.0), Some(200));
    assert_eq!(get_json(port, "/ready").map(|r| r.0), Some(200));
    assert_eq!(get_json(port, "/pipelines/nope").map(|r| r.0), Some(404));
    let (code, body) = http(port, "POST", "/pipelines/api/pause", &[]).expect("pause");
    assert_eq!(code, 401, "{body}");
    assert!(!body.contains("s3cret"));
    let auth = [("Authorization", "Bearer s3cret")];
    let (code, _) = http(port, "POST", "/pipelines/api/pause", &auth).expect("pause");
    assert_eq!(code, 202);
    assert!(
        wait_for(Duration::from_secs(30), || get_json(port, "/pipelines/api")
            .is_some_and(|(_, v)| v["state"] == "paused")),
        "not paused"
    );
    assert_eq!(get_json(port, "/ready").map(|r| r.0), Some(503));
    // Paused: everything read was delivered and committed, and nothing more is read.
    let (_, v) = get_json(port, "/pipelines/api").expect("status");
    let c = &v["counts"];
    assert_eq!(c["read"], c["committed"], "{v}");
    let paused_at = c["read"].as_u64().expect("read");
    assert!(paused_at < 3000, "paused too late to tell: {v}");
    let on_disk = s.offsets("offsets", "api");
    assert_eq!(
        on_disk.iter().map(|(_, o, _)| o + 1).sum::<u64>(),
        paused_at
    );
    // The API shows the same committed offsets as the store.
    let (code, offsets) = get_json(port, "/pipelines/api/offsets").expect("offsets");
    assert_eq!(code, 200);
    for (partition, offset, _) in &on_disk {
        assert_eq!(
            offsets[partition.as_str()]["offset"],
            offset.to_string(),
            "{offsets}"
        );
    }
    assert!(
        !wait_for(Duration::from_millis(500), || get_json(
            port,
            "/pipelines/api"
        )
        .is_some_and(|(_, v)| v["counts"]["read"] != paused_at)),
        "read on while paused"
    );
    let (code, _) = http(port, "POST", "/pipelines/api/resume", &auth).expect("resume");
    assert_eq!(code, 202);
    assert!(
        wait_for(Duration::from_secs(30), || get_json(port, "/pipelines/api")
            .is_some_and(|(_, v)| v["state"] == "running"
                && v["counts"]["committed"].as_u64() > Some(paused_at))),
        "not running on after resume"
    );
    // A restart drains, commits and rebuilds from the committed offsets: nothing is repeated.
    let (code, _) = http(port, "POST", "/pipelines/api/restart", &auth).expect("restart");
    assert_eq!(code, 202);
    let status = wait_exit(&mut run.0, Duration::from_secs(60));
    assert!(status.success(), "{status:?}");
    // Resumed from the committed offsets: every record once.
    let mut got = seqs(&s.lines("out/data.jsonl"));
    got.sort();
    assert_eq!(got, (0..3000).collect::<Vec<u64>>());
    let log = {
        let mut e = String::new();
        if let Some(mut err) = run.0.stderr.take() {
            let _ = err.read_to_string(&mut e);
        }
        e
    };
    sluice_test_kit::assert_hidden(&log, &["s3cret"]);
}

#[test]
fn one_pipeline_failing_for_good_lets_the_other_finish() {
    let s = Scratch::with(
        "good.yaml",
        "version: 1\nname: good\nsource:\n  type: generator\n  count: 3000\n  rate: 1500\n  batch_size: 100\nsink:\n  type: file\n  path: out/good.jsonl\noffsets:\n  store: file\n  path: offsets\n",
    );
    // A sink under a path that cannot be a folder: fails at once, and not retriably.
    s.write("blocker", "a file, not a folder");
    s.write(
        "bad.yaml",
        "version: 1\nname: bad\nsource:\n  type: generator\n  count: 100\nsink:\n  type: file\n  path: blocker/out.jsonl\noffsets:\n  store: file\n  path: offsets\n",
    );
    let out = s.run_err(&["run", "--no-progress", "good.yaml", "bad.yaml"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("pipeline `bad`"), "{err}");
    assert_eq!(s.lines("out/good.jsonl").len(), 3000, "{err}");
    assert_eq!(s.committed_records("offsets", "good"), 3000);
}

/// A pipeline from `source` into a one-partition topic on `brokers` (a private broker that may
/// start later), committing and restarting quickly.
fn kafka_sink_spec(
    name: &str,
    source: &str,
    brokers: &str,
    topic: &str,
    sink_extra: &str,
) -> String {
    format!(
        "version: 1\nname: {name}\nsource:\n{source}sink:\n  type: kafka\n  brokers: [{brokers}]\n  topic: {topic}\n  create_topic:\n    partitions: 1\n{sink_extra}offsets:\n  store: file\n  path: offsets\n  commit_interval: 100ms\nrestart:\n  initial_backoff: 200ms\n  max_backoff: 1s\n"
    )
}

#[test]
fn a_kafka_sink_whose_broker_comes_late_restarts_with_backoff_and_delivers_everything() {
    let (s, mut broker, brokers, topic) = k::private_broker("late", false);
    s.write(
        "spec.yaml",
        &kafka_sink_spec(
            "late",
            "  type: generator\n  count: 500\n  batch_size: 50\n",
            &brokers,
            &topic,
            "  retry:\n    max_retries: 0\n",
        ),
    );
    let (port, mut run) = s.spawn_http("spec.yaml");
    // Not ready while the broker is away, and the supervisor keeps trying (the sink's own
    // start-up retries are off, so each failed attempt reaches the supervisor).
    assert!(
        wait_for(Duration::from_secs(60), || get_json(
            port,
            "/pipelines/late"
        )
        .is_some_and(|(_, v)| v["restarts"].as_u64() >= Some(2)
            && v["last_error"].as_str().is_some_and(|e| e.contains(&topic)))),
        "no restarts: {:?}",
        get_json(port, "/pipelines/late")
    );
    let (code, body) = get_json(port, "/ready").expect("ready");
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["pipelines"][0]["name"], "late");
    assert!(body["pipelines"][0]["state"] != "running" || body["pipelines"][0]["up"] == false);
    broker.restart();
    let status = wait_exit(&mut run.0, Duration::from_secs(120));
    let mut err = String::new();
    if let Some(mut e) = run.0.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(status.success(), "{status:?}: {err}");
    let msgs = k::read(&brokers, &topic, 500, Duration::from_secs(30));
    assert_eq!(msgs.len(), 500);
    assert_eq!(s.committed_records("offsets", "late"), 500);
}

#[test]
fn ready_turns_200_once_the_pipeline_runs() {
    let (s, mut broker, brokers, topic) = k::private_broker("ready", false);
    s.write(
        "spec.yaml",
        &kafka_sink_spec("ready", "  type: stdin\n", &brokers, &topic, ""),
    );
    let (port, mut cmd) = s.http_cmd("spec.yaml");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sluice");
    let stdin = child.stdin.take().expect("stdin");
    let _run = Running(child);
    assert!(
        wait_for(Duration::from_secs(30), || get_json(port, "/ready")
            .is_some_and(|(c, _)| c == 503)),
        "not 503 while the broker is away"
    );
    broker.restart();
    assert!(
        wait_for(Duration::from_secs(60), || get_json(port, "/ready")
            .is_some_and(|(c, _)| c == 200)),
        "not 200 once the broker is there: {:?}",
        get_json(port, "/ready")
    );
    drop(stdin);
}

/// `sluice_source_lag_seconds{partition}` lines of a pipeline: shard → seconds.
fn lag_series(port: u16, pipeline: &str) -> std::collections::BTreeMap<String, f64> {
    series(port, "sluice_source_lag_seconds", pipeline)
}

#[test]
fn kinesis_shard_lag_is_exported_per_shard_and_falls_to_zero_when_caught_up() {
    let kin = kinesis::Kinesis::new();
    let stream = kin.stream_with_seqs(2, 0..600, 10);
    let s = Scratch::with(
        "spec.yaml",
        &to_file_spec(
            "lag",
            &format!(
                "  type: kinesis\n  stream: {stream}\n  start_position: trim_horizon\n  max_records: 20\n  interval: 200ms\n{aws}",
                aws = kinesis::aws_yaml(&kin.endpoint, "  "),
            ),
        ),
    );
    let (port, _run) = s.spawn_http("spec.yaml");
    let shards: Vec<String> = kin
        .shards(&stream)
        .iter()
        .map(|sh| sh.shard_id().to_string())
        .collect();
    let mut max_seen = 0.0f64;
    assert!(
        wait_for(Duration::from_secs(60), || {
            let lag = lag_series(port, "lag");
            max_seen = lag.values().copied().fold(max_seen, f64::max);
            s.lines("out/data.jsonl").len() == 600
                && shards.iter().all(|sh| lag.get(sh) == Some(&0.0))
        }),
        "lag per shard: {:?} (shards {shards:?}), {} records",
        lag_series(port, "lag"),
        s.lines("out/data.jsonl").len()
    );
    assert!(max_seen > 0.0, "a lag above 0 while catching up");
    let (_, status) = get_json(port, "/pipelines/lag").expect("status");
    assert_eq!(
        status["lag_seconds"]
            .get(shards[0].as_str())
            .and_then(|v| v.as_f64()),
        Some(0.0),
        "{status}"
    );
}

#[test]
fn restart_attempts_run_out_and_the_run_exits_non_zero() {
    // Nothing listens on this port: every start fails with a retriable error.
    let port = free_port();
    let s = Scratch::with(
        "spec.yaml",
        &format!(
            "version: 1\nname: gone\nsource:\n  type: kinesis\n  stream: anything\n  retries:\n    describe:\n      max_retries: 0\n{aws}sink:\n  type: file\n  path: out.jsonl\nrestart:\n  attempts: 2\n  initial_backoff: 10ms\n  max_backoff: 20ms\n",
            aws = kinesis::aws_yaml(&format!("http://127.0.0.1:{port}"), "  "),
        ),
    );
    let out = s.run_err(&["run", "--no-progress", "spec.yaml"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        err.matches("pipeline failed; restarting from committed offsets")
            .count(),
        2,
        "{err}"
    );
    assert!(err.contains("no restart attempts left"), "{err}");
    assert!(err.contains("pipeline `gone`"), "{err}");
}

#[test]
fn kafka_partition_lag_is_the_age_of_the_newest_record_read() {
    let brokers = k::brokers();
    let topic = k::topic("lag");
    k::create_topic(&brokers, &topic, 1);
    let records: Vec<k::Produce> = (0..100)
        .map(|i| (None, format!("{{\"seq\":{i}}}"), Vec::new()))
        .collect();
    let produced_at = std::time::Instant::now();
    k::produce(&brokers, &topic, &records, Some(0));
    let s = Scratch::with(
        "spec.yaml",
        &format!(
            "version: 1\nname: klag\nsource:\n  type: kafka\n  brokers: [{brokers}]\n  topics: [{topic}]\n  group: g-{topic}\nsink:\n  type: file\n  path: out/data.jsonl\noffsets:\n  store: file\n  path: offsets\n  commit_interval: 100ms\npipeline:\n  flush_interval: 20ms\n"
        ),
    );
    let (port, _run) = s.spawn_http("spec.yaml");
    let partition = format!("{topic}/0");
    assert!(
        wait_for(Duration::from_secs(60), || s.lines("out/data.jsonl").len()
            == 100
            && lag_series(port, "klag").contains_key(&partition)),
        "lag: {:?}",
        lag_series(port, "klag")
    );
    let lag = lag_series(port, "klag")[&partition];
    // The records were produced just before: their age is at most the time since then.
    assert!(
        lag >= 0.0 && lag <= produced_at.elapsed().as_secs_f64() + 1.0,
        "lag {lag}"
    );
}
