//! `sluice plugin test`: run a plugin over sample records and print what comes out (the model is
//! Fluvio's `smdk test`).

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_connectors::file::render_line;
use sluice_connectors::{Offset, Record, Route};

use super::{PluginError, PluginHost, PluginKind};
use crate::spec::plugin::PluginSpec;
use crate::spec::units::{ByteSize, Dur};
use crate::stage::{Outcome, Stage};

/// What `sluice plugin test` runs.
#[derive(Debug, Clone, Copy)]
pub struct TestRun<'a> {
    /// The plugin's `.wasm` component.
    pub wasm: &'a Path,
    pub kind: PluginKind,
    /// The plugin's config as JSON text.
    pub config: &'a str,
    /// The records, one per line (`-`: standard input); empty lines are skipped.
    pub input: &'a Path,
    /// The sink's partition count, given to a partitioner.
    pub partitions: Option<u32>,
    /// Input lines are record envelopes, and output is printed as envelopes (see [`run_test`]).
    pub envelopes: bool,
}

/// Runs a plugin over the records in `run.input` as one batch, with the default limits.
///
/// Input lines are record values, or with `envelopes` the envelopes a file sink with
/// `envelope: true` writes: `{"value": …, "key": "…", "headers": {"name": "…"}, "timestamp":
/// ms, "metadata": {"shard-id": "…", "partition": "…", "offset": "…"}}`, every field but
/// `value` optional (a string value is the record's text, any other JSON value its JSON text;
/// `metadata.partition` and `metadata.offset` set the record's position). So a partitioner that
/// reads the key or a Kinesis shard id can be tried.
///
/// Writes one line per output record (its value, or its envelope, with `route` for a
/// partitioner), `! record N: message` per rejected record, and a `#` summary line, to `out`. A
/// partitioner without `envelopes` prints `key=… index=… <value>`; a format decodes each line,
/// then encodes what it decoded.
pub fn run_test(
    host: &PluginHost,
    run: &TestRun<'_>,
    out: &mut impl Write,
) -> Result<(), PluginError> {
    // The plugin runs on this thread: if it drives the async runtime (the CLI's main thread),
    // step out of it first, as a pipeline's processor thread is.
    super::wait::off_runtime(|| run_test_here(host, run, out))
}

