//! End-to-end tests of the `sluice` binary with the built-in connectors: delivery, crash
//! recovery, shutdown, bounded runs, the error policy and the offsets commands.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is the test failing

use std::collections::BTreeSet;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use sluice_test_kit::*;

fn generator_spec(name: &str, count: Option<u64>, partitions: u32, rate: Option<u64>) -> String {
    let mut s = format!(
        "version: 1\nname: {name}\nsource:\n  type: generator\n  partitions: {partitions}\n  batch_size: 200\n"
    );
    if let Some(c) = count {
        s.push_str(&format!("  count: {c}\n"));
    }
    if let Some(r) = rate {
        s.push_str(&format!("  rate: {r}\n"));
    }
    s.push_str(
        "format:\n  decode: json\n  encode: json\nsink:\n  type: file\n  path: out/data.jsonl\noffsets:\n  store: file\n  path: offsets\n  commit_interval: 100ms\npipeline:\n  flush_interval: 50ms\n  max_buffered: 1000\n",
    );
    s
}

#[test]
fn a_finite_generator_delivers_every_record_once_and_records_finished_partitions() {
    let s = Scratch::with("spec.yaml", &generator_spec("gen", Some(10_000), 4, None));
    let out = s.run_ok(&["run", "spec.yaml"]);
    assert!(stderr(&out).contains("10000 committed"), "{}", stderr(&out));
    let got = seqs(&s.lines("out/data.jsonl"));
    assert_eq!(got.len(), 10_000);
    assert_eq!(
        got.iter().copied().collect::<BTreeSet<_>>(),
        (0..10_000).collect()
    );
    // Order is kept per source partition.
    for p in 0..4 {
        let part: Vec<u64> = got.iter().copied().filter(|s| s % 4 == p).collect();
        assert!(
            part.windows(2).all(|w| w[0] < w[1]),
            "partition {p} out of order"
        );
    }
    let offs = s.offsets("offsets", "gen");
    assert_eq!(offs.len(), 4);
    assert!(
        offs.iter().all(|(_, o, fin)| *o == 2499 && *fin),
        "{offs:?}"
    );
    // A second run has nothing left to do.
    s.run_ok(&["run", "spec.yaml"]);
    assert_eq!(s.lines("out/data.jsonl").len(), 10_000);
}

#[test]
fn kill_9_in_the_middle_then_restart_loses_nothing() {
    let s = Scratch::with(
        "spec.yaml",
        &generator_spec("crash", Some(40_000), 3, Some(20_000)),
    );
    let mut child = s.spawn(&["run", "spec.yaml"]);
    assert!(
        wait_for(Duration::from_secs(30), || s.lines("out/data.jsonl").len()
            > 8_000
            && !s.offsets("offsets", "crash").is_empty()),
        "no progress before the kill"
    );
    child.kill().expect("kill -9");
    child.wait().expect("reaped");
    let before = s.lines("out/data.jsonl").len();
    assert!(before < 40_000, "the run finished before the kill");
    let committed: u64 = s.committed_records("offsets", "crash");
    assert!(
        committed as usize <= before,
        "committed past what was written"
    );

    s.run_ok(&["run", "spec.yaml"]);
    let got = seqs(&s.lines("out/data.jsonl"));
    let unique: BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(unique, (0..40_000).collect(), "every seq at least once");
    let dups = got.len() - unique.len();
    assert!(
        dups <= before - committed as usize,
        "only records after the last commit are re-delivered ({dups} duplicates)"
    );
}

#[test]
fn sigterm_drains_commits_and_exits_zero() {
    let s = Scratch::with("spec.yaml", &generator_spec("drain", None, 2, Some(5_000)));
    let mut child = s.spawn(&["run", "spec.yaml"]);
    assert!(wait_for(Duration::from_secs(30), || s
        .lines("out/data.jsonl")
        .len()
        > 1_000));
    signal(&child, "-TERM");
    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert!(status.success(), "exit {status:?}");
    let lines = s.lines("out/data.jsonl").len() as u64;
    let committed: u64 = s.committed_records("offsets", "drain");
    assert_eq!(
        committed, lines,
        "a clean stop commits exactly what was written"
    );
}

