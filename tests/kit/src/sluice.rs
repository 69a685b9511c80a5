//! The `sluice` binary under test, a scratch folder per test where it runs, and readers of what
//! it wrote.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::wait_for;

/// The `sluice` binary under test: `target/<profile>/sluice`, next to the `deps/` folder that
/// holds the running test executable (cargo builds a package's binaries before its integration
/// tests).
pub fn sluice_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test executable's path");
        let profile = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test executable lives in target/<profile>/deps");
        let bin = profile.join(format!("sluice{}", std::env::consts::EXE_SUFFIX));
        assert!(
            bin.is_file(),
            "{} is missing: run the test through `cargo test -p sluice-runtime`",
            bin.display()
        );
        bin
    })
    .clone()
}

/// A scratch folder where specs are written and `sluice` runs.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// A new scratch folder holding one file (a spec, usually).
    pub fn with(rel: &str, text: &str) -> Self {
        let s = Self::new();
        s.write(rel, text);
        s
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        std::fs::write(&p, text).expect("write");
        p
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_default()
    }

    pub fn lines(&self, rel: &str) -> Vec<String> {
        self.read(rel).lines().map(str::to_string).collect()
    }

    /// A `sluice` command running in this folder, with quiet logs and no progress bars.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(sluice_bin());
        c.args(args)
            .current_dir(self.dir.path())
            .env("SLUICE_LOG", "warn")
            .stdin(Stdio::null());
        c
    }

    /// Runs `sluice` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run sluice")
    }

    /// Runs `sluice` to completion; fails the test, with its stderr, unless it succeeded.
    #[track_caller]
    pub fn run_ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        let err = stderr(&out);
        assert!(
            out.status.success(),
            "sluice {args:?} failed ({}):\n{err}",
            out.status
        );
        out
    }

    /// Runs `sluice` to completion; fails the test unless it failed with an error of its own:
    /// a panic (exit 101) or a signal is a crash, not a refusal.
    #[track_caller]
    pub fn run_err(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        let err = stderr(&out);
        assert!(!out.status.success(), "sluice {args:?} succeeded:\n{err}");
        assert!(
            out.status.code().is_some_and(|c| c != 101) && !err.contains("panicked at"),
            "sluice {args:?} crashed ({}):\n{err}",
            out.status
        );
        out
    }

    /// Starts `sluice` in the background.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sluice")
    }

    /// `sluice run --no-progress --http 127.0.0.1:PORT SPEC` on a free port, stdout discarded and
    /// stderr piped: the port and the command, to adjust before spawning.
    pub fn http_cmd(&self, spec: &str) -> (u16, Command) {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = self.cmd(&["run", "--no-progress", "--http", &addr, spec]);
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        (port, cmd)
    }

    /// Starts [`Scratch::http_cmd`] in the background, killed with the test.
    pub fn spawn_http(&self, spec: &str) -> (u16, Running) {
        let (port, mut cmd) = self.http_cmd(spec);
        (port, Running(cmd.spawn().expect("spawn sluice")))
    }

    /// Committed offsets of a pipeline in the default file store: partition → (offset, finished).
    pub fn offsets(&self, store: &str, name: &str) -> Vec<(String, u64, bool)> {
        committed_offsets(&self.path(store), name)
            .into_iter()
            .map(|(k, o, f)| (k, o.parse().expect("a numeric offset"), f))
            .collect()
    }

    /// Records covered by a pipeline's committed offsets in the file store `store`, for sources
    /// whose offsets count records from 0 in each partition (generator, stdin, Kafka): the sum of
    /// offset + 1.
    pub fn committed_records(&self, store: &str, name: &str) -> u64 {
        self.offsets(store, name)
            .iter()
            .map(|(_, o, _)| o + 1)
            .sum()
    }
}

/// `sluice validate --print` of `spec` (with `env` set), which must succeed: its stdout and
/// stderr.
pub fn validate_print(spec: &str, env: &[(&str, &str)]) -> (String, String) {
    let s = Scratch::with("spec.yaml", spec);
    let out = s
        .cmd(&["validate", "--print", "spec.yaml"])
        .envs(env.iter().copied())
        .output()
        .expect("run sluice validate");
    let (printed, err) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "{printed}{err}");
    (printed, err)
}

/// Committed offsets of pipeline `name` in the file store folder `dir`: (partition, offset,
/// finished), by partition; empty before the first commit.
pub fn committed_offsets(dir: &Path, name: &str) -> Vec<(String, String, bool)> {
    let text =
        std::fs::read_to_string(dir.join(format!("{name}.offsets.json"))).unwrap_or_default();
    if text.is_empty() {
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_str(&text).expect("offsets JSON");
    let mut out: Vec<(String, String, bool)> = v["partitions"]
        .as_object()
        .expect("partitions")
        .iter()
        .map(|(k, e)| {
            (
                k.clone(),
                e["offset"].as_str().expect("offset").to_string(),
                e["finished"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    out.sort();
    out
}

/// A loopback port nothing listens on (yet).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Waits for a child to exit, killing it after `timeout`.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let mut status = None;
    if !wait_for(timeout, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    }) {
        let _ = child.kill();
        panic!("sluice did not exit within {timeout:?}");
    }
    status.expect("the child exited")
}

/// Sends a signal to a child process.
pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig} failed");
}

/// `seq` values of JSON lines.
pub fn seqs(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}"));
            v["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {l}"))
        })
        .collect()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The repository root.
pub fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// A running `sluice` that is killed when the test ends, even by a failed assertion, so no
/// pipeline outlives its test.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl std::ops::Deref for Running {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}
