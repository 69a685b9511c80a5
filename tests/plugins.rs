//! The wasm plugin host, through the real plugins in `plugins/` (built to wasm32-wasip2 by the
//! test itself): each example plugin as a pipeline stage, each hostile plugin contained, and
//! `check` (what `sluice validate` runs) on bad configs and wrong kinds; then the plugins in
//! pipelines run by the `sluice` binary.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is the test failing

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use sluice_connectors::{Offset, Record, Route};
use sluice_runtime::plugin::{
    PluginCheckError, PluginHost, PluginKind, TestRun, run_test, scaffold,
};
use sluice_runtime::spec::plugin::PluginSpec;
use sluice_runtime::stage::{Outcome, Stage, StageError};
use sluice_test_kit::{self as kit, wasm};

fn host() -> &'static PluginHost {
    static HOST: OnceLock<PluginHost> = OnceLock::new();
    HOST.get_or_init(|| PluginHost::new().expect("start the plugin host"))
}

/// A spec as the YAML would give it: `{wasm, config, timeout?, memory?, fuel?}`.
fn spec(plugin: &str, extra: Value) -> PluginSpec {
    let mut v = json!({ "wasm": wasm::plugin(plugin) });
    if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
        m.extend(e);
    }
    serde_json::from_value(v).expect("a valid plugin spec")
}

fn base() -> &'static Path {
    Path::new("/")
}

fn records(values: &[&str]) -> Vec<Record> {
    let partition: Arc<str> = Arc::from("shard-0");
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let mut r = Record::new(
                partition.clone(),
                Offset::from(i as u64 + 100),
                Bytes::from(v.to_string()),
            );
            r.meta.push(("shard-id".into(), "shard-0".into()));
            r
        })
        .collect()
}

fn value(o: &Outcome) -> &str {
    match o {
        Outcome::Records(rs) if rs.len() == 1 => std::str::from_utf8(&rs[0].value).unwrap(),
        other => panic!("expected one output record, got {other:?}"),
    }
}

fn transform(plugin: &str, extra: Value) -> Box<dyn Stage> {
    host()
        .transform(&spec(plugin, extra), base())
        .unwrap_or_else(|e| panic!("start {plugin}: {e}"))
}