#[test]
fn max_records_stops_after_exactly_n_committed_and_the_next_run_continues() {
    let s = Scratch::with("spec.yaml", &generator_spec("bounded", None, 3, None));
    for round in 1..=2u64 {
        s.run_ok(&["run", "spec.yaml", "--max-records", "5000"]);
        let got = seqs(&s.lines("out/data.jsonl"));
        assert_eq!(got.len() as u64, 5000 * round);
        let unique: BTreeSet<u64> = got.iter().copied().collect();
        assert_eq!(unique.len(), got.len(), "no duplicates across bounded runs");
        let committed: u64 = s.committed_records("offsets", "bounded");
        assert_eq!(committed, 5000 * round);
    }
}

const BAD_INPUT: &str = "{\"n\":1}\n{\"n\":2}\n{\"n\":3,\n{\"n\":4}\n{\"n\":5}\n";

fn file_spec(name: &str, tolerance: &str) -> String {
    format!(
        "version: 1\nname: {name}\nsource:\n  type: file\n  paths: [in/*.jsonl]\n  batch_size: 1\nformat:\n  decode: json\nsink:\n  type: file\n  path: out/data.jsonl\noffsets:\n  store: file\n  path: offsets\nerrors:\n  tolerance: {tolerance}\n  dead_letter:\n    type: file\n    path: dlq.jsonl\n"
    )
}

/// Runs `spec.yaml` in `s`, which must fail: its stderr.
fn run_fails(s: &Scratch) -> String {
    let out = s.run_err(&["run", "spec.yaml"]);
    stderr(&out)
}

#[test]
fn tolerance_none_stops_at_the_bad_record_and_commits_nothing_past_it() {
    let s = Scratch::with("in/a.jsonl", BAD_INPUT);
    s.write("spec.yaml", &file_spec("strict", "none"));
    let err = run_fails(&s);
    assert!(
        err.contains("partition in/a.jsonl offset 3") && err.contains("invalid JSON"),
        "{err}"
    );
    let offs = s.offsets("offsets", "strict");
    assert_eq!(offs, vec![("in/a.jsonl".to_string(), 2, false)]);
    assert!(!s.path("dlq.jsonl").exists() || s.read("dlq.jsonl").is_empty());
}

#[test]
fn tolerance_all_dead_letters_the_bad_record_and_goes_on() {
    let s = Scratch::with("in/a.jsonl", BAD_INPUT);
    s.write("spec.yaml", &file_spec("lenient", "all"));
    s.run_ok(&["run", "spec.yaml"]);
    assert_eq!(s.lines("out/data.jsonl").len(), 4);
    let dlq = s.lines("dlq.jsonl");
    assert_eq!(dlq.len(), 1);
    let entry: serde_json::Value = serde_json::from_str(&dlq[0]).expect("dlq JSON");
    assert_eq!(entry["stage"], "decode json");
    assert_eq!(entry["offset"], "3");
    assert_eq!(entry["partition"], "in/a.jsonl");
    assert_eq!(entry["value"], "{\"n\":3,");
    assert!(
        entry["error"]
            .as_str()
            .expect("error")
            .contains("invalid JSON")
    );
    assert_eq!(
        s.offsets("offsets", "lenient"),
        vec![("in/a.jsonl".to_string(), 5, true)]
    );
}

#[test]
fn csv_files_become_json_and_envelopes_carry_metadata() {
    let s = Scratch::with("in/users.csv", "id,name\n1,Ada\n2,\"Lovelace, A\"\n");
    s.write(
        "spec.yaml",
        "version: 1\nname: csv\nsource: {type: file, paths: [in/users.csv]}\nformat:\n  decode: csv\n  encode: json\n  csv: {columns: [id, name], header: true}\nsink: {type: file, path: out/users.jsonl, envelope: true}\npartitioner: {fields: [id]}\noffsets: {store: memory}\n",
    );
    s.run_ok(&["run", "spec.yaml"]);
    let lines = s.lines("out/users.jsonl");
    assert_eq!(lines.len(), 2);
    let v: serde_json::Value = serde_json::from_str(&lines[1]).expect("json");
    assert_eq!(
        v["value"],
        serde_json::json!({"id": "2", "name": "Lovelace, A"})
    );
    assert_eq!(v["partition_key"], "2");
    assert_eq!(v["metadata"]["offset"], "3");
    assert_eq!(v["metadata"]["partition"], "in/users.csv");
}

