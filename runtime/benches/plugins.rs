//! Plugin call cost and throughput: identity, JSON field mask and field-hash partitioner as wasm
//! plugins (through `PluginHost` stages, default limits on) against the same logic in native
//! Rust (and the mask as a built-in `jq:` transform); batches of 1, 100 and 1000 records; values of about 100 B and 1 KiB.
//!
//! `cargo bench -p sluice-runtime --bench plugins` (add `-- --quick` for a short run). Results
//! are in `docs/benchmarks.md`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is the test failing

use std::borrow::Cow;
use std::fmt;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Value, json};
use sluice_connectors::{Offset, Record, Route};
use sluice_runtime::pipeline::jq::JqStage;
use sluice_runtime::plugin::PluginHost;
use sluice_runtime::spec::JqSpec;
use sluice_runtime::spec::plugin::PluginSpec;
use sluice_runtime::stage::{Outcome, Stage};
use sluice_test_kit::wasm;

const BATCHES: [usize; 3] = [1, 100, 1000];

/// JSON objects of about `size` bytes with `user_id` and `email` fields.
fn records(n: usize, size: usize) -> Vec<Record> {
    let partition: Arc<str> = Arc::from("shard-0");
    (0..n)
        .map(|i| {
            let head = format!(
                r#"{{"user_id":"user-{}","email":"user{i}@example.com","n":{i},"pad":""#,
                i % 97
            );
            let pad = "x".repeat(size.saturating_sub(head.len() + 2));
            let mut r = Record::new(
                partition.clone(),
                Offset::from(i as u64),
                Bytes::from(format!("{head}{pad}\"}}")),
            );
            r.meta.push(("shard-id".into(), "shard-0".into()));
            r
        })
        .collect()
}

fn spec(plugin: &str, config: Value) -> PluginSpec {
    spec_at(&wasm::plugin(plugin), config)
}

fn spec_at(wasm: &Path, config: Value) -> PluginSpec {
    serde_json::from_value(json!({"wasm": wasm, "config": config})).expect("a valid plugin spec")
}

/// `SLUICE_BENCH_BASELINE=<folder>`: the mask also runs from `<folder>/mask_fields.wasm` (built
/// from an older commit) as `wasm-baseline`, interleaved with the others, so a change to the SDK
/// or the plugin is measured before and after in one run.
fn baseline(plugin: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("SLUICE_BENCH_BASELINE").filter(|d| !d.is_empty())?;
    Some(PathBuf::from(dir).join(format!("{}.wasm", plugin.replace('-', "_"))))
}

// --- the same logic, native --------------------------------------------------------------------

fn native_identity(batch: &[Record]) -> Vec<Outcome> {
    batch.iter().map(|_| Outcome::Keep).collect()
}

/// How the native mask writes its output: the sdk's JSON writer (`sluice_wire::json::to_vec`,
/// what the plugin uses), or serde_json's (what both used before the writer, kept to show the
/// older ratio in the same run).
fn serde_writer(doc: &Value) -> Vec<u8> {
    serde_json::to_vec(doc).unwrap()
}

#[inline(never)] // a function of its own, so callgrind counts its instructions per batch
fn native_mask(batch: &[Record], fields: &[&str], write: fn(&Value) -> Vec<u8>) -> Vec<Outcome> {
    batch
        .iter()
        .map(|r| {
            let mut doc: Value = match serde_json::from_slice(&r.value) {
                Ok(v) => v,
                Err(e) => return Outcome::Error(e.to_string()),
            };
            let mut changed = false;
            for f in fields {
                if let Some(v) = doc.get_mut(*f) {
                    *v = Value::from("***");
                    changed = true;
                }
            }
            if !changed {
                return Outcome::Keep;
            }
            Outcome::Records(vec![r.derive(Bytes::from(write(&doc)))])
        })
        .collect()
}

/// Finds one top-level string field without building a `Value` (what the sdk's
/// `json::top_level_fields` does in the plugin).
struct Field<'n>(&'n str);