fn run_test_here(
    host: &PluginHost,
    run: &TestRun<'_>,
    out: &mut impl Write,
) -> Result<(), PluginError> {
    let (kind, input, partitions, envelopes) = (run.kind, run.input, run.partitions, run.envelopes);
    let config: serde_json::Value = serde_json::from_str(run.config)
        .map_err(|e| PluginError(format!("--config is not JSON: {e}")))?;
    let spec = PluginSpec {
        wasm: run.wasm.to_path_buf(),
        config,
        timeout: Dur(Duration::from_millis(200)),
        memory: ByteSize(64 * 1024 * 1024),
        fuel: None,
        reload: false,
    };
    let base = Path::new(".");
    host.check(&spec, base, kind)
        .map_err(|e| PluginError(e.detail("\n")))?;
    let records = read_records(input, envelopes)?;
    let io = |e: std::io::Error| PluginError(format!("cannot write output: {e}"));
    match kind {
        PluginKind::Transform => {
            let outcomes = process(host.transform(&spec, base)?, &records)?;
            print_outcomes(&records, &outcomes, envelopes, out).map_err(io)?;
        }
        PluginKind::Format => {
            let outcomes = process(host.decoder(&spec, base)?, &records)?;
            writeln!(out, "# decode").map_err(io)?;
            print_outcomes(&records, &outcomes, envelopes, out).map_err(io)?;
            let decoded = flatten(&records, outcomes);
            let encoded = process(host.encoder(&spec, base)?, &decoded)?;
            writeln!(out, "# encode (of the decoded records)").map_err(io)?;
            print_outcomes(&decoded, &encoded, envelopes, out).map_err(io)?;
        }
        PluginKind::Partitioner => {
            let mut p = host.partitioner(&spec, base)?;
            let routes = p
                .partition(&records, partitions)
                .map_err(|e| PluginError(e.to_string()))?;
            let mut errors = 0;
            for (i, (r, route)) in records.iter().zip(routes).enumerate() {
                match route {
                    Ok(route) if envelopes => {
                        let mut line = Vec::new();
                        render_line(r, &route, true, &mut line);
                        let mut env: serde_json::Map<String, serde_json::Value> =
                            serde_json::from_slice(&line).unwrap_or_default();
                        env.insert(
                            "route".into(),
                            serde_json::json!({
                                "key": route.key,
                                "index": route.index,
                                "explicit_hash_key": route.explicit_hash_key,
                            }),
                        );
                        writeln!(out, "{}", serde_json::Value::Object(env)).map_err(io)?;
                    }
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

/// One batch through a stage built for the test.
fn process(mut stage: Box<dyn Stage>, records: &[Record]) -> Result<Vec<Outcome>, PluginError> {
    stage
        .process(records)
        .map_err(|e| PluginError(e.to_string()))
}

fn read_records(input: &Path, envelopes: bool) -> Result<Vec<Record>, PluginError> {
    let stdin = input == Path::new("-");
    let reader: Box<dyn BufRead> = if stdin {
        Box::new(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(input)
            .map_err(|e| PluginError(format!("cannot open {}: {e}", input.display())))?;
        Box::new(std::io::BufReader::new(file))
    };
    let name = if stdin {
        "stdin".to_string()
    } else {
        input.display().to_string()
    };
    let partition: Arc<str> = Arc::from(name.as_str());
    let mut records = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| PluginError(format!("cannot read {name}: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let mut record = Record::new(partition.clone(), Offset::from(n as u64 + 1), Bytes::new());
        if envelopes {
            from_envelope(&line, &mut record)
                .map_err(|e| PluginError(format!("{name}:{}: {e}", n + 1)))?;
        } else {
            record.value = Bytes::from(line);
        }
        records.push(record);
    }
    Ok(records)
}

/// Fills `record` from an envelope line (the file sink's `envelope: true` shape).
fn from_envelope(line: &str, record: &mut Record) -> Result<(), String> {
    use serde_json::Value;
    let env: serde_json::Map<String, Value> =
        serde_json::from_str(line).map_err(|e| format!("not a JSON envelope object: {e}"))?;
    for (field, v) in &env {
        match field.as_str() {
            "value" => {
                record.value = match v {
                    Value::String(s) => Bytes::from(s.clone()),
                    other => Bytes::from(other.to_string()),
                }
            }
            "key" if v.is_null() => record.key = None,
            "key" => record.key = Some(Bytes::from(text(v, "key")?)),
            "timestamp" if v.is_null() => record.timestamp = None,
            "timestamp" => {
                record.timestamp = Some(
                    v.as_i64()
                        .ok_or_else(|| format!("timestamp must be milliseconds, found {v}"))?,
                )
            }
            "headers" => {
                for (name, value) in string_map(v, "headers")? {
                    record.headers.push((name, Bytes::from(value)));
                }
            }
            "metadata" => {
                for (name, value) in string_map(v, "metadata")? {
                    match name.as_str() {
                        "partition" => record.partition = Arc::from(value.as_str()),
                        "offset" => record.offset = Offset::new(value),
                        _ => record.meta.push((name.into(), value)),
                    }
                }
            }
            // What a file sink writes besides the record: ignored on the way in.
            "partition_key" | "route" => {}
            other => {
                return Err(format!(
                    "unknown envelope field `{other}` (use value, key, headers, timestamp, metadata)"
                ));
            }
        }
    }
    if !env.contains_key("value") {
        return Err("the envelope has no `value`".into());
    }
    Ok(())
}

/// A string value's text; numbers and booleans as JSON.
fn text(v: &serde_json::Value, what: &str) -> Result<String, String> {
    use serde_json::Value;
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(_) | Value::Bool(_) => Ok(v.to_string()),
        other => Err(format!("{what} must be a string, found {other}")),
    }
}

/// An object of string values (`headers`, `metadata`), as (name, text) pairs.
fn string_map(v: &serde_json::Value, what: &str) -> Result<Vec<(String, String)>, String> {
    let map = v
        .as_object()
        .ok_or_else(|| format!("{what} must be an object, found {v}"))?;
    map.iter()
        .map(|(name, value)| Ok((name.clone(), text(value, &format!("a {what} value"))?)))
        .collect()
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
    envelopes: bool,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let mut line = Vec::new();
    let mut print = |r: &Record, out: &mut dyn Write| {
        line.clear();
        render_line(r, &Route::default(), envelopes, &mut line);
        out.write_all(&line)?;
        writeln!(out)
    };
    let (mut produced, mut dropped, mut errors) = (0, 0, 0);
    for (i, (input, outcome)) in inputs.iter().zip(outcomes).enumerate() {
        match outcome {
            Outcome::Keep => {
                produced += 1;
                print(input, out)?;
            }
            Outcome::Records(rs) if rs.is_empty() => dropped += 1,
            Outcome::Records(rs) => {
                for r in rs {
                    produced += 1;
                    print(r, out)?;
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