#[test]
fn several_pipelines_run_in_one_process() {
    let s = Scratch::with(
        "a.yaml",
        &generator_spec("a", Some(3000), 2, None).replace("out/data", "out/a"),
    );
    s.write(
        "b.yaml",
        &generator_spec("b", Some(2000), 1, None).replace("out/data", "out/b"),
    );
    s.run_ok(&["run", "a.yaml", "b.yaml"]);
    assert_eq!(s.lines("out/a.jsonl").len(), 3000);
    assert_eq!(s.lines("out/b.jsonl").len(), 2000);
}

#[test]
fn an_invalid_spec_starts_nothing() {
    let s = Scratch::with("good.yaml", &generator_spec("good", Some(100), 1, None));
    s.write(
        "bad.yaml",
        "version: 1\nname: bad\nsource: {type: generator, cont: 1}\nsink: {type: stdout}\n",
    );
    let out = s.run_err(&["run", "good.yaml", "bad.yaml"]);
    assert!(
        stderr(&out)
            .contains("bad.yaml:3:27: source.cont: unknown key `cont`; did you mean `count`?"),
        "{}",
        stderr(&out)
    );
    assert!(
        !s.path("out/data.jsonl").exists(),
        "the valid pipeline must not have run"
    );
}

#[test]
fn a_corrupt_offset_file_is_reported_not_reset() {
    let s = Scratch::with("spec.yaml", &generator_spec("torn", Some(100), 1, None));
    s.write("offsets/torn.offsets.json", "{\"version\": 1, \"names");
    let err = run_fails(&s);
    assert!(
        err.contains("corrupt") && err.contains("refusing to start over"),
        "{err}"
    );
    assert!(!s.path("out/data.jsonl").exists());
}

#[test]
fn offsets_list_reset_and_prune() {
    let s = Scratch::with("spec.yaml", &generator_spec("ops", Some(100), 2, None));
    s.run_ok(&["run", "spec.yaml"]);

    let table = stdout(&s.run_ok(&["offsets", "list", "spec.yaml"]));
    assert!(
        table.contains("NAMESPACE") && table.contains("ops") && table.contains("49"),
        "{table}"
    );

    s.run_ok(&[
        "offsets",
        "reset",
        "spec.yaml",
        "--partition",
        "1",
        "--to",
        "9",
    ]);
    assert_eq!(
        s.offsets("offsets", "ops"),
        vec![("0".to_string(), 49, true), ("1".to_string(), 9, false)]
    );
    // Resuming after offset 9 of partition 1 re-delivers its records 10..49 (seq 21, 23, ... 99).
    s.run_ok(&["run", "spec.yaml"]);
    assert_eq!(s.lines("out/data.jsonl").len(), 140);

    let dry = stderr(&s.run_ok(&[
        "offsets",
        "prune",
        "spec.yaml",
        "--older-than",
        "1h",
        "--dry-run",
    ]));
    assert!(dry.contains("nothing to prune"), "{dry}");
    s.run_err(&["offsets", "prune", "spec.yaml"]);
    assert_eq!(s.offsets("offsets", "ops").len(), 2);
    s.run_ok(&["offsets", "prune", "spec.yaml", "--yes"]);
    assert!(s.offsets("offsets", "ops").is_empty());
}

/// `sluice run` of `spec` in a new scratch folder, with its stdin piped for the test to write.
fn run_fed(spec: &str, stdout: Stdio, stderr: Stdio) -> (Scratch, std::process::Child) {
    let s = Scratch::with("spec.yaml", spec);
    let child = s
        .cmd(&["run", "spec.yaml"])
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("spawn");
    (s, child)
}

#[test]
fn stdin_to_stdout() {
    let (_s, mut child) = run_fed(
        "version: 1\nname: pipe\nsource: {type: stdin, batch_size: 1}\nformat: {decode: json, encode: json}\nsink: {type: stdout}\noffsets: {store: memory}\n",
        Stdio::piped(),
        Stdio::inherit(),
    );
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"{\"a\": 1}\n\n{\"b\":\n")
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(
        !out.status.success(),
        "the bad second record stops the pipeline"
    );
    assert_eq!(stdout(&out), "{\"a\": 1}\n");
}

