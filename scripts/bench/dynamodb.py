#!/usr/bin/env python3
"""DynamoDB throughput of the `sluice` binary against the moto emulator.

    cargo build --release -p sluice-runtime --bin sluice
    python3 scripts/bench/dynamodb.py [--items 20000] [--size 256] [--segments 4]

Starts its own emulator (scripts/emulators/dynamodb.sh) unless SLUICE_TEST_DYNAMODB_ENDPOINT is
set, then measures three pipelines on fresh tables:
  write:    generator (N JSON records of SIZE bytes) -> dynamodb sink (BatchWriteItem, 25 per call)
  snapshot: dynamodb source (parallel Scan, SEGMENTS segments) -> discard sink
  cdc:      dynamodb source (the write table's stream, trim_horizon) -> discard sink, --max-records N
For each: wall time, items/s, and the CPU time (user+sys) of the sluice process itself
(getrusage of the finished child) per MB of record data. The emulator's CPU (from /proc/PID/stat)
is shown too: moto is the bottleneck, not Sluice.
"""

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SLUICE = os.environ.get("SLUICE_BIN", os.path.join(ROOT, "target", "release", "sluice"))


def call(endpoint, target, body):
    req = urllib.request.Request(
        endpoint + "/",
        data=json.dumps(body).encode(),
        headers={
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": "DynamoDB_20120810." + target,
            "X-Amz-Date": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
            "Authorization": "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0",
        },
    )
    with urllib.request.urlopen(req) as r:
        text = r.read()
        return json.loads(text) if text else {}


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def aws_block(endpoint):
    return (
        "  aws:\n"
        f"    endpoint: {endpoint}\n"
        "    region: us-east-1\n"
        "    credentials:\n"
        "      provider: basic\n"
        "      access_key_id: test\n"
        "      secret_access_key: test\n"
    )


def run(spec_text, workdir, extra_args=()):
    path = os.path.join(workdir, "spec.yaml")
    with open(path, "w") as f:
        f.write(spec_text)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    out = subprocess.run(
        [SLUICE, "run", *extra_args, path],
        cwd=workdir,
        env={**os.environ, "SLUICE_LOG": "warn"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        sys.exit(f"sluice failed:\n{out.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, out.stderr.strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=20000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--segments", type=int, default=4)
    args = ap.parse_args()

    emulator_pid = None
    run_dir = None
    endpoint = os.environ.get("SLUICE_TEST_DYNAMODB_ENDPOINT")
    if not endpoint:
        run_dir = tempfile.mkdtemp(prefix="sluice-bench-ddb.")
        subprocess.run(["bash", os.path.join(ROOT, "scripts/emulators/dynamodb.sh"), "start", run_dir], check=True)
        with open(os.path.join(run_dir, "dynamodb.env")) as f:
            endpoint = f.read().strip().split("=", 1)[1]
        with open(os.path.join(run_dir, "dynamodb.pid")) as f:
            emulator_pid = int(f.read().strip())
    else:
        pid_file = os.environ.get("SLUICE_TEST_RUN_DIR", "") + "/dynamodb.pid"
        if os.path.exists(pid_file):
            with open(pid_file) as f:
                emulator_pid = int(f.read().strip())

    try:
        suffix = f"{random.getrandbits(32):08x}"
        table = f"bench-{suffix}"
        call(endpoint, "CreateTable", {
            "TableName": table,
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": "seq", "AttributeType": "N"}],
            "KeySchema": [{"AttributeName": "seq", "KeyType": "HASH"}],
            "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        })
        mb = args.items * args.size / 1e6
        rows = []
        with tempfile.TemporaryDirectory() as wd:
            common_tail = (
                "offsets:\n  store: memory\n"
                "pipeline:\n  flush_interval: 200ms\n  max_buffered: 2000\n"
            )
            write_spec = (
                f"version: 1\nname: bench-write\nsource:\n  type: generator\n  count: {args.items}\n"
                f"  partitions: 4\n  record_size: {args.size}\n  batch_size: 500\n"
                f"sink:\n  type: dynamodb\n  table: {table}\n{aws_block(endpoint)}{common_tail}"
            )
            snap_spec = (
                f"version: 1\nname: bench-snapshot\nsource:\n  type: dynamodb\n  table: {table}\n"
                f"  mode: snapshot\n  segments: {args.segments}\n{aws_block(endpoint)}"
                f"sink:\n  type: discard\n{common_tail}"
            )
            cdc_spec = (
                f"version: 1\nname: bench-cdc\nsource:\n  type: dynamodb\n  table: {table}\n"
                f"  mode: cdc\n  start_position: trim_horizon\n  poll_interval: 100ms\n{aws_block(endpoint)}"
                f"sink:\n  type: discard\n{common_tail}"
            )
            for name, spec, extra in (
                ("write (generator → dynamodb)", write_spec, ()),
                ("snapshot (dynamodb scan → discard)", snap_spec, ()),
                ("cdc (dynamodb stream → discard)", cdc_spec, ("--max-records", str(args.items))),
            ):
                emu_before = cpu_seconds(emulator_pid) if emulator_pid else None
                wall, cpu, summary = run(spec, wd, extra)
                emu = cpu_seconds(emulator_pid) - emu_before if emulator_pid else None
                rows.append((name, wall, args.items / wall, cpu, cpu / mb, emu))
                print(f"# {summary}", file=sys.stderr)
        print(f"items: {args.items} x {args.size} B ({mb:.1f} MB), segments: {args.segments}")
        print("| pipeline | wall s | items/s | sluice CPU s | sluice CPU s/MB | moto CPU s |")
        print("|---|---|---|---|---|---|")
        for name, wall, rate, cpu, per_mb, emu in rows:
            emu_s = f"{emu:.1f}" if emu is not None else "n/a"
            print(f"| {name} | {wall:.1f} | {rate:,.0f} | {cpu:.2f} | {per_mb:.3f} | {emu_s} |")
    finally:
        if run_dir:
            subprocess.run(["bash", os.path.join(ROOT, "scripts/emulators/dynamodb.sh"), "stop", run_dir])


if __name__ == "__main__":
    main()
