//! The test kit: what Sluice's tests and benches share, in one crate (a dev-dependency of
//! `sluice-runtime` and `sluice-connectors`).
//!
//! - [`emulator`]: the local servers' endpoints (`SLUICE_TEST_*` env vars with loopback defaults,
//!   a liveness check that says how to start them);
//! - [`unique_name`] for random stream/table/topic names, [`aws_yaml`] for a spec's `aws:` block;
//! - [`wait_for`] / [`wait_until`]: poll a condition with a deadline (tests never sleep a fixed
//!   time to wait for something);
//! - [`Scratch`], [`Running`]: a folder where `sluice` runs, and a child killed with its test;
//! - [`http`]: requests to `sluice run --http` and the per-partition series of its `/metrics`;
//! - [`kinesis`], [`dynamodb`], [`kafka`]: blocking clients of kinesis-local, moto and tansu;
//! - [`wasm`]: builds the plugins in `plugins/` to wasm32-wasip2 once per process.
//!
//! ```no_run
//! use std::time::Duration;
//! use sluice_test_kit::{Scratch, wait_for};
//!
//! let s = Scratch::new();
//! s.write("p.yaml", "version: 1\n...");
//! let mut run = s.spawn(&["run", "p.yaml"]);
//! assert!(wait_for(Duration::from_secs(10), || !s.read("out.jsonl").is_empty()));
//! # run.kill().unwrap();
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]
// test code: a failure is the test failing
// `new()` connects to a server or makes a folder: not what `Default` promises.
#![allow(clippy::new_without_default)]

pub mod dynamodb;
pub mod emulator;
pub mod http;
pub mod kafka;
pub mod kinesis;
mod sluice;
mod wait;
pub mod wasm;

pub use sluice::*;
pub use wait::{wait_for, wait_until};

/// A random name for a stream, table or topic: `{prefix}-{16 hex digits}`, so tests run in
/// parallel and never share state.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// The `aws:` block of a spec for an emulator (region us-east-1, static test credentials),
/// each line starting with `indent`.
pub fn aws_yaml(endpoint: &str, indent: &str) -> String {
    format!(
        "{indent}aws:\n{indent}  endpoint: {endpoint}\n{indent}  region: us-east-1\n{indent}  credentials:\n{indent}    provider: basic\n{indent}    access_key_id: test\n{indent}    secret_access_key: test\n"
    )
}

/// The same settings as JSON, for building a connector config in code.
pub fn aws_json(endpoint: &str) -> serde_json::Value {
    serde_json::json!({
        "endpoint": endpoint,
        "region": "us-east-1",
        "credentials": {"provider": "basic", "access_key_id": "test", "secret_access_key": "test"}
    })
}

/// Fails when `text` (a log, an error, printed config) shows any of `secrets`.
#[track_caller]
pub fn assert_hidden(text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!text.contains(s), "`{s}` is shown in: {text}");
    }
}
