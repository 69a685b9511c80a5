//! `sluice validate` and `sluice schema`: the messages users see for bad specs are pinned by
//! snapshots, and the generated docs must match the code.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is the test failing

use sluice_test_kit::*;

/// Runs `sluice validate` on a fixture from `tests/fixtures/bad`, from that folder, so the
/// messages show the bare file name.
fn validate_fixture(name: &str) -> (bool, String) {
    let dir = repo_root().join("tests/fixtures/bad");
    let out = std::process::Command::new(sluice_bin())
        .args(["validate", name])
        .current_dir(&dir)
        .env("SLUICE_LOG", "warn")
        .env_remove("SLUICE_TEST_SURELY_UNSET_INPUT")
        .output()
        .expect("run sluice validate");
    (out.status.success(), stdout(&out))
}

macro_rules! bad_spec {
    ($test:ident, $file:literal) => {
        #[test]
        fn $test() {
            let (ok, text) = validate_fixture($file);
            assert!(!ok, "{} must be rejected", $file);
            insta::assert_snapshot!(text);
        }
    };
}

bad_spec!(unknown_key, "unknown-key.yaml");
bad_spec!(wrong_type, "wrong-type.yaml");
bad_spec!(missing_required, "missing-required.yaml");
bad_spec!(bad_enum, "bad-enum.yaml");
bad_spec!(bad_duration, "bad-duration.yaml");
bad_spec!(missing_env_var, "missing-env.yaml");
bad_spec!(yaml_syntax_error, "yaml-syntax.yaml");
bad_spec!(semantic_checks, "semantic.yaml");
bad_spec!(secret_values_are_hidden, "secret.yaml");
bad_spec!(
    jq_programs_are_compiled_and_errors_point_into_them,
    "jq.yaml"
);
bad_spec!(jq_needs_json_records, "jq-needs-json.yaml");
bad_spec!(
    unknown_kafka_properties_and_the_offset_topic_are_refused,
    "kafka-properties.yaml"
);
bad_spec!(interpolation_errors_never_echo_values, "interpolation.yaml");
bad_spec!(zero_periods_are_rejected, "zero-period.yaml");
bad_spec!(
    huge_durations_are_rejected_not_a_panic,
    "huge-duration.yaml"
);

#[test]
fn print_redacts_secrets() {
    let dir = repo_root().join("tests/fixtures/good");
    let out = std::process::Command::new(sluice_bin())
        .args(["validate", "--print", "secret.yaml"])
        .current_dir(&dir)
        .env("SLUICE_TEST_SECRET", "hunter2-very-secret")
        .output()
        .expect("run sluice validate");
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("secret_access_key: <redacted>"), "{text}");
    sluice_test_kit::assert_hidden(&text, &["hunter2"]);
    assert!(text.contains("access_key_id: AKIAEXAMPLE"), "{text}");
}

#[test]
fn print_redacts_every_librdkafka_sensitive_property() {
    let (printed, err) = validate_print(
        "version: 1\nname: sec\nsource:\n  type: kafka\n  brokers: [127.0.0.1:9092]\n  topics: [t]\n  group: g\n  properties:\n    sasl.oauthbearer.assertion.private.key.pem: hunter2-pem\n    sasl.oauthbearer.assertion.private.key.passphrase: hunter2-pass\n    sasl.oauthbearer.client.secret: hunter2-secret\n    ssl.keystore.password: hunter2-ks\n    ssl.key.location: /hunter2/key\n    ssl.key.pem: hunter2-keypem\n    sasl.password: ${PW}\n    client.rack: rack-1\nsink: {type: stdout}\noffsets:\n  store: kafka\n  brokers: [127.0.0.1:9092]\n  properties:\n    sasl.password: 12345\n",
        &[("PW", "hunter2-env")],
    );
    let text = printed + &err;
    sluice_test_kit::assert_hidden(&text, &["hunter2", "12345"]);
    assert!(
        text.contains("sasl.oauthbearer.assertion.private.key.pem: <redacted>"),
        "{text}"
    );
    assert!(text.contains("client.rack: rack-1"), "{text}");
}

/// Every spec the project ships, user examples and the bench scripts' specs alike, validates
/// (the bench specs take their endpoints and sizes from `${VAR:-default}`, so the defaults must
/// be valid too).
#[test]
fn every_example_and_bench_spec_is_valid() {
    // Example specs name plugins under ${SLUICE_PLUGIN_DIR}: point it at the test build.
    let plugin_dir = wasm::plugins_dir();
    for folder in ["examples", "scripts/bench/specs"] {
        let mut n = 0;
        for entry in std::fs::read_dir(repo_root().join(folder)).expect(folder) {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let out = std::process::Command::new(sluice_bin())
                    .arg("validate")
                    .arg(&path)
                    .env("SLUICE_PLUGIN_DIR", plugin_dir)
                    .current_dir(repo_root())
                    .output()
                    .expect("validate");
                assert!(out.status.success(), "{}: {}", path.display(), stdout(&out));
                n += 1;
            }
        }
        assert!(n > 0, "no specs found in {folder}");
    }
}

#[test]
fn the_schema_is_json_schema_for_editors() {
    let s = Scratch::new();
    let out = s.run_ok(&["schema"]);
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert!(schema["properties"]["source"].is_object());
    assert_eq!(schema["additionalProperties"], false);
}

#[test]
fn the_spec_reference_in_docs_is_up_to_date() {
    let s = Scratch::new();
    let generated = stdout(&s.run_ok(&["schema", "--markdown"]));
    let committed =
        std::fs::read_to_string(repo_root().join("docs/reference.md")).unwrap_or_default();
    assert!(
        generated == committed,
        "docs/reference.md is stale: run `cargo run -p sluice-runtime -- schema --markdown > docs/reference.md`"
    );
}

#[test]
fn print_shows_the_resolved_spec() {
    let (printed, _) = validate_print(
        "version: 1\nname: p\nsource:\n  type: generator\n  count: ${N:-7}\nsink: {type: stdout}\n",
        &[],
    );
    assert!(printed.contains("count: 7"), "{printed}");
}
