//! `sluice run --config FILE`: the operations API set up from the host's config file (address,
//! and the variable holding the control endpoints' token), through the binary.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is the test failing

use std::time::Duration;

use sluice_test_kit::http::{get_json, http};
use sluice_test_kit::*;

#[test]
fn the_config_files_http_address_serves_the_api_with_the_token_from_its_variable() {
    let s = Scratch::new();
    s.write(
        "spec.yaml",
        "version: 1\nname: cfg\nsource:\n  type: generator\n  count: 100000\n  rate: 200\nsink:\n  type: file\n  path: out/data.jsonl\n",
    );
    let port = free_port();
    s.write(
        "sluice.yaml",
        &format!("http:\n  address: 127.0.0.1:{port}\n  token_env: CFG_TOKEN\n"),
    );
    let child = s
        .cmd(&[
            "run",
            "--no-progress",
            "--config",
            "sluice.yaml",
            "spec.yaml",
        ])
        .env("CFG_TOKEN", "from-config")
        .env("SLUICE_HTTP_TOKEN", "not-this-one")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn sluice");
    let mut run = Running(child);
    assert!(
        wait_for(Duration::from_secs(30), || get_json(port, "/pipelines/cfg")
            .is_some_and(|(c, v)| c == 200 && v["state"] == "running")),
        "no API on the config's address"
    );
    let pause = |token: &str| {
        let auth = format!("Bearer {token}");
        http(
            port,
            "POST",
            "/pipelines/cfg/pause",
            &[("Authorization", &auth)],
        )
        .map(|r| r.0)
    };
    assert_eq!(
        http(port, "POST", "/pipelines/cfg/pause", &[]).map(|r| r.0),
        Some(401)
    );
    assert_eq!(pause("not-this-one"), Some(401));
    assert_eq!(pause("from-config"), Some(202));
    signal(&run.0, "-TERM");
    assert!(wait_exit(&mut run.0, Duration::from_secs(30)).success());
}

#[test]
fn a_bad_config_or_an_unset_token_variable_stops_before_anything_runs() {
    let s = Scratch::new();
    s.write(
        "spec.yaml",
        "version: 1\nname: cfg\nsource:\n  type: generator\n  count: 10\nsink:\n  type: file\n  path: out/data.jsonl\n",
    );
    s.write("typo.yaml", "http:\n  adress: 127.0.0.1:9464\n");
    let out = s.run_err(&["run", "--no-progress", "--config", "typo.yaml", "spec.yaml"]);
    assert!(
        stderr(&out).contains("typo.yaml:2:3: http: unknown field `adress`"),
        "{}",
        stderr(&out)
    );
    s.write(
        "unset.yaml",
        &format!(
            "http:\n  address: 127.0.0.1:{}\n  token_env: CFG_UNSET_TOKEN\n",
            free_port()
        ),
    );
    let out = s.run_err(&[
        "run",
        "--no-progress",
        "--config",
        "unset.yaml",
        "spec.yaml",
    ]);
    assert!(
        stderr(&out).contains("`CFG_UNSET_TOKEN`, which is not set"),
        "{}",
        stderr(&out)
    );
    assert!(!s.path("out/data.jsonl").exists(), "nothing ran");
}
