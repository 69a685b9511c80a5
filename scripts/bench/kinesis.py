#!/usr/bin/env python3
"""Kinesis throughput of the `sluice` binary against the kinesis-local emulator.

    cargo build --release -p sluice-runtime --bin sluice
    python3 scripts/bench/kinesis.py [--records 5000] [--size 1024] [--shards 4]

Starts its own emulator (scripts/emulators/kinesis.sh) unless SLUICE_TEST_KINESIS_ENDPOINT is set,
then measures two pipelines on a fresh stream:
  write: file (N JSON records of SIZE bytes) -> kinesis sink (PutRecords)
  read:  kinesis source (trim_horizon, polling) -> null sink, --max-records N
For each: wall time, records/s, and the CPU time (user+sys) of the sluice process itself
(getrusage of the finished child), per MB of record data. The emulator's own CPU (from
/proc/PID/stat) is shown too: it is the bottleneck, not Sluice.
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
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "Kinesis_20131202." + target,
            "X-Amz-Date": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
            "Authorization": "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature=0",
        },
    )
    with urllib.request.urlopen(req) as r:
        text = r.read()
        return json.loads(text) if text else {}


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(args, cwd):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    p = subprocess.run([SLUICE] + args, cwd=cwd, capture_output=True, text=True,
                       env=dict(os.environ, SLUICE_LOG="warn"))
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        sys.exit(f"sluice {args} failed:\n{p.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=5000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--aggregate", action="store_true", help="KPL-aggregate in the sink")
    a = ap.parse_args()
    if not os.path.exists(SLUICE):
        sys.exit(f"{SLUICE} missing: cargo build --release -p sluice-runtime --bin sluice")

    work = tempfile.mkdtemp(prefix="sluice-kinesis-bench.")
    endpoint = os.environ.get("SLUICE_TEST_KINESIS_ENDPOINT")
    started = False
    if not endpoint:
        subprocess.run(["bash", os.path.join(ROOT, "scripts/emulators/kinesis.sh"), "start", work], check=True)
        started = True
        with open(os.path.join(work, "kinesis.env")) as f:
            endpoint = f.read().split("=", 1)[1].strip()
    emu_pid = None
    pid_file = os.path.join(work, "kinesis.pid")
    if os.path.exists(pid_file):
        emu_pid = int(open(pid_file).read().strip())
    try:
        stream = "bench-%016x" % random.getrandbits(64)
        call(endpoint, "CreateStream", {"StreamName": stream, "ShardCount": a.shards})
        while call(endpoint, "DescribeStreamSummary", {"StreamName": stream})["StreamDescriptionSummary"]["StreamStatus"] != "ACTIVE":
            time.sleep(0.05)
        with open(os.path.join(work, "in.jsonl"), "w") as f:
            for i in range(a.records):
                rec = {"seq": i, "user_id": i % 1000, "pad": ""}
                rec["pad"] = "x" * max(0, a.size - len(json.dumps(rec)))
                f.write(json.dumps(rec) + "\n")
        mb = a.records * a.size / 1e6
        aws = (f"  aws:\n    endpoint: {endpoint}\n    credentials:\n      provider: basic\n"
               "      access_key_id: test\n      secret_access_key: test\n")
        agg = "  aggregate: true\n" if a.aggregate else ""
        with open(os.path.join(work, "write.yaml"), "w") as f:
            f.write("version: 1\nname: bench-write\nsource:\n  type: file\n  paths: [in.jsonl]\n"
                    "partitioner:\n  fields: [user_id]\nformat:\n  decode: json\n  encode: json\n"
                    f"sink:\n  type: kinesis\n  stream: {stream}\n{agg}{aws}offsets:\n  store: memory\n")
        with open(os.path.join(work, "read.yaml"), "w") as f:
            f.write(f"version: 1\nname: bench-read\nsource:\n  type: kinesis\n  stream: {stream}\n"
                    f"  start_position: trim_horizon\n{aws}sink:\n  type: discard\noffsets:\n  store: memory\n")
        print(f"machine: {os.cpu_count()} cores; {a.records} records of {a.size} B "
              f"({mb:.1f} MB), {a.shards} shards, aggregate={a.aggregate}")
        print("| pipeline | wall s | records/s | MB/s | sluice CPU s | sluice CPU ms/MB | emulator CPU s |")
        print("|---|---|---|---|---|---|---|")
        for name, args in (("file → kinesis (write)", ["run", "write.yaml"]),
                           ("kinesis → null (read)", ["run", "--max-records", str(a.records), "read.yaml"])):
            e0 = cpu_ticks(emu_pid) if emu_pid else None
            wall, cpu, _ = run(args, work)
            e1 = cpu_ticks(emu_pid) if emu_pid else None
            emu = f"{e1 - e0:.2f}" if emu_pid else "n/a"
            print(f"| {name} | {wall:.2f} | {a.records / wall:,.0f} | {mb / wall:.2f} | {cpu:.2f} | "
                  f"{1000 * cpu / mb:.0f} | {emu} |")
        call(endpoint, "DeleteStream", {"StreamName": stream})
    finally:
        if started:
            subprocess.run(["bash", os.path.join(ROOT, "scripts/emulators/kinesis.sh"), "stop", work])


if __name__ == "__main__":
    main()
