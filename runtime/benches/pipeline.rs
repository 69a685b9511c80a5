//! Generator → file / discard sink throughput, in records/s and MB/s, for 100 B and 1 KiB
//! records, through the real pipeline (JSON decode and encode on, file sink fsyncing).
//!
//! `cargo bench -p sluice-runtime --bench pipeline` prints a Markdown table (copied into
//! docs/benchmarks.md). `SLUICE_BENCH_RECORDS` scales the run.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is the test failing

use std::time::Instant;

use sluice_runtime::pipeline::{Pipeline, RunOptions};
use sluice_runtime::plugin::PluginHost;
use sluice_runtime::spec::{self, LoadedSpec};
use tokio_util::sync::CancellationToken;

/// CPU seconds (user + system) this process has used so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the 12th, stime the 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let scale: u64 = std::env::var("SLUICE_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let host = PluginHost::new().expect("plugin host");
    let dir = tempfile::tempdir().expect("temp dir");
    println!("| sink | record | records | records/s | MB/s | CPU s per GB |");
    println!("|---|---|---|---|---|---|");
    for (size, count) in [(100u64, scale), (1024, scale / 4)] {
        for sink in ["file", "discard"] {
            let out = dir.path().join(format!("out-{size}-{sink}.jsonl"));
            let sink_yaml = match sink {
                "file" => format!("{{type: file, path: \"{}\"}}", out.display()),
                _ => "{type: discard}".to_string(),
            };
            let text = format!(
                "version: 1\nname: bench-{size}-{sink}\nsource:\n  type: generator\n  count: {count}\n  partitions: 4\n  record_size: {size}\nformat: {{decode: json, encode: json}}\nsink: {sink_yaml}\noffsets: {{store: memory}}\npipeline: {{max_buffered: 20000}}\n"
            );
            let (s, doc, _) =
                spec::parse("bench.yaml", &text, &|_| None).expect("valid bench spec");
            let loaded = LoadedSpec {
                file: "bench.yaml".into(),
                base_dir: dir.path().to_path_buf(),
                spec: s,
                doc,
            };
            let cpu0 = cpu_seconds();
            let t0 = Instant::now();
            let summary = rt.block_on(async {
                let p = Pipeline::build(&loaded, &host).await.expect("build");
                p.run(CancellationToken::new(), RunOptions::default())
                    .await
                    .expect("run")
            });
            let secs = t0.elapsed().as_secs_f64();
            let cpu = cpu_seconds() - cpu0;
            assert_eq!(summary.counts.delivered, count, "every record delivered");
            let bytes = summary.counts.bytes_read as f64;
            println!(
                "| {sink} | {size} B | {count} | {:.0} | {:.1} | {:.1} |",
                count as f64 / secs,
                bytes / secs / 1e6,
                cpu / (bytes / 1e9)
            );
            let _ = std::fs::remove_file(&out);
        }
    }
}