#[test]
fn sigterm_with_an_idle_open_stdin_drains_and_exits_zero() {
    let (s, mut child) = run_fed(
        "version: 1\nname: idle-stdin\nsource: {type: stdin, batch_size: 1}\nsink: {type: file, path: out/data.jsonl}\noffsets: {store: file, path: offsets, commit_interval: 100ms}\npipeline: {flush_interval: 20ms}\n",
        Stdio::null(),
        Stdio::null(),
    );
    // Kept open (and idle) until the end of the test.
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"{\"n\":1}\n").expect("write");
    stdin.flush().expect("flush");
    assert!(
        wait_for(Duration::from_secs(30), || s.lines("out/data.jsonl").len()
            == 1
            && s.offsets("offsets", "idle-stdin")
                == [("stdin".to_string(), 1, false)]),
        "the first line is delivered and committed"
    );
    signal(&child, "-TERM");
    let status = wait_exit(&mut child, Duration::from_secs(5));
    assert!(status.success(), "exit {status:?}");
    drop(stdin);
}

#[test]
fn max_records_zero_delivers_and_commits_nothing() {
    let s = Scratch::new();
    // An empty file's first (and only) batch is an end-of-partition marker with an offset:
    // `--max-records 0` must not commit even that.
    s.write("in/empty.jsonl", "");
    s.write("in/full.jsonl", BAD_INPUT);
    s.write("spec.yaml", &file_spec("zero", "all"));
    s.run_ok(&["run", "spec.yaml", "--max-records", "0"]);
    assert!(s.lines("out/data.jsonl").is_empty(), "nothing delivered");
    assert!(
        s.offsets("offsets", "zero").is_empty(),
        "nothing committed: {:?}",
        s.offsets("offsets", "zero")
    );
}

#[test]
fn jq_transforms_edit_filter_fan_out_and_dead_letter_through_the_binary() {
    let s = Scratch::with(
        "in/a.jsonl",
        "{\"id\":1,\"user\":\"a\",\"email\":\"A@X\",\"tags\":[\"t1\",\"t2\"]}\n{\"id\":2,\"user\":\"b\",\"email\":\"b@x\",\"drop\":true,\"tags\":[\"t0\"]}\n{\"id\":3,\"user\":\"c\",\"email\":3,\"tags\":[\"t3\"]}\n",
    );
    s.write(
        "spec.yaml",
        "version: 1\nname: jq\nsource: {type: file, paths: [in/*.jsonl]}\nformat: {decode: json, encode: json}\ntransforms:\n  - jq: 'select(.drop | not) | .email |= ascii_downcase'\n  - jq: '.tags[] as $t | {value: {id, tag: $t, line: $meta.offset}, key: .user, headers: {tag: $t}}'\n    output: envelope\nsink: {type: file, path: out/data.jsonl, envelope: true}\noffsets: {store: file, path: offsets}\nerrors:\n  tolerance: all\n  dead_letter: {type: file, path: dlq.jsonl}\n",
    );
    s.run_ok(&["run", "spec.yaml"]);
    let got: Vec<serde_json::Value> = s
        .lines("out/data.jsonl")
        .iter()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    // Record 1 fans out into one record per tag, keyed by user; record 2 is dropped.
    let values: Vec<_> = got.iter().map(|v| v["value"].clone()).collect();
    assert_eq!(
        values,
        vec![
            serde_json::json!({"id": 1, "tag": "t1", "line": "1"}),
            serde_json::json!({"id": 1, "tag": "t2", "line": "1"}),
        ]
    );
    assert_eq!(got[0]["key"], "a", "{:?}", got[0]);
    assert_eq!(got[1]["headers"]["tag"], "t2", "{:?}", got[1]);
    // Record 3's email is a number: `ascii_downcase` fails, and jq's message is dead-lettered.
    let dlq = s.lines("dlq.jsonl");
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    let entry: serde_json::Value = serde_json::from_str(&dlq[0]).expect("dlq JSON");
    assert_eq!(entry["offset"], "3");
    let error = entry["error"].as_str().expect("error");
    assert!(error.starts_with("jq: "), "{error}");
    assert!(entry["stage"].as_str().expect("stage").contains("jq"));
    // Everything was accounted for: the file is finished.
    assert_eq!(
        s.offsets("offsets", "jq"),
        vec![("in/a.jsonl".to_string(), 3, true)]
    );
}

