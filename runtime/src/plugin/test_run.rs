//! `sluice plugin test`: run a plugin over sample records and print what comes out (the model is
//! Fluvio's `smdk test`).

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_connectors::{Offset, Record};

use super::{PluginCheckError, PluginError, PluginHost, PluginKind};
use crate::spec::plugin::PluginSpec;
use crate::spec::units::{ByteSize, Dur};
use crate::stage::Outcome;

/// Runs the plugin at `wasm` (of `kind`, with `config` as JSON text) over the records in `input`
/// (one record value per line; empty lines are skipped), as one batch, with the default limits.
/// Writes one line per output record value, `! record N: message` per rejected record, and a
/// `#` summary line, to `out`. A partitioner gets `partitions` as the sink's partition count and
/// prints `key=… index=… <value>`; a format decodes each line, then encodes what it decoded.
pub fn run_test(
    host: &PluginHost,
    wasm: &Path,
    kind: PluginKind,
    config: &str,
    input: &Path,
    partitions: Option<u32>,
    out: &mut impl Write,
) -> Result<(), PluginError> {
    // The plugin runs on this thread: if it drives the async runtime (the CLI's main thread),
    // step out of it first, as a pipeline's processor thread is.
    super::wait::off_runtime(|| run_test_here(host, wasm, kind, config, input, partitions, out))
}

fn run_test_here(
    host: &PluginHost,
    wasm: &Path,
    kind: PluginKind,
    config: &str,
    input: &Path,
    partitions: Option<u32>,
    out: &mut impl Write,
) -> Result<(), PluginError> {
    let config: serde_json::Value = serde_json::from_str(config)
        .map_err(|e| PluginError(format!("--config is not JSON: {e}")))?;
    let spec = PluginSpec {
        wasm: wasm.to_path_buf(),
        config,
        timeout: Dur(Duration::from_millis(200)),
        memory: ByteSize(64 * 1024 * 1024),
        fuel: None,
    };
    let base = Path::new(".");
    host.check(&spec, base, kind).map_err(|e| match e {
        PluginCheckError::Config(errors) => PluginError(
            errors
                .iter()
                .map(|(at, msg)| format!("config{at}: {msg}"))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        e => PluginError(e.to_string()),
    })?;
    let records = read_records(input)?;
    let io = |e: std::io::Error| PluginError(format!("cannot write output: {e}"));
    match kind {
        PluginKind::Transform => {
            let mut stage = host.transform(&spec, base)?;
            let outcomes = stage
                .process(&records)
                .map_err(|e| PluginError(e.to_string()))?;
            print_outcomes(&records, &outcomes, out).map_err(io)?;
        }
        PluginKind::Format => {
            let mut decoder = host.decoder(&spec, base)?;
            let outcomes = decoder
                .process(&records)
                .map_err(|e| PluginError(e.to_string()))?;
            writeln!(out, "# decode").map_err(io)?;
            print_outcomes(&records, &outcomes, out).map_err(io)?;
            let decoded = flatten(&records, outcomes);
            let mut encoder = host.encoder(&spec, base)?;
            let encoded = encoder
                .process(&decoded)
                .map_err(|e| PluginError(e.to_string()))?;
            writeln!(out, "# encode (of the decoded records)").map_err(io)?;
            print_outcomes(&decoded, &encoded, out).map_err(io)?;
        }
        PluginKind::Partitioner => {
            let mut p = host.partitioner(&spec, base)?;
            let routes = p
                .partition(&records, partitions)
                .map_err(|e| PluginError(e.to_string()))?;
            let mut errors = 0;
            for (i, (r, route)) in records.iter().zip(routes).enumerate() {
                match route {
                    Ok(route) => {
                        let key = route.key.as_deref().unwrap_or("-");
                        let index = route.index.map_or("-".to_string(), |i| i.to_string());
                        write!(out, "key={key} index={index} ").map_err(io)?;
                        if let Some(h) = route.explicit_hash_key {
                            write!(out, "explicit_hash_key={h} ").map_err(io)?;
                        }
                        out.write_all(&r.value).map_err(io)?;
                        writeln!(out).map_err(io)?;
                    }
                    Err(e) => {
                        errors += 1;
                        writeln!(out, "! record {i}: {e}").map_err(io)?;
                    }
                }
            }
            writeln!(out, "# {} records in, {errors} errors", records.len()).map_err(io)?;
        }
    }
    Ok(())
}

fn read_records(input: &Path) -> Result<Vec<Record>, PluginError> {
    let file = std::fs::File::open(input)
        .map_err(|e| PluginError(format!("cannot open {}: {e}", input.display())))?;
    let partition: Arc<str> = Arc::from(input.display().to_string());
    let mut records = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line =
            line.map_err(|e| PluginError(format!("cannot read {}: {e}", input.display())))?;
        if line.trim().is_empty() {
            continue;
        }
        records.push(Record::new(
            partition.clone(),
            Offset::from(n as u64 + 1),
            Bytes::from(line),
        ));
    }
    Ok(records)
}

/// The records a stage's outcomes stand for (kept inputs and outputs; errors left out).
fn flatten(inputs: &[Record], outcomes: Vec<Outcome>) -> Vec<Record> {
    let mut recs = Vec::new();
    for (input, outcome) in inputs.iter().zip(outcomes) {
        match outcome {
            Outcome::Keep => recs.push(input.clone()),
            Outcome::Records(rs) => recs.extend(rs),
            Outcome::Error(_) => {}
        }
    }
    recs
}

fn print_outcomes(
    inputs: &[Record],
    outcomes: &[Outcome],
    out: &mut impl Write,
) -> std::io::Result<()> {
    let (mut produced, mut dropped, mut errors) = (0, 0, 0);
    for (i, (input, outcome)) in inputs.iter().zip(outcomes).enumerate() {
        match outcome {
            Outcome::Keep => {
                produced += 1;
                out.write_all(&input.value)?;
                writeln!(out)?;
            }
            Outcome::Records(rs) if rs.is_empty() => dropped += 1,
            Outcome::Records(rs) => {
                for r in rs {
                    produced += 1;
                    out.write_all(&r.value)?;
                    writeln!(out)?;
                }
            }
            Outcome::Error(e) => {
                errors += 1;
                writeln!(out, "! record {i}: {e}")?;
            }
        }
    }
    writeln!(
        out,
        "# {} records in, {produced} out, {dropped} dropped, {errors} errors",
        inputs.len()
    )
}