#[test]
fn mask_fields_replaces_fields_and_keeps_record_identity() {
    let mut stage = transform(
        "mask-fields",
        json!({"config": {"fields": ["email", "card.number"], "replacement": "***"}}),
    );
    assert_eq!(stage.name(), "transform mask_fields.wasm");
    let batch = records(&[
        r#"{"id":1,"email":"a@b.c","card":{"number":"4111","exp":"12/30"}}"#,
        r#"{"id":2}"#,
        "not json",
    ]);
    let out = stage.process(&batch).unwrap();
    assert_eq!(out.len(), 3);
    assert_eq!(
        value(&out[0]),
        r#"{"id":1,"email":"***","card":{"number":"***","exp":"12/30"}}"#
    );
    let Outcome::Records(rs) = &out[0] else {
        unreachable!()
    };
    assert_eq!(rs[0].offset, batch[0].offset);
    assert_eq!(rs[0].partition, batch[0].partition);
    assert_eq!(rs[0].meta("shard-id"), Some("shard-0"));
    assert_eq!(out[1], Outcome::Keep);
    assert!(
        matches!(&out[2], Outcome::Error(e) if e.contains("not valid JSON")),
        "{:?}",
        out[2]
    );
    // The instance is reused across batches.
    let again = stage.process(&records(&[r#"{"email":"x"}"#])).unwrap();
    assert_eq!(value(&again[0]), r#"{"email":"***"}"#);
    assert!(stage.process(&[]).unwrap().is_empty());
}

#[test]
fn filter_keeps_and_drops() {
    let mut stage = transform(
        "filter",
        json!({"config": {"conditions": [{"field": "level", "op": "in", "value": ["warn", "error"]}]}}),
    );
    let out = stage
        .process(&records(&[
            r#"{"level":"error"}"#,
            r#"{"level":"debug"}"#,
            r#"{}"#,
        ]))
        .unwrap();
    assert_eq!(
        out,
        vec![
            Outcome::Keep,
            Outcome::Records(vec![]),
            Outcome::Records(vec![])
        ]
    );
}

#[test]
fn field_partitioner_routes_by_stable_hash() {
    let mut p = host()
        .partitioner(
            &spec(
                "field-partitioner",
                json!({"config": {"fields": ["user_id"]}}),
            ),
            base(),
        )
        .unwrap();
    let batch = records(&[
        r#"{"user_id":"u1","n":1}"#,
        r#"{"n":2,"user_id":"u1"}"#,
        r#"{"user_id":"u2"}"#,
        r#"{"n":3}"#,
    ]);
    let routes = p.partition(&batch, Some(16)).unwrap();
    let r0 = routes[0].clone().unwrap();
    assert_eq!(r0.key.as_deref(), Some("u1"));
    assert!(r0.index.unwrap() < 16);
    assert_eq!(routes[1], Ok(r0.clone()));
    assert_eq!(routes[2].as_ref().unwrap().key.as_deref(), Some("u2"));
    assert!(routes[3].as_ref().unwrap_err().contains("user_id"));
    // The same key gets the same index in every run (FNV-1a, mapped by multiply-shift).
    let again = p.partition(&batch[..1], Some(16)).unwrap();
    assert_eq!(again[0], Ok(r0));
    let no_count = p.partition(&batch[..1], None).unwrap();
    assert_eq!(
        no_count[0],
        Ok(Route {
            key: Some("u1".into()),
            index: None,
            explicit_hash_key: None
        })
    );
}

#[test]
fn typed_csv_decodes_and_encodes() {
    let s = spec(
        "typed-csv",
        json!({"config": {"columns": [{"name": "id", "type": "integer"}, {"name": "name"},
                                      {"name": "ok", "type": "boolean"}]}}),
    );
    let mut decoder = host().decoder(&s, base()).unwrap();
    assert_eq!(decoder.name(), "decode typed_csv.wasm");
    let out = decoder
        .process(&records(&[
            "1,ann,true",
            "2,bob,false\n3,\"c, d\",1",
            "x,y,z",
        ]))
        .unwrap();
    assert_eq!(value(&out[0]), r#"{"id":1,"name":"ann","ok":true}"#);
    let Outcome::Records(two) = &out[1] else {
        panic!("{:?}", out[1])
    };
    assert_eq!(two.len(), 2);
    assert_eq!(&two[1].value[..], br#"{"id":3,"name":"c, d","ok":true}"#);
    assert!(matches!(&out[2], Outcome::Error(e) if e.contains("not an integer")));

    let mut encoder = host().encoder(&s, base()).unwrap();
    let out = encoder
        .process(&records(&[r#"{"name":"c, d","id":3,"ok":true}"#]))
        .unwrap();
    assert_eq!(value(&out[0]), r#"3,"c, d",true"#);
}

/// Runs `bad` through a hostile stage: the batch fails with a `StageError` that names the plugin,
/// and the same stage then handles a good batch.
fn contained(stage: &mut dyn Stage, bad: &str) -> StageError {
    let err = stage
        .process(&records(&["fine", bad]))
        .expect_err("the hostile batch must fail");
    assert_eq!(err.stage, stage.name());
    let out = stage.process(&records(&["fine", "also fine"])).unwrap();
    assert_eq!(out, vec![Outcome::Keep, Outcome::Keep]);
    err
}

/// Asserts that `err`'s message says each of `texts`.
fn says(err: &StageError, texts: &[&str]) {
    for t in texts {
        assert!(err.message.contains(t), "{err}");
    }
}

/// [`contained`] for the hostile transform under `limits`: the error says each of `texts`.
fn hostile(limits: Value, bad: &str, texts: &[&str]) -> StageError {
    let mut stage = transform("hostile", limits);
    let err = contained(stage.as_mut(), bad);
    says(&err, texts);
    err
}

#[test]
fn infinite_loop_is_stopped_by_the_timeout() {
    let mut stage = transform("hostile", json!({"timeout": "50ms"}));
    let started = Instant::now();
    says(&contained(stage.as_mut(), "loop"), &["timed out"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn unbounded_allocation_hits_the_memory_cap() {
    hostile(
        json!({"memory": "16MiB"}),
        "alloc",
        &["memory limit of 16777216 bytes"],
    );
}

#[test]
fn panic_is_a_trap_with_its_message() {
    let err = hostile(
        json!({}),
        "panic",
        &["panicked", "hostile plugin panics on purpose"],
    );
    assert_eq!(err.stage, "transform hostile.wasm");
}

#[test]
fn stack_overflow_is_contained() {
    // A Rust guest's shadow stack lives in linear memory: overflowing it is an out-of-bounds
    // access below address 0, a trap like any other.
    hostile(json!({}), "overflow", &["plugin trapped"]);
}

#[test]
fn wrong_number_of_outcomes_is_a_contract_violation() {
    hostile(json!({}), "short", &["returned 1 outcomes for 2 records"]);
}

#[test]
fn fuel_limit_stops_a_loop() {
    hostile(
        json!({"fuel": 5_000_000, "timeout": "30s"}),
        "loop",
        &["out of fuel"],
    );
}

/// The SDK's allocator reuses what a batch freed: 3,000 batches of JSON work (300,000 records,
/// about 10 small blocks each) stay under a 4 MiB memory cap, which a leak of one 16-byte block
/// per record (4.6 MiB) would break; then, in an instance with room for it, one value larger than
/// the allocator's chunks goes through too.
#[test]
fn a_plugin_memory_stays_flat_over_many_batches() {
    let mask = |memory: &str| {
        transform(
            "mask-fields",
            json!({"config": {"fields": ["email"]}, "memory": memory}),
        )
    };
    let value = |i: usize, pad: usize| {
        format!(
            r#"{{"id":{i},"email":"u{i}@x.y","pad":"{}"}}"#,
            "x".repeat(pad)
        )
    };
    let texts: Vec<String> = (0..100).map(|i| value(i, 40)).collect();
    let batch = records(&texts.iter().map(String::as_str).collect::<Vec<_>>());
    let mut small = mask("4MiB");
    for _ in 0..3_000 {
        let out = small.process(&batch).unwrap();
        assert_eq!(out.len(), batch.len());
    }
    let big = mask("16MiB")
        .process(&records(&[&value(7, 1 << 20)]))
        .unwrap();
    let masked = self::value(&big[0]);
    assert!(masked.starts_with(r#"{"id":7,"email":"***","pad":"xxx"#));
    assert_eq!(
        masked.len(),
        (1 << 20) + r#"{"id":7,"email":"***","pad":""}"#.len()
    );
}

#[test]
fn host_survives_many_failures() {
    let mut stage = transform("hostile", json!({"timeout": "20ms", "memory": "8MiB"}));
    for bad in ["panic", "alloc", "loop", "short", "panic", "overflow"].repeat(3) {
        assert!(stage.process(&records(&[bad])).is_err());
    }
    keeps(stage.as_mut(), "ok");
}

/// Asserts that `stage` (after whatever failed before) keeps a good record.
fn keeps(stage: &mut dyn Stage, good: &str) {
    assert_eq!(
        stage.process(&records(&[good])).unwrap(),
        vec![Outcome::Keep]
    );
}

#[test]
fn decoder_with_invalid_json_is_a_contract_violation() {
    let mut decoder = host()
        .decoder(&spec("hostile-format", json!({})), base())
        .unwrap();
    let err = decoder
        .process(&records(&[r#"{"a":1}"#, "bad-json"]))
        .unwrap_err();
    says(&err, &["record 1: output is not valid JSON"]);
    assert_eq!(err.stage, "decode hostile_format.wasm");
    // A kept input that is not JSON is just as bad for a decoder.
    let err = decoder.process(&records(&["plain text"])).unwrap_err();
    says(&err, &["kept input is not valid JSON"]);
    keeps(decoder.as_mut(), "[1]");
}

#[test]
fn partitioner_with_wrong_shape_is_a_contract_violation() {
    let mut p = host()
        .partitioner(&spec("hostile-partitioner", json!({})), base())
        .unwrap();
    let err = p.partition(&records(&["a", "short"]), Some(4)).unwrap_err();
    says(&err, &["returned 0 routes for 2 records"]);
    let err = p
        .partition(&records(&["out-of-range"]), Some(4))
        .unwrap_err();
    says(&err, &["index 4 is out of range"]);
    let ok = p.partition(&records(&["a"]), Some(4)).unwrap();
    assert_eq!(ok[0].as_ref().unwrap().index, Some(0));
}

#[test]
fn check_accepts_a_good_config() {
    let s = spec("mask-fields", json!({"config": {"fields": ["email"]}}));
    host().check(&s, base(), PluginKind::Transform).unwrap();
    let s = spec("typed-csv", json!({"config": {"columns": [{"name": "a"}]}}));
    host().check(&s, base(), PluginKind::Format).unwrap();
}

#[test]
fn check_locates_config_errors_with_json_pointers() {
    let s = spec(
        "mask-fields",
        json!({"config": {"fields": ["email", 7], "replacment": "x"}}),
    );
    let err = host().check(&s, base(), PluginKind::Transform).unwrap_err();
    let PluginCheckError::Config(errors) = err else {
        panic!("{err:?}")
    };
    assert!(errors.iter().any(|(at, _)| at == "/fields/1"), "{errors:?}");
    assert!(
        errors
            .iter()
            .any(|(at, msg)| at.is_empty() && msg.contains("replacment")),
        "{errors:?}"
    );

    let s = spec(
        "filter",
        json!({"config": {"conditions": [{"field": "a", "op": "near"}]}}),
    );
    let PluginCheckError::Config(errors) =
        host().check(&s, base(), PluginKind::Transform).unwrap_err()
    else {
        panic!()
    };
    assert!(
        errors.iter().any(|(at, _)| at == "/conditions/0/op"),
        "{errors:?}"
    );
}

#[test]
fn check_reports_init_rejection() {
    // Valid for the schema, but `gt` needs a value: the plugin's `init` says so.
    let s = spec(
        "filter",
        json!({"config": {"conditions": [{"field": "a", "op": "gt"}]}}),
    );
    let err = host().check(&s, base(), PluginKind::Transform).unwrap_err();
    assert!(
        matches!(&err, PluginCheckError::Init(m) if m.contains("needs a `value`")),
        "{err:?}"
    );
    // Starting the stage fails the same way.
    let err = host().transform(&s, base()).err().expect("init must fail");
    assert!(err.to_string().contains("needs a `value`"), "{err}");
}

#[test]
fn check_reports_the_wrong_kind() {
    let s = spec("field-partitioner", json!({"config": {"fields": ["a"]}}));
    let err = host().check(&s, base(), PluginKind::Transform).unwrap_err();
    match &err {
        PluginCheckError::WrongKind { expected, found } => {
            assert_eq!(*expected, PluginKind::Transform);
            assert_eq!(found, "partitioner");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "plugin is a partitioner plugin, but a transform plugin is needed here"
    );
    assert!(
        host()
            .decoder(&spec("mask-fields", json!({})), base())
            .is_err()
    );
}

#[test]
fn check_reports_missing_and_non_wasm_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("text.wasm"), "hello").unwrap();
    for (file, says) in [
        ("nope.wasm", "nope.wasm"),
        ("text.wasm", "not a WebAssembly file"),
    ] {
        let spec: PluginSpec = serde_json::from_value(json!({ "wasm": file })).unwrap();
        let err = host()
            .check(&spec, dir.path(), PluginKind::Transform)
            .unwrap_err();
        assert!(
            matches!(&err, PluginCheckError::Load(m) if m.contains(says)),
            "{err:?}"
        );
    }
}

#[test]
fn plugin_test_prints_what_comes_out() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("records.jsonl");
    std::fs::write(&input, "{\"email\":\"a@b.c\"}\n\n{\"n\":1}\nnope\n").unwrap();
    // `sluice plugin test` of mask-fields with `config` over `input`: what it prints, or its error.
    let mask = |config: &str| {
        let mut out = Vec::new();
        run_test(
            host(),
            &TestRun {
                wasm: &wasm::plugin("mask-fields"),
                kind: PluginKind::Transform,
                config,
                input: &input,
                partitions: None,
                envelopes: false,
            },
            &mut out,
        )
        .map(|()| String::from_utf8(out).unwrap())
    };
    let text = mask(r#"{"fields":["email"]}"#).unwrap();
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines[0], r#"{"email":"***"}"#);
    assert_eq!(lines[1], r#"{"n":1}"#);
    assert!(
        lines[2].starts_with("! record 2: value is not valid JSON"),
        "{text}"
    );
    assert_eq!(lines[3], "# 3 records in, 2 out, 0 dropped, 1 errors");

    let err = mask(r#"{"fields":"email"}"#).unwrap_err();
    assert!(err.to_string().starts_with("config/fields: "), "{err}");
}

/// Runs `cmd` and asserts that it succeeded, showing its stderr when not.
fn run_ok(cmd: &mut std::process::Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `cargo test` of a scaffolded crate, natively, with a target dir shared between test runs.
fn cargo_test_crate(root: &Path) {
    run_ok(
        std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
            .args(["test", "--quiet", "--manifest-path"])
            .arg(root.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(wasm::plugin_target_dir().join("scaffold-native"))
            .env_remove("CARGO_TARGET_DIR"),
    );
}

#[test]
fn scaffolded_plugin_outside_the_repository_builds_tests_and_runs() {
    // A new user's folder, far from any Sluice checkout, and a cache of their own.
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join("cache");
    let new = |name: &str, kind: &str| {
        std::process::Command::new(kit::sluice_bin())
            .args(["plugin", "new", name, "--kind", kind])
            .current_dir(home.path())
            .env("SLUICE_CACHE_DIR", &cache)
            .output()
            .unwrap()
    };
    let out = new("router", "partitioner");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = home.path().join("router");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    // The crate builds against the SDK this binary carries, written under the cache.
    let sdk = cache.join("sdk");
    assert!(
        manifest.contains(&format!("path = \"{}", sdk.display())),
        "{manifest}"
    );
    let written: Vec<_> = std::fs::read_dir(&sdk).unwrap().collect();
    assert_eq!(written.len(), 1, "one SDK folder under {}", sdk.display());
    // A second crate reuses the same SDK folder.
    assert!(new("tagger", "transform").status.success());
    assert_eq!(std::fs::read_dir(&sdk).unwrap().count(), 1);
    assert!(!new("router", "partitioner").status.success(), "exists");

    cargo_test_crate(&root);
    let out = wasm::build_plugins(&root.join("Cargo.toml"), &wasm::plugin_target_dir());
    let wasm_file = out.join("router.wasm");
    let s: PluginSpec = serde_json::from_value(json!({
        "wasm": wasm_file,
        "config": {"field": "user"}
    }))
    .unwrap();
    host().check(&s, base(), PluginKind::Partitioner).unwrap();
    // And `sluice plugin test` runs it: the same user, the same partition.
    let input = home.path().join("records.jsonl");
    std::fs::write(
        &input,
        "{\"user\":\"a\"}\n{\"user\":\"a\",\"x\":1}\n{\"user\":\"b\"}\n",
    )
    .unwrap();
    let run = std::process::Command::new(kit::sluice_bin())
        .args(["plugin", "test"])
        .arg(&wasm_file)
        .args([
            "--kind",
            "partitioner",
            "--config",
            r#"{"field":"user"}"#,
            "--partitions",
            "8",
            "--input",
        ])
        .arg(&input)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // `key=<key> index=<partition> <record>`, one line per record.
    let routes: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("key="))
        .map(|l| l.split(" {").next().unwrap_or(l))
        .collect();
    assert_eq!(routes.len(), 3, "{stdout}");
    assert!(routes[0].starts_with("a index="), "{stdout}");
    assert_eq!(routes[0], routes[1], "same user, same route: {stdout}");
    assert!(routes[2].starts_with("b index="), "{stdout}");
}

#[test]
fn scaffolded_plugin_inside_the_repository_uses_its_sdk_and_every_kind_runs() {
    // Inside the repository (as `sluice plugin new` run in a checkout would do): by path. The
    // folder is under the repository's (git-ignored) `target/`, wherever CARGO_TARGET_DIR points.
    let unused_cache = tempfile::tempdir().unwrap();
    let scratch_root = kit::repo_root().join("target");
    std::fs::create_dir_all(&scratch_root).unwrap();
    let inside_dir = tempfile::Builder::new()
        .prefix("scaffold-test-")
        .tempdir_in(&scratch_root)
        .unwrap();
    let inside = inside_dir.path().to_path_buf();
    let new = |name: &str, kind| scaffold::new_plugin(name, kind, &inside, unused_cache.path());
    let root = new("tagger", PluginKind::Transform).unwrap();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains("sluice-sdk = { path = \"../../../sdk\" }"),
        "{manifest}"
    );
    assert_eq!(std::fs::read_dir(unused_cache.path()).unwrap().count(), 0);
    assert!(matches!(
        new("tagger", PluginKind::Transform),
        Err(scaffold::ScaffoldError::Exists(_))
    ));

    // Each kind's crate passes its native test with plain `cargo test`, builds to wasm with one
    // command, and the host accepts it as that kind.
    let target = wasm::plugin_target_dir();
    for (name, kind, config) in [
        (
            "tagger",
            PluginKind::Transform,
            json!({"field": "env", "value": "prod"}),
        ),
        ("liner", PluginKind::Format, json!({})),
        ("router", PluginKind::Partitioner, json!({"field": "user"})),
    ] {
        let root = if name == "tagger" {
            root.clone()
        } else {
            new(name, kind).unwrap()
        };
        cargo_test_crate(&root);
        let out = wasm::build_plugins(&root.join("Cargo.toml"), &target);
        let s: PluginSpec = serde_json::from_value(json!({
            "wasm": out.join(format!("{name}.wasm")),
            "config": config
        }))
        .unwrap();
        host().check(&s, base(), kind).unwrap();
        if kind == PluginKind::Transform {
            let mut stage = host().transform(&s, base()).unwrap();
            let got = stage.process(&records(&[r#"{"id":1}"#])).unwrap();
            assert_eq!(value(&got[0]), r#"{"id":1,"env":"prod"}"#);
        }
    }
}

#[test]
fn a_plugin_built_for_another_wit_version_is_refused_naming_both_versions() {
    // The identity plugin with its `sluice:plugin` package version rewritten, byte for byte (the
    // same length, so the component stays well-formed): what a plugin built against another SDK
    // looks like to the host.
    let bytes = std::fs::read(wasm::plugin("identity")).unwrap();
    let from = format!("@{}", sluice_runtime::plugin::WIT_VERSION);
    let to = "@9.9.9";
    assert_eq!(from.len(), to.len());
    let mut patched = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let mut replaced = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(from.as_bytes()) {
            patched.extend_from_slice(to.as_bytes());
            i += from.len();
            replaced += 1;
        } else {
            patched.push(bytes[i]);
            i += 1;
        }
    }
    assert!(replaced > 0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.wasm");
    std::fs::write(&path, patched).unwrap();
    let s: PluginSpec = serde_json::from_value(json!({"wasm": path})).unwrap();
    let err = host().check(&s, base(), PluginKind::Transform).unwrap_err();
    assert!(matches!(err, PluginCheckError::WitVersion { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("sluice:plugin@9.9.9"), "{msg}");
    assert!(
        msg.contains(&format!(
            "sluice:plugin@{}",
            sluice_runtime::plugin::WIT_VERSION
        )),
        "{msg}"
    );
}

// --- through the `sluice` binary ---------------------------------------------------------------

/// A file-to-file pipeline spec with `extra` YAML (transforms, partitioner, errors, ...).
fn pipeline_spec(name: &str, decode: &str, extra: &str) -> String {
    format!(
        "version: 1\nname: {name}\nsource:\n  type: file\n  paths: [in/*.txt]\n  batch_size: 1\n\
         format:\n  decode: {decode}\n  encode: json\nsink:\n  type: file\n  path: out/data.jsonl\n  envelope: true\n\
         offsets:\n  store: file\n  path: offsets\n{extra}"
    )
}

fn envelope_values(s: &kit::Scratch) -> Vec<Value> {
    s.lines("out/data.jsonl")
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).expect("an envelope line"))
        .collect()
}

/// The `n` field of each record value written to `out/data.jsonl`.
fn written_ns(s: &kit::Scratch) -> Vec<Value> {
    envelope_values(s)
        .iter()
        .map(|l| l["value"]["n"].clone())
        .collect()
}

#[test]
fn pipeline_masks_with_a_wasm_transform_and_routes_with_a_wasm_partitioner() {
    let s = kit::Scratch::new();
    s.write(
        "in/a.txt",
        "{\"user_id\":\"u1\",\"email\":\"a@b.c\"}\n{\"user_id\":\"u2\",\"email\":\"x@y.z\"}\n{\"user_id\":\"u1\"}\n",
    );
    let extra = format!(
        "transforms:\n  - wasm: {}\n    config: {{ fields: [email] }}\n    timeout: 50ms\n    memory: 32MiB\n\
         partitioner: {{ wasm: {}, config: {{ fields: [user_id] }} }}\n",
        wasm::plugin("mask-fields").display(),
        wasm::plugin("field-partitioner").display()
    );
    s.write("spec.yaml", &pipeline_spec("wasm-mask", "json", &extra));
    s.run_ok(&["run", "spec.yaml"]);
    let lines = envelope_values(&s);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0]["value"], json!({"user_id": "u1", "email": "***"}));
    assert_eq!(lines[1]["value"], json!({"user_id": "u2", "email": "***"}));
    assert_eq!(lines[2]["value"], json!({"user_id": "u1"}));
    let keys: Vec<_> = lines.iter().map(|l| l["partition_key"].clone()).collect();
    assert_eq!(keys, vec![json!("u1"), json!("u2"), json!("u1")]);
}

#[test]
fn pipeline_decodes_with_a_wasm_format() {
    let s = kit::Scratch::new();
    s.write("in/a.txt", "1,ann,true\n2,\"b, c\",false\n");
    let decode = format!(
        "{{ wasm: {}, config: {{ columns: [{{name: id, type: integer}}, {{name: name}}, {{name: ok, type: boolean}}] }} }}",
        wasm::plugin("typed-csv").display()
    );
    s.write("spec.yaml", &pipeline_spec("wasm-csv", &decode, ""));
    s.run_ok(&["run", "spec.yaml"]);
    let values: Vec<_> = envelope_values(&s)
        .into_iter()
        .map(|l| l["value"].clone())
        .collect();
    assert_eq!(
        values,
        vec![
            json!({"id": 1, "name": "ann", "ok": true}),
            json!({"id": 2, "name": "b, c", "ok": false})
        ]
    );
}

const HOSTILE_INPUT: &str =
    "{\"n\":1}\n\"loop\"\n{\"n\":2}\n\"panic\"\n{\"n\":3}\n\"alloc\"\n{\"n\":4}\n";

fn hostile_spec(tolerance: &str) -> String {
    let extra = format!(
        "transforms:\n  - wasm: {}\n    timeout: 50ms\n    memory: 16MiB\n\
         errors:\n  tolerance: {tolerance}\n  dead_letter:\n    type: file\n    path: dlq.jsonl\n",
        wasm::plugin("hostile").display()
    );
    pipeline_spec("hostile", "json", &extra)
}

#[test]
fn pipeline_sends_batches_of_a_failing_plugin_to_the_dead_letter_file_and_goes_on() {
    let s = scratch(HOSTILE_INPUT, &hostile_spec("all"));
    s.run_ok(&["run", "spec.yaml"]);
    let ns = written_ns(&s);
    assert_eq!(ns, vec![json!(1), json!(2), json!(3), json!(4)]);
    let dead: Vec<Value> = s
        .lines("dlq.jsonl")
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dead.len(), 3, "{dead:?}");
    for (entry, (value, error)) in dead.iter().zip([
        ("loop", "timed out"),
        ("panic", "hostile plugin panics on purpose"),
        ("alloc", "memory limit"),
    ]) {
        assert_eq!(entry["stage"], "transform hostile.wasm", "{entry}");
        assert_eq!(entry["value"], value, "{entry}");
        let msg = entry["error"].as_str().unwrap();
        assert!(msg.contains(error), "{msg}");
    }
}

#[test]
fn pipeline_with_tolerance_none_stops_at_a_failing_plugin() {
    let s = scratch(HOSTILE_INPUT, &hostile_spec("none"));
    let out = s.run(&["run", "spec.yaml"]);
    stopped_at_the_hostile_plugin(&s, out.status, &kit::stderr(&out));
}

/// A pipeline with `tolerance: none` and the hostile plugin stopped at the plugin's timeout: it
/// failed, says why, and wrote nothing past the first record.
fn stopped_at_the_hostile_plugin(s: &kit::Scratch, status: std::process::ExitStatus, err: &str) {
    assert!(!status.success(), "a plugin failure must stop the pipeline");
    assert!(
        err.contains("hostile.wasm") && err.contains("timed out"),
        "{err}"
    );
    let ns = written_ns(s);
    assert_eq!(
        ns,
        vec![json!(1)],
        "nothing past the failing record is written"
    );
}

/// Records that make the hostile plugin wait in WASI (a sleep, a wait that never ends, via
/// `pollable.block` and via `poll`) or leak WASI resources, between good ones.
const WAITING_INPUT: &str = "{\"n\":1}\n\"sleep\"\n{\"n\":2}\n\"block-forever\"\n{\"n\":3}\n\"poll-forever\"\n{\"n\":4}\n\"pollables\"\n{\"n\":5}\n";

fn hostile_spec_with(tolerance: &str, limits: &str) -> String {
    let extra = format!(
        "transforms:\n  - wasm: {}\n{limits}\
         errors:\n  tolerance: {tolerance}\n  dead_letter:\n    type: file\n    path: dlq.jsonl\n",
        wasm::plugin("hostile").display()
    );
    pipeline_spec("hostile", "json", &extra)
}

fn dead_letters(s: &kit::Scratch) -> Vec<Value> {
    s.lines("dlq.jsonl")
        .iter()
        .map(|l| serde_json::from_str(l).expect("a dead-letter line"))
        .collect()
}

/// A scratch folder with `input` in `in/a.txt` and `spec` in `spec.yaml`.
fn scratch(input: &str, spec: &str) -> kit::Scratch {
    let s = kit::Scratch::new();
    s.write("in/a.txt", input);
    s.write("spec.yaml", spec);
    s
}

/// Runs `sluice run spec.yaml` in `s`, killing it (and failing) after `limit`.
fn run_within(s: &kit::Scratch, limit: Duration) -> (std::process::ExitStatus, String) {
    let mut child = s.spawn(&["run", "spec.yaml"]);
    let status = kit::wait_exit(&mut child, limit);
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    (status, err)
}

#[test]
fn pipeline_dead_letters_a_plugin_that_waits_in_wasi_within_its_timeout() {
    let s = scratch(
        WAITING_INPUT,
        &hostile_spec_with("all", "    timeout: 50ms\n    memory: 16MiB\n"),
    );
    let started = Instant::now();
    let (status, err) = run_within(&s, Duration::from_secs(60));
    assert!(status.success(), "{err}");
    let took = started.elapsed();
    let ns = written_ns(&s);
    assert_eq!(ns, vec![json!(1), json!(2), json!(3), json!(4), json!(5)]);
    let dead = dead_letters(&s);
    assert_eq!(dead.len(), 4, "{dead:?}");
    for (entry, (value, error)) in dead.iter().zip([
        ("sleep", "timed out"),
        ("block-forever", "timed out"),
        ("poll-forever", "timed out"),
        ("pollables", "WASI resources"),
    ]) {
        assert_eq!(entry["value"], value, "{entry}");
        let msg = entry["error"].as_str().unwrap();
        assert!(msg.contains(error), "{msg}");
    }
    // Four failing batches, each bounded by timeout + 1 s (a 30 s sleep and two endless waits
    // would otherwise hold the pipeline for ever), plus the start.
    assert!(took < Duration::from_secs(4 + 10), "{took:?}");

    // Each waiting batch alone: it fails within the timeout + 1 s.
    for cmd in ["sleep", "block-forever", "poll-forever"] {
        let s = scratch(
            &format!("\"{cmd}\"\n{{\"n\":1}}\n"),
            &hostile_spec_with("all", "    timeout: 50ms\n"),
        );
        let baseline = {
            let b = scratch(
                "{\"n\":0}\n{\"n\":1}\n",
                &hostile_spec_with("all", "    timeout: 50ms\n"),
            );
            let started = Instant::now();
            let (status, err) = run_within(&b, Duration::from_secs(60));
            assert!(status.success(), "{err}");
            started.elapsed()
        };
        let started = Instant::now();
        let (status, err) = run_within(&s, Duration::from_secs(60));
        assert!(status.success(), "{cmd}: {err}");
        // The promise is timeout + 1 s; the bound leaves 4 s more for a loaded 2-core machine
        // (two runs timed against each other), still far below the 30 s sleep or an endless wait.
        let extra = started.elapsed().saturating_sub(baseline);
        assert!(
            extra < Duration::from_millis(50 + 1000 + 4000),
            "{cmd}: the waiting batch took {extra:?} more than a good one"
        );
        assert_eq!(dead_letters(&s).len(), 1, "{cmd}");
    }
}

#[test]
fn pipeline_with_tolerance_none_stops_at_a_plugin_that_sleeps() {
    let s = scratch(
        "{\"n\":1}\n\"block-forever\"\n{\"n\":2}\n",
        &hostile_spec_with("none", "    timeout: 50ms\n"),
    );
    let (status, err) = run_within(&s, Duration::from_secs(60));
    stopped_at_the_hostile_plugin(&s, status, &err);
}

#[test]
fn sigterm_drains_promptly_while_a_plugin_waits_in_wasi() {
    // The drain finishes the batch in the plugin and those waiting for it (`channel_capacity: 1`:
    // one in the source channel; with a pool, one more held by the dispatcher), each ended by the
    // 1 s timeout; then the pipeline exits. One file is one partition: one worker gets it.
    for (workers, batches) in [(1, 2), (2, 3)] {
        let s = kit::Scratch::new();
        let mut input = String::from("{\"n\":1}\n");
        input.push_str(&"\"block-forever\"\n".repeat(20));
        s.write("in/a.txt", &input);
        s.write(
            "spec.yaml",
            &format!(
                "{}pipeline:\n  channel_capacity: 1\n  workers: {workers}\n",
                hostile_spec_with("all", "    timeout: 1s\n")
            ),
        );
        let mut child = s.spawn(&["run", "spec.yaml"]);
        assert!(
            kit::wait_for(Duration::from_secs(60), || !s
                .lines("out/data.jsonl")
                .is_empty()),
            "the first record was never written"
        );
        kit::signal(&child, "-TERM");
        let signalled = Instant::now();
        let status = kit::wait_exit(&mut child, Duration::from_secs(20));
        assert!(status.success(), "exit {status:?}");
        let took = signalled.elapsed();
        assert!(
            took < Duration::from_secs(batches + 2),
            "{workers} workers: {took:?}"
        );
        assert!(
            dead_letters(&s).len() < 20,
            "the drain did not wait for every batch"
        );
    }
}

#[test]
fn pipeline_dead_letters_an_output_bomb_and_lives() {
    let s = kit::Scratch::new();
    // 1.2 million empty output records for one input (6 MB of output from a 128 MiB plugin):
    // over the per-batch output-record limit.
    s.write("in/a.txt", "{\"n\":1}\n\"bomb:1200000\"\n{\"n\":2}\n");
    s.write(
        "spec.yaml",
        &hostile_spec_with("all", "    timeout: 10s\n    memory: 128MiB\n"),
    );
    let (status, err) = run_within(&s, Duration::from_secs(120));
    assert!(status.success(), "{err}");
    let dead = dead_letters(&s);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["value"], "bomb:1200000");
    let msg = dead[0]["error"].as_str().unwrap();
    assert!(
        msg.contains("more than 1000000 output records for one batch"),
        "{msg}"
    );
    let ns = written_ns(&s);
    assert_eq!(ns, vec![json!(1), json!(2)]);
}

#[test]
fn plugin_test_runs_a_plugin_that_sleeps_prints_or_waits() {
    let s = kit::Scratch::new();
    let wasm = wasm::plugin("hostile");
    let wasm = wasm.to_str().unwrap();
    let test = |input: &'static str| {
        [
            "plugin",
            "test",
            wasm,
            "--kind",
            "transform",
            "--input",
            input,
        ]
    };
    // A short sleep works, as under `sluice run` (it used to panic the host: "Cannot start a
    // runtime from within a runtime").
    s.write("nap.txt", "\"nap\"\n{\"n\":1}\n");
    let out = s.run_ok(&test("nap.txt"));
    assert!(
        kit::stdout(&out).contains("# 2 records in, 2 out, 0 dropped, 0 errors"),
        "{}",
        kit::stdout(&out)
    );
    // A panic writes to stderr (a blocking WASI stream write) and is reported, not a host panic.
    s.write("panic.txt", "\"panic\"\n");
    let out = s.run(&test("panic.txt"));
    assert_eq!(out.status.code(), Some(1), "{}", kit::stderr(&out));
    assert!(
        kit::stderr(&out).contains("hostile plugin panics on purpose"),
        "{}",
        kit::stderr(&out)
    );
    // A wait that never ends is stopped by the default 200 ms timeout.
    s.write("wait.txt", "\"block-forever\"\n");
    let started = Instant::now();
    let mut child = s.spawn(&test("wait.txt"));
    let status = kit::wait_exit(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(1));
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("timed out"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

// --- Python plugins (componentize-py) -----------------------------------------------------------

/// Records with a user id, a region and a numeric id, one JSON object per line.
fn user_lines(n: u32) -> String {
    (0..n)
        .map(|i| {
            format!(
                "{{\"user_id\":\"user-{}\",\"region\":\"{}\",\"n\":{i}}}\n",
                i % 13,
                ["eu", "us", "ap"][i as usize % 3]
            )
        })
        .collect()
}

/// Runs `sluice plugin test` on a partitioner and returns its route lines.
fn plugin_test_routes(wasm_file: &Path, config: &str, input: &Path) -> Vec<String> {
    let run = std::process::Command::new(kit::sluice_bin())
        .args(["plugin", "test"])
        .arg(wasm_file)
        .args(["--kind", "partitioner", "--config", config])
        .args(["--partitions", "8", "--input"])
        .arg(input)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    stdout
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_python_partitioner_routes_exactly_like_the_rust_one_through_the_binary() {
    let dir = kit::repo_root().join("plugins/python-field-partitioner");
    // Its native tests pass under plain Python.
    python_unittest(&dir);
    let python = wasm::build_python_plugin(
        &dir,
        "partitioner",
        &wasm::plugin_target_dir().join("python/python_field_partitioner.wasm"),
    );
    let rust = wasm::plugin("field-partitioner");

    // Keys and partition indexes, record by record, as `sluice plugin test` prints them.
    let s = kit::Scratch::new();
    s.write("in/users.txt", &user_lines(60));
    let config = r#"{"fields":["user_id","region"]}"#;
    let py_routes = plugin_test_routes(&python, config, &s.path("in/users.txt"));
    let rust_routes = plugin_test_routes(&rust, config, &s.path("in/users.txt"));
    assert_eq!(py_routes.len(), 60);
    assert_eq!(py_routes, rust_routes);
    let indexes: std::collections::BTreeSet<_> = py_routes
        .iter()
        .filter_map(|l| l.split(" index=").nth(1)?.split(' ').next())
        .collect();
    assert!(
        indexes.len() > 2,
        "the keys spread over partitions: {indexes:?}"
    );

    // And in a pipeline run by the binary: the same partition keys as the Rust plugin gives.
    let mut keys = Vec::new();
    for (name, wasm_file) in [("py", &python), ("rs", &rust)] {
        let s = kit::Scratch::new();
        s.write("in/users.txt", &user_lines(60));
        s.write(
            "spec.yaml",
            &pipeline_spec(
                name,
                "json",
                &format!(
                    "partitioner:\n  wasm: {}\n  config:\n    fields: [user_id, region]\n",
                    wasm_file.display()
                ),
            ),
        );
        s.run_ok(&["run", "spec.yaml"]);
        let got: Vec<String> = envelope_values(&s)
            .iter()
            .map(|v| {
                v["partition_key"]
                    .as_str()
                    .expect("a partition key")
                    .to_string()
            })
            .collect();
        assert_eq!(got.len(), 60);
        keys.push(got);
    }
    assert_eq!(keys[0], keys[1]);
    assert_eq!(keys[0][1], "user-1|us");
}

/// Runs a Python project's native tests (`python3 -m unittest`) in `dir`, with the guest library
/// on the path when it is not beside the app.
fn python_unittest(dir: &Path) {
    run_ok(
        std::process::Command::new("python3")
            .args(["-m", "unittest", "-q"])
            .current_dir(dir)
            .env("PYTHONPATH", kit::repo_root().join("sdk/python"))
            .env("PYTHONDONTWRITEBYTECODE", "1"),
    );
}

#[test]
fn a_python_plugin_scaffolded_outside_the_repository_builds_tests_and_runs() {
    let home = tempfile::tempdir().unwrap();
    let new = |name: &str, kind: &str| {
        std::process::Command::new(kit::sluice_bin())
            .args(["plugin", "new", name, "--kind", kind, "--lang", "python"])
            .current_dir(home.path())
            .env("SLUICE_CACHE_DIR", home.path().join("cache"))
            .output()
            .unwrap()
    };
    let made = new("py-router", "partitioner");
    assert!(made.status.success(), "{}", kit::stderr(&made));
    let root = home.path().join("py-router");
    python_unittest(&root);
    run_ok(
        std::process::Command::new(root.join("build.sh"))
            .env("COMPONENTIZE_PY", wasm::componentize_py()),
    );
    let input = home.path().join("records.jsonl");
    std::fs::write(
        &input,
        "{\"user\":\"alice\"}\n{\"user\":\"alice\",\"x\":1}\n{}\n",
    )
    .unwrap();
    let routes = plugin_test_routes(&root.join("py_router.wasm"), r#"{"field":"user"}"#, &input);
    assert_eq!(routes.len(), 3, "{routes:?}");
    assert!(routes[0].starts_with("key=alice index="), "{routes:?}");
    assert_eq!(
        routes[0].split(" {").next(),
        routes[1].split(" {").next(),
        "same user, same route"
    );
    assert!(routes[2].contains("field `user` is missing"), "{routes:?}");
    // A transform project passes its native tests too.
    let made = new("py-tagger", "transform");
    assert!(made.status.success(), "{}", kit::stderr(&made));
    python_unittest(&home.path().join("py-tagger"));
    // A format cannot be written in Python: a clear refusal.
    let refused = new("py-format", "format");
    assert!(!refused.status.success());
    assert!(kit::stderr(&refused).contains("transforms or partitioners"));
}

#[test]
fn plugin_test_takes_envelopes_from_stdin_and_prints_envelopes() {
    use std::io::Write as _;
    let mut child = std::process::Command::new(kit::sluice_bin())
        .args(["plugin", "test"])
        .arg(wasm::plugin("field-partitioner"))
        .args([
            "--kind",
            "partitioner",
            "--config",
            r#"{"fields":["user"]}"#,
        ])
        .args(["--partitions", "4", "--envelopes", "--input", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            concat!(
                r#"{"value":{"user":"ada"},"key":"k1","headers":{"h":"v"},"timestamp":5,"metadata":{"shard-id":"shardId-000000000001","partition":"shardId-000000000001","offset":"49"}}"#,
                "\n",
                r#"{"value":{"nouser":1}}"#,
                "\n"
            )
            .as_bytes(),
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let first: Value = serde_json::from_str(lines[0]).expect("an envelope");
    assert_eq!(first["value"], json!({"user": "ada"}));
    assert_eq!(first["key"], "k1");
    assert_eq!(first["headers"]["h"], "v");
    assert_eq!(first["timestamp"], 5);
    assert_eq!(first["metadata"]["shard-id"], "shardId-000000000001");
    assert_eq!(first["metadata"]["offset"], "49");
    assert_eq!(first["route"]["key"], "ada");
    assert!(first["route"]["index"].as_u64().is_some_and(|i| i < 4));
    assert!(lines[1].starts_with("! record 1:"), "{stdout}");
    // A malformed envelope names its line.
    let bad = std::process::Command::new(kit::sluice_bin())
        .args(["plugin", "test"])
        .arg(wasm::plugin("identity"))
        .args(["--kind", "transform", "--envelopes", "--input"])
        .arg(kit::repo_root().join("tests/fixtures/bad/jq.yaml"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        kit::stderr(&bad).contains("jq.yaml:1: not a JSON envelope"),
        "{}",
        kit::stderr(&bad)
    );
}

#[test]
fn a_rebuilt_plugin_is_swapped_in_while_running_and_a_bad_one_refused() {
    use std::io::Write as _;
    let s = kit::Scratch::new();
    // The running plugin is a copy that the test replaces as a rebuild would (write, rename).
    let replace = |from: &Path| {
        let tmp = s.path("t.wasm.tmp");
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, s.path("t.wasm")).unwrap();
    };
    replace(&wasm::plugin("identity"));
    s.write(
        "spec.yaml",
        "version: 1\nname: reload\nsource: {type: stdin, batch_size: 1}\ntransforms:\n  - wasm: t.wasm\nsink: {type: file, path: out.txt}\noffsets: {store: memory}\npipeline: {flush_interval: 10ms}\n",
    );
    let log = std::fs::File::create(s.path("sluice.log")).unwrap();
    let mut child = s
        .cmd(&["run", "spec.yaml", "--watch-plugins", "--no-progress"])
        .env("SLUICE_LOG", "info")
        .stdin(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut send = |line: &str| {
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
    };
    let out = || s.lines("out.txt");
    // Sends `line` until the pipeline has written `want` lines (each send is one batch, and a
    // batch is when a changed plugin is looked at).
    let until = |send: &mut dyn FnMut(&str), line: &str, want: &dyn Fn(&[String]) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            send(line);
            if kit::wait_for(Duration::from_millis(300), || want(&out())) {
                return;
            }
            assert!(Instant::now() < deadline, "never: {:?}", out());
        }
    };
    until(&mut send, "\"bomb:0\"", &|o| !o.is_empty());
    assert_eq!(out()[0], "\"bomb:0\"", "identity keeps it");

    // A version whose schema refuses the running config (mask-fields needs `fields`): refused,
    // identity goes on.
    replace(&wasm::plugin("mask-fields"));
    let refused = || s.read("sluice.log").contains("new plugin version refused");
    until(&mut send, "\"bomb:0\"", &|_| refused());
    assert!(
        s.read("sluice.log").contains("fields"),
        "{}",
        s.read("sluice.log")
    );
    let before = out().len();
    send("\"marker-1\"");
    assert!(kit::wait_for(Duration::from_secs(10), || out()
        .contains(&"\"marker-1\"".to_string())));
    assert!(out().len() > before);

    // A good rebuild (the hostile plugin: `bomb:0` makes no record at all) is swapped in.
    replace(&wasm::plugin("hostile"));
    until(&mut send, "\"bomb:0\"", &|_| {
        s.read("sluice.log").contains("plugin reloaded")
    });
    let seen = out().len();
    send("\"bomb:0\"");
    send("\"marker-2\"");
    assert!(kit::wait_for(Duration::from_secs(10), || out()
        .contains(&"\"marker-2\"".to_string())));
    let after: Vec<String> = out()[seen..].to_vec();
    assert_eq!(
        after,
        vec!["\"marker-2\"".to_string()],
        "bomb:0 now makes nothing"
    );
    drop(stdin);
    let status = kit::wait_exit(&mut child, Duration::from_secs(30));
    assert!(status.success(), "{}", s.read("sluice.log"));
}