#[test]
fn relative_paths_in_a_spec_are_relative_to_its_folder_whatever_the_working_directory() {
    let s = Scratch::with("proj/in/a.jsonl", BAD_INPUT);
    // The default offset store and the default dead-letter file, plus a relative sink path.
    s.write(
        "proj/spec.yaml",
        "version: 1\nname: rel\nsource: {type: file, paths: [in/*.jsonl], batch_size: 1}\nformat: {decode: json}\nsink: {type: file, path: out/data.jsonl}\nerrors: {tolerance: all}\n",
    );
    s.write("elsewhere/.keep", "");
    let run_in = |cwd: &str, spec: &str| {
        s.cmd(&["run", spec])
            .current_dir(s.path(cwd))
            .output()
            .expect("run sluice")
    };
    let out = run_in("elsewhere", "../proj/spec.yaml");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(s.lines("proj/out/data.jsonl").len(), 4);
    assert_eq!(s.lines("proj/.sluice/dead-letter/rel.jsonl").len(), 1);
    // Partitions are named relative to the spec's folder, not to the working directory.
    assert_eq!(
        s.offsets("proj/.sluice/offsets", "rel"),
        vec![("in/a.jsonl".to_string(), 5, true)]
    );
    let stray: Vec<_> = std::fs::read_dir(s.path("elsewhere"))
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        stray,
        vec![".keep"],
        "nothing is written in the working directory"
    );

    // The same spec started from its own folder (or by absolute path) finds the same offsets:
    // only the new file is read.
    s.write("proj/in/b.jsonl", "{\"n\":6}\n");
    let out = run_in("proj", "spec.yaml");
    assert!(out.status.success(), "{}", stderr(&out));
    let abs = s.path("proj/spec.yaml");
    let out = run_in(".", abs.to_str().expect("utf-8 path"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        s.lines("proj/out/data.jsonl").len(),
        5,
        "nothing read twice"
    );
    assert_eq!(s.lines("proj/.sluice/dead-letter/rel.jsonl").len(), 1);
}

#[test]
fn a_torn_last_line_of_the_output_file_is_cut_before_appending() {
    let s = Scratch::with("spec.yaml", &generator_spec("torn-out", Some(100), 1, None));
    // A crash in the middle of a write left a fragment without a newline.
    s.write("out/data.jsonl", "{\"seq\":1000}\n{\"seq\":10,\"user_i");
    let out = s.run_ok(&["run", "spec.yaml"]);
    // The log may be coloured: drop ANSI escapes before looking for `bytes=17`.
    let mut log = String::new();
    let mut escape = false;
    for c in stderr(&out).chars() {
        match c {
            '\u{1b}' => escape = true,
            'm' if escape => escape = false,
            _ if escape => {}
            c => log.push(c),
        }
    }
    assert!(
        log.contains("torn last line") && log.contains("bytes=17"),
        "{log}"
    );
    // Every line parses: the fragment is gone, nothing is glued onto it.
    let got = seqs(&s.lines("out/data.jsonl"));
    assert_eq!(got[0], 1000, "complete lines are kept");
    assert_eq!(&got[1..], &(0..100).collect::<Vec<_>>()[..]);
}

#[test]
fn a_torn_last_line_of_the_dead_letter_file_is_cut_before_appending() {
    let s = Scratch::with("in/a.jsonl", BAD_INPUT);
    s.write("spec.yaml", &file_spec("torn-dlq", "all"));
    s.write("dlq.jsonl", "{\"pipeline\":\"torn-dlq\",\"sta");
    let err = stderr(&s.run_ok(&["run", "spec.yaml"]));
    assert!(err.contains("torn last line"), "{err}");
    let dlq = s.lines("dlq.jsonl");
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    let entry: serde_json::Value = serde_json::from_str(&dlq[0]).expect("dlq JSON");
    assert_eq!(entry["offset"], "3");
}

#[test]
fn out_of_range_durations_on_the_command_line_are_errors_not_panics() {
    let s = Scratch::with("spec.yaml", &generator_spec("prune", Some(10), 1, None));
    s.run_ok(&["run", "spec.yaml"]);
    let err = stderr(&s.run_err(&[
        "offsets",
        "prune",
        "spec.yaml",
        "--older-than",
        "99999999999999999999s",
        "--dry-run",
    ]));
    assert!(
        err.contains("--older-than") && err.contains("too long"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_zero_commit_interval_is_refused_before_anything_runs() {
    let s = Scratch::with(
        "spec.yaml",
        &generator_spec("zero", Some(100), 1, None)
            .replace("commit_interval: 100ms", "commit_interval: 0s"),
    );
    let err = run_fails(&s);
    assert!(
        err.contains("spec.yaml:17:20: offsets.commit_interval: must be longer than 0s"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!s.path("out/data.jsonl").exists(), "nothing ran");
}
