//! End-to-end tests of parallel processing (`pipeline.workers`): the `sluice` binary with the
//! generator, the real wasm mask-fields plugin and the file source and sink.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is the test failing

use std::collections::BTreeSet;

use sluice_test_kit::*;

/// 4 generator partitions → wasm mask-fields (email) → a file, on `workers` threads.
fn masked_generator(name: &str, count: Option<u64>, workers: u32) -> String {
    let count = count.map_or(String::new(), |c| format!("  count: {c}\n"));
    format!(
        "version: 1\nname: {name}\nsource:\n  type: generator\n  partitions: 4\n  batch_size: 100\n{count}\
         format:\n  decode: json\n  encode: json\ntransforms:\n  - wasm: {}\n    config: {{ fields: [email] }}\n\
         sink:\n  type: file\n  path: out/data.jsonl\noffsets:\n  store: file\n  path: offsets\n  commit_interval: 100ms\n\
         pipeline:\n  workers: {workers}\n  flush_interval: 50ms\n  max_buffered: 1000\n",
        wasm::plugin("mask-fields").display()
    )
}

/// The sink's records, checked for a masked email; their `seq` values in file order.
fn masked_seqs(s: &Scratch) -> Vec<u64> {
    let lines = s.lines("out/data.jsonl");
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
        assert_eq!(v["email"], "***", "masked by the plugin: {l}");
    }
    seqs(&lines)
}

/// Generator records of partition `p` have `seq % 4 == p` and are made in offset order: their
/// order in the file must be increasing.
fn assert_partition_order(got: &[u64]) {
    for p in 0..4 {
        let part: Vec<u64> = got.iter().copied().filter(|s| s % 4 == p).collect();
        assert!(
            part.windows(2).all(|w| w[0] < w[1]),
            "partition {p} out of order"
        );
    }
}

#[test]
fn several_workers_deliver_every_record_once_in_partition_order() {
    for workers in [2, 4] {
        let s = Scratch::with("spec.yaml", &masked_generator("par", Some(8000), workers));
        let err = stderr(&s.run_ok(&["run", "spec.yaml"]));
        assert!(err.contains("8000 committed"), "{err}");
        let got = masked_seqs(&s);
        assert_eq!(got.len(), 8000, "{workers} workers");
        assert_eq!(
            got.iter().copied().collect::<BTreeSet<_>>(),
            (0..8000).collect(),
            "{workers} workers: every record exactly once"
        );
        assert_partition_order(&got);
        let offs = s.offsets("offsets", "par");
        assert_eq!(offs.len(), 4);
        assert!(
            offs.iter().all(|(_, o, fin)| *o == 1999 && *fin),
            "{offs:?}"
        );
    }
}

#[test]
fn max_records_is_exact_under_several_workers() {
    let s = Scratch::with("spec.yaml", &masked_generator("bounded", None, 4));
    for round in 1..=2u64 {
        s.run_ok(&["run", "spec.yaml", "--max-records", "3050"]);
        let got = masked_seqs(&s);
        assert_eq!(got.len() as u64, 3050 * round);
        let unique: BTreeSet<u64> = got.iter().copied().collect();
        assert_eq!(unique.len(), got.len(), "no duplicates across bounded runs");
        assert_partition_order(&got);
        assert_eq!(s.committed_records("offsets", "bounded"), 3050 * round);
    }
}

#[test]
fn a_bad_record_under_several_workers_stops_and_commits_nothing_past_it() {
    let s = Scratch::new();
    for f in ["a", "b", "c", "d"] {
        let lines: String = (1..=300)
            .map(|n| {
                if f == "c" && n == 150 {
                    "{\"f\":\"c\",\n".to_string()
                } else {
                    format!("{{\"f\":\"{f}\",\"n\":{n}}}\n")
                }
            })
            .collect();
        s.write(&format!("in/{f}.jsonl"), &lines);
    }
    s.write(
        "spec.yaml",
        "version: 1\nname: strict\nsource:\n  type: file\n  paths: [in/*.jsonl]\n  batch_size: 10\n\
         format:\n  decode: json\n  encode: json\nsink:\n  type: file\n  path: out/data.jsonl\n\
         offsets:\n  store: file\n  path: offsets\n  commit_interval: 50ms\npipeline:\n  workers: 4\n",
    );
    let out = s.run_err(&["run", "spec.yaml"]);
    let err = stderr(&out);
    assert!(
        err.contains("bad record at partition in/c.jsonl offset 150")
            && err.contains("invalid JSON"),
        "{err}"
    );
    let c_committed = s
        .offsets("offsets", "strict")
        .into_iter()
        .find(|(p, _, _)| p == "in/c.jsonl")
        .map(|(_, o, _)| o);
    assert!(c_committed.is_none_or(|o| o < 150), "{c_committed:?}");
    let past: Vec<String> = s
        .lines("out/data.jsonl")
        .into_iter()
        .filter(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            v["f"] == "c" && v["n"].as_u64().is_some_and(|n| n >= 150)
        })
        .collect();
    assert!(past.is_empty(), "delivered past the bad record: {past:?}");
}

#[test]
fn validate_refuses_zero_workers_with_the_location() {
    let s = Scratch::with(
        "spec.yaml",
        "version: 1\nname: zero\nsource: {type: generator, count: 1}\nsink: {type: discard}\npipeline:\n  workers: 0\n",
    );
    let said = stdout(&s.run_err(&["validate", "spec.yaml"]));
    assert!(
        said.contains("spec.yaml:6:12: pipeline.workers: must be at least 1"),
        "{said}"
    );
}