impl<'de> DeserializeSeed<'de> for Field<'_> {
    type Value = Option<Cow<'de, str>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Field<'_> {
    type Value = Option<Cow<'de, str>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(k) = map.next_key::<Cow<'de, str>>()? {
            if k == self.0 {
                found = Some(map.next_value::<Cow<'de, str>>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn native_partition(batch: &[Record], n: u32) -> Vec<Result<Route, String>> {
    batch
        .iter()
        .map(|r| {
            let mut de = serde_json::Deserializer::from_slice(&r.value);
            let key = Field("user_id")
                .deserialize(&mut de)
                .map_err(|e| e.to_string())?
                .ok_or("missing")?;
            let index = ((u128::from(fnv1a64(key.as_bytes())) * u128::from(n)) >> 64) as u32;
            Ok(Route {
                key: Some(key.into_owned()),
                index: Some(index),
                explicit_hash_key: None,
            })
        })
        .collect()
}

// --- benchmarks ---------------------------------------------------------------------------------

fn size_name(size: usize) -> &'static str {
    if size < 1000 { "100B" } else { "1KiB" }
}

/// A benchmark case: its name, the one batch size it runs at (`ALL`: every size) and the work.
type Case<'a> = (&'static str, Option<usize>, &'a mut dyn FnMut(&[Record]));
const ALL: Option<usize> = None;

/// Groups `{group}/100B` and `{group}/1KiB`: every case over batches of each of `BATCHES`
/// records of that size.
fn compare(c: &mut Criterion, group: &str, cases: &mut [Case<'_>]) {
    for size in [100, 1024] {
        let mut g = c.benchmark_group(format!("{group}/{}", size_name(size)));
        for n in BATCHES {
            let batch = records(n, size);
            g.throughput(Throughput::Elements(n as u64));
            for (name, only, run) in cases.iter_mut() {
                if only.is_none_or(|only| only == n) {
                    g.bench_with_input(BenchmarkId::new(*name, n), &batch, |b, batch| {
                        b.iter(|| run(batch))
                    });
                }
            }
        }
        g.finish();
    }
}

fn transforms(c: &mut Criterion) {
    let host = PluginHost::new().expect("start the plugin host");
    let mut identity = host
        .transform(&spec("identity", json!({})), "/".as_ref())
        .unwrap();
    let mut mask = host
        .transform(
            &spec("mask-fields", json!({"fields": ["email"]})),
            "/".as_ref(),
        )
        .unwrap();
    let jq_spec: JqSpec =
        serde_json::from_value(json!({"jq": r#".email = "***""#})).expect("a valid jq spec");
    let mut jq = JqStage::new(&jq_spec).expect("the program compiles");
    let mut fueled: PluginSpec = spec("mask-fields", json!({"fields": ["email"]}));
    fueled.fuel = Some(u64::MAX / 4);
    let mut mask_fuel = host.transform(&fueled, "/".as_ref()).unwrap();

    let identity = &mut |b: &[Record]| drop(black_box(identity.process(b).unwrap()));
    compare(
        c,
        "identity",
        &mut [
            ("wasm", ALL, identity),
            ("native", ALL, &mut |b| drop(black_box(native_identity(b)))),
        ],
    );
    let mut mask_baseline = baseline("mask-fields").map(|wasm| {
        host.transform(&spec_at(&wasm, json!({"fields": ["email"]})), "/".as_ref())
            .unwrap()
    });
    let mask = &mut |b: &[Record]| drop(black_box(mask.process(b).unwrap()));
    let mask_fuel = &mut |b: &[Record]| drop(black_box(mask_fuel.process(b).unwrap()));
    let native = &mut |b: &[Record]| {
        drop(black_box(native_mask(
            b,
            &["email"],
            sluice_wire::json::to_vec,
        )))
    };
    let native_serde =
        &mut |b: &[Record]| drop(black_box(native_mask(b, &["email"], serde_writer)));
    let jq = &mut |b: &[Record]| drop(black_box(jq.process(b).unwrap()));
    let mut cases: Vec<Case<'_>> = vec![
        ("wasm", ALL, mask),
        ("native", ALL, native),
        ("native-serde_json", Some(1000), native_serde),
        ("jq", ALL, jq),
        ("wasm+fuel", Some(1000), mask_fuel),
    ];
    let mut run_baseline;
    if let Some(stage) = mask_baseline.as_mut() {
        run_baseline = |b: &[Record]| drop(black_box(stage.process(b).unwrap()));
        cases.push(("wasm-baseline", ALL, &mut run_baseline));
    }
    compare(c, "mask", &mut cases);
}

fn partitioners(c: &mut Criterion) {
    let host = PluginHost::new().expect("start the plugin host");
    let mut p = host
        .partitioner(
            &spec("field-partitioner", json!({"fields": ["user_id"]})),
            "/".as_ref(),
        )
        .unwrap();
    let wasm = &mut |b: &[Record]| drop(black_box(p.partition(b, Some(64)).unwrap()));
    compare(
        c,
        "partition",
        &mut [
            ("wasm", ALL, wasm),
            ("native", ALL, &mut |b| {
                drop(black_box(native_partition(b, 64)))
            }),
        ],
    );
}

/// The smallest call: one record with a 2-byte value through the identity plugin.
fn call_overhead(c: &mut Criterion) {
    let host = PluginHost::new().expect("start the plugin host");
    let mut identity = host
        .transform(&spec("identity", json!({})), "/".as_ref())
        .unwrap();
    let batch = vec![Record::new(
        Arc::from("p"),
        Offset::from(0),
        Bytes::from_static(b"{}"),
    )];
    c.bench_function("call/identity-1-record", |b| {
        b.iter(|| black_box(identity.process(&batch).unwrap()))
    });
}

/// Starting a stage in a new host: the component comes from the on-disk compilation cache (the
/// first iteration warms it), then instantiation and `init`.
fn start(c: &mut Criterion) {
    let s = spec("mask-fields", json!({"fields": ["email"]}));
    let mut g = c.benchmark_group("start");
    g.sample_size(10);
    g.bench_function("new-host+mask-fields-stage (disk cache)", |b| {
        b.iter(|| {
            let host = PluginHost::new().expect("start the plugin host");
            black_box(host.transform(&s, "/".as_ref()).unwrap())
        })
    });
    let host = PluginHost::new().expect("start the plugin host");
    g.bench_function("mask-fields-stage (same host)", |b| {
        b.iter(|| black_box(host.transform(&s, "/".as_ref()).unwrap()))
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = call_overhead, transforms, partitioners, start
}
criterion_main!(benches);
