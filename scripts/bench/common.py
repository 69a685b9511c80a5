"""Shared code of the bench scripts: the binary, the specs in specs/, running `sluice` with its
CPU time, the emulators, the AWS JSON calls and the report's machine line.

Specs live in scripts/bench/specs/*.yaml (validated by tests/validate.rs like examples/); the
benches fill them through Sluice's own `${VAR:-default}` interpolation: endpoints in the
SLUICE_TEST_* variables the emulator scripts export, sizes and names in BENCH_* variables.
"""

import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SPECS = os.path.join(ROOT, "scripts", "bench", "specs")


def sluice_bin():
    """SLUICE_BIN, else the release build in $CARGO_TARGET_DIR (as scripts/test.sh sets it), else target/."""
    if os.environ.get("SLUICE_BIN"):
        return os.environ["SLUICE_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    path = os.path.join(target, "release", "sluice")
    if not os.path.exists(path):
        sys.exit(f"{path} missing: cargo build --release -p sluice-runtime --bin sluice (or set SLUICE_BIN)")
    return path


def spec(name):
    """The path of scripts/bench/specs/NAME.yaml."""
    return os.path.join(SPECS, name + ".yaml")


def run_sluice(args, cwd, env=None, binary=None, instructions=False):
    """Runs `sluice ARGS` (or BINARY ARGS) to completion; returns (wall s, CPU s of the sluice
    process, last stderr line). With `instructions`, it runs under callgrind and the second value
    is the number of instructions the whole process executed (repeatable whatever the load)."""
    cmd = [binary or sluice_bin()] + list(args)
    if instructions:
        cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"] + cmd
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                       env={**os.environ, "SLUICE_LOG": "warn", **(env or {})})
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{p.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    lines = [l for l in p.stderr.strip().splitlines() if not l.startswith("==")]
    if instructions:
        collected = [l for l in p.stderr.splitlines() if "Collected :" in l]
        if not collected:
            sys.exit(f"no callgrind count in:\n{p.stderr}")
        cpu = int(collected[-1].split(":")[-1].strip())
    return wall, cpu, lines[-1] if lines else ""


def stat_cpu(path):
    """(name, user+system CPU seconds) from a /proc stat file (a process's or a thread's), or
    None when it is gone."""
    try:
        with open(path) as f:
            stat = f.read()
    except OSError:
        return None
    name = stat[stat.index("(") + 1:stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2:].split()
    return name, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid):
    """User+system CPU seconds of a running process (from /proc), or None."""
    got = stat_cpu(f"/proc/{pid}/stat") if pid else None
    return got[1] if got else None


def cpu_since(pid, before):
    """CPU seconds a process spent since `before` (from proc_cpu_seconds), or None."""
    after = proc_cpu_seconds(pid)
    return after - before if before is not None and after is not None else None


def cpu_delta(pid, before):
    spent = cpu_since(pid, before)
    return f"{spent:.2f}" if spent is not None else "n/a"


_AWS = {
    "kinesis": ("application/x-amz-json-1.1", "Kinesis_20131202"),
    "dynamodb": ("application/x-amz-json-1.0", "DynamoDB_20120810"),
}


def aws_json(endpoint, service, target, body):
    """One AWS JSON-protocol call (`kinesis` or `dynamodb`) to an emulator; returns the reply."""
    content_type, prefix = _AWS[service]
    req = urllib.request.Request(
        endpoint + "/", data=json.dumps(body).encode(),
        headers={
            "Content-Type": content_type,
            "X-Amz-Target": f"{prefix}.{target}",
            "X-Amz-Date": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
            "Authorization": f"AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/{service}/aws4_request, "
                             "SignedHeaders=host;x-amz-date, Signature=0",
        })
    with urllib.request.urlopen(req) as r:
        text = r.read()
        return json.loads(text) if text else {}


def create_stream(endpoint, stream, shards):
    """A Kinesis stream with SHARDS shards, once it is ACTIVE."""
    aws_json(endpoint, "kinesis", "CreateStream", {"StreamName": stream, "ShardCount": shards})
    while aws_json(endpoint, "kinesis", "DescribeStreamSummary", {"StreamName": stream})[
            "StreamDescriptionSummary"]["StreamStatus"] != "ACTIVE":
        time.sleep(0.05)  # polling the emulator until the stream is ready


@contextlib.contextmanager
def emulator(name, var):
    """Yields (endpoint, pid or None) of emulator NAME (scripts/emulators/NAME.sh): the one in env
    VAR if set (its pid from $SLUICE_TEST_RUN_DIR/NAME.pid when given), else one started in a
    temporary run folder and stopped afterwards."""
    if os.environ.get(var):
        run_dir = os.environ.get("SLUICE_TEST_RUN_DIR", "")
        yield os.environ[var], _pid(os.path.join(run_dir, f"{name}.pid")) if run_dir else None
        return
    run_dir = tempfile.mkdtemp(prefix=f"sluice-bench-{name}.")
    script = os.path.join(ROOT, "scripts", "emulators", f"{name}.sh")
    subprocess.run(["bash", script, "start", run_dir], check=True, stderr=subprocess.DEVNULL)
    try:
        env = {}
        with open(os.path.join(run_dir, f"{name}.env")) as f:
            for line in f:
                k, _, v = line.strip().removeprefix("export ").partition("=")
                env[k] = v
        if var not in env:
            sys.exit(f"{script} wrote no {var}")
        yield env[var], _pid(os.path.join(run_dir, f"{name}.pid"))
    finally:
        subprocess.run(["bash", script, "stop", run_dir])


def _pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def machine_line():
    """The machine a report was measured on."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    return f"machine: {os.cpu_count()} cores {model}, {platform.system()} {platform.release()}".replace("  ", " ")


TABLE_HEAD = ("| pipeline | records | wall s | records/s | MB/s | sluice CPU s | sluice CPU ms/MB | {} CPU s |\n"
              "|---|---|---|---|---|---|---|---|")


def row(name, records, mb, wall, cpu, server_cpu):
    """One report row: the same columns in every bench."""
    return (f"| {name} | {records} | {wall:.2f} | {records / wall:,.0f} | {mb / wall:.2f} | {cpu:.2f} | "
            f"{1000 * cpu / mb:.0f} | {server_cpu} |")
