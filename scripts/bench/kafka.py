#!/usr/bin/env python3
"""Kafka throughput of the `sluice` binary against a local broker (tansu).

    cargo build --release -p sluice-runtime --bin sluice
    python3 scripts/bench/kafka.py [--records 200000] [--size 1024] [--partitions 4]
                                   [--kinesis-records 3000]
    python3 scripts/bench/kafka.py --exactly-once [--commit-interval 1s]

--exactly-once compares at-least-once with `sink.exactly_once` instead (the cost of the Kafka
transaction): generator → kafka and kafka → kafka, both with the Kafka offset store, against
noida-db (scripts/emulators/noida.sh, or SLUICE_TEST_NOIDA_BROKERS), which does transactions.

Starts its own broker (scripts/emulators/kafka.sh) unless SLUICE_TEST_KAFKA_BROKERS is set, and
its own kinesis-local for the Kinesis → Kafka row unless SLUICE_TEST_KINESIS_ENDPOINT is set.
Measures, on fresh topics:
  generator → kafka     the sink alone (idempotent producer, acks=all, --compression)
  kafka → null          the source alone (consumer group, --max-records N; the wall time
                        includes joining the group, ~3-5 s on tansu)
  kafka → kafka         the two together (the mirror case), records passed through as bytes
  kinesis → kafka       the bridge with JSON decode/encode (kinesis-local is the bottleneck:
                        ~500 records/s, so only the CPU Sluice spends per MB is meaningful)
For each: wall time, records/s, MB/s of record values and the CPU time (user+sys) of the sluice
process (getrusage of the finished child) per MB. The broker's CPU is shown too.
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


def cpu_of(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return None


def run(args, cwd):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    p = subprocess.run([SLUICE] + args, cwd=cwd, capture_output=True, text=True,
                       env=dict(os.environ, SLUICE_LOG="warn"))
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        sys.exit(f"sluice {args} failed:\n{p.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def kinesis_call(endpoint, target, body):
    req = urllib.request.Request(
        endpoint + "/", data=json.dumps(body).encode(),
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "Kinesis_20131202." + target,
            "X-Amz-Date": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
            "Authorization": "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/kinesis/aws4_request, SignedHeaders=host;x-amz-date, Signature=0",
        })
    with urllib.request.urlopen(req) as r:
        text = r.read()
        return json.loads(text) if text else {}


def start(script, work, var):
    subprocess.run(["bash", os.path.join(ROOT, "scripts/emulators", script), "start", work],
                   check=True, stderr=subprocess.DEVNULL)
    env = open(os.path.join(work, script.replace(".sh", ".env"))).read()
    for line in env.splitlines():
        k, v = line.replace("export ", "").split("=", 1)
        if k == var:
            return v
    sys.exit(f"{script} wrote no {var}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--kinesis-records", type=int, default=3000)
    ap.add_argument("--compression", default="none",
                    help="sink compression (the generator's padding compresses unrealistically well)")
    ap.add_argument("--exactly-once", action="store_true",
                    help="compare at-least-once with exactly_once on noida-db")
    ap.add_argument("--mirror", action="store_true",
                    help="with --exactly-once: also kafka → kafka (stalled on noida-db here)")
    ap.add_argument("--commit-interval", default="1s",
                    help="with --exactly-once: commit_interval (one transaction each)")
    a = ap.parse_args()
    if a.exactly_once:
        return exactly_once(a)
    if not os.path.exists(SLUICE):
        sys.exit(f"{SLUICE} missing: cargo build --release -p sluice-runtime --bin sluice")
    # The discarding sink is `discard` (older builds: `null`).
    null_sink = "discard"
    work = tempfile.mkdtemp(prefix="sluice-kafka-bench.")
    started = []
    brokers = os.environ.get("SLUICE_TEST_KAFKA_BROKERS")
    if not brokers:
        brokers = start("kafka.sh", work, "SLUICE_TEST_KAFKA_BROKERS")
        started.append("kafka.sh")
    broker_pid = None
    if os.path.exists(os.path.join(work, "kafka.pid")):
        broker_pid = int(open(os.path.join(work, "kafka.pid")).read())
    try:
        tag = "%012x" % random.getrandbits(48)
        t_in, t_out, t_br = f"bench-in-{tag}", f"bench-out-{tag}", f"bench-bridge-{tag}"
        mb = a.records * a.size / 1e6
        sink = ("sink:\n  type: kafka\n  brokers: [{b}]\n  topic: {t}\n  compression: " + a.compression + "\n"
                "  linger: 10ms\n  create_topic:\n    partitions: {p}\n")
        specs = {
            "load.yaml": f"version: 1\nname: load\nsource:\n  type: generator\n  count: {a.records}\n"
                         f"  partitions: {a.partitions}\n  record_size: {a.size}\n  batch_size: 1000\n"
                         + sink.format(b=brokers, t=t_in, p=a.partitions)
                         + "partitioner: fixed\noffsets:\n  store: memory\n",
            "read.yaml": f"version: 1\nname: read\nsource:\n  type: kafka\n  brokers: [{brokers}]\n"
                         f"  topics: [{t_in}]\n  group: read-{tag}\nsink:\n  type: {null_sink}\n"
                         "offsets:\n  store: memory\n",
            "mirror.yaml": f"version: 1\nname: mirror\nsource:\n  type: kafka\n  brokers: [{brokers}]\n"
                           f"  topics: [{t_in}]\n  group: mirror-{tag}\n"
                           + sink.format(b=brokers, t=t_out, p=a.partitions)
                           + "  key: record\npartitioner: fixed\noffsets:\n  store: memory\n",
        }
        for name, text in specs.items():
            with open(os.path.join(work, name), "w") as f:
                f.write(text)
        print(f"machine: {os.cpu_count()} cores; {a.records} records of {a.size} B ({mb:.0f} MB), "
              f"{a.partitions} partitions, broker tansu (memory storage) on the same machine")
        print("| pipeline | records | wall s | records/s | MB/s | sluice CPU s | sluice CPU ms/MB | broker CPU s |")
        print("|---|---|---|---|---|---|---|---|")

        def row(name, n, args, size):
            b0 = cpu_of(broker_pid) if broker_pid else None
            wall, cpu = run(args, work)
            b1 = cpu_of(broker_pid) if broker_pid else None
            m = n * size / 1e6
            broker = f"{b1 - b0:.1f}" if b0 is not None and b1 is not None else "n/a"
            print(f"| {name} | {n} | {wall:.2f} | {n / wall:,.0f} | {m / wall:.1f} | {cpu:.2f} | "
                  f"{1000 * cpu / m:.0f} | {broker} |", flush=True)

        row("generator → kafka", a.records, ["run", "--no-progress", "load.yaml"], a.size)
        row("kafka → null", a.records, ["run", "--no-progress", "--max-records", str(a.records), "read.yaml"], a.size)
        row("kafka → kafka", a.records, ["run", "--no-progress", "--max-records", str(a.records), "mirror.yaml"], a.size)

        if a.kinesis_records > 0:
            endpoint = os.environ.get("SLUICE_TEST_KINESIS_ENDPOINT")
            if not endpoint:
                endpoint = start("kinesis.sh", work, "SLUICE_TEST_KINESIS_ENDPOINT")
                started.append("kinesis.sh")
            stream = f"bench-{tag}"
            kinesis_call(endpoint, "CreateStream", {"StreamName": stream, "ShardCount": a.partitions})
            while kinesis_call(endpoint, "DescribeStreamSummary", {"StreamName": stream})[
                    "StreamDescriptionSummary"]["StreamStatus"] != "ACTIVE":
                time.sleep(0.05)
            aws = (f"  aws:\n    endpoint: {endpoint}\n    credentials:\n      provider: basic\n"
                   "      access_key_id: test\n      secret_access_key: test\n")
            n = a.kinesis_records
            with open(os.path.join(work, "kload.yaml"), "w") as f:
                f.write(f"version: 1\nname: kload\nsource:\n  type: generator\n  count: {n}\n"
                        f"  record_size: {a.size}\n  partitions: {a.partitions}\nformat:\n  decode: json\n  encode: json\n"
                        f"partitioner:\n  fields: [user_id]\nsink:\n  type: kinesis\n  stream: {stream}\n{aws}"
                        "offsets:\n  store: memory\n")
            with open(os.path.join(work, "bridge.yaml"), "w") as f:
                f.write(f"version: 1\nname: bridge\nsource:\n  type: kinesis\n  stream: {stream}\n"
                        f"  start_position: trim_horizon\n{aws}format:\n  decode: json\n  encode: json\n"
                        "partitioner:\n  fields: [user_id]\n"
                        + sink.format(b=brokers, t=t_br, p=a.partitions)
                        + "  key: partition_key\n  include_metadata: [shard-id, sequence-number]\n"
                        "offsets:\n  store: memory\n")
            run(["run", "--no-progress", "kload.yaml"], work)
            row("kinesis → kafka (bridge)", n, ["run", "--no-progress", "--max-records", str(n), "bridge.yaml"], a.size)
    finally:
        for s in started:
            subprocess.run(["bash", os.path.join(ROOT, "scripts/emulators", s), "stop", work])


def exactly_once(a):
    """At-least-once against exactly-once, same broker (noida-db), same Kafka offset store."""
    if not os.path.exists(SLUICE):
        sys.exit(f"{SLUICE} missing: set SLUICE_BIN or build the binary")
    work = tempfile.mkdtemp(prefix="sluice-eos-bench.")
    started = []
    brokers = os.environ.get("SLUICE_TEST_NOIDA_BROKERS")
    if not brokers:
        brokers = start("noida.sh", work, "SLUICE_TEST_NOIDA_BROKERS")
        started.append("noida.sh")
    try:
        tag = "%012x" % random.getrandbits(48)
        mb = a.records * a.size / 1e6
        print(f"machine: {os.cpu_count()} cores; binary {SLUICE}; {a.records} records of {a.size} B "
              f"({mb:.0f} MB), {a.partitions} partitions, broker noida-db on the same machine, "
              f"commit_interval {a.commit_interval}")
        print("| pipeline | delivery | wall s | records/s | MB/s | sluice CPU s |")
        print("|---|---|---|---|---|---|")
        for mode in ("at-least-once", "exactly-once"):
            eos = "  exactly_once: true\n" if mode == "exactly-once" else ""
            t_in, t_out = f"eos-in-{mode}-{tag}", f"eos-out-{mode}-{tag}"
            offsets = (f"offsets:\n  store: kafka\n  brokers: [{brokers}]\n"
                       f"  topic: offsets-{mode}-{tag}\n  commit_interval: {a.commit_interval}\n")
            sink = (f"sink:\n  type: kafka\n  brokers: [{brokers}]\n  topic: {{t}}\n  linger: 10ms\n"
                    f"  create_topic:\n    partitions: {a.partitions}\n{eos}")
            load = (f"version: 1\nname: load-{mode}-{tag}\nsource:\n  type: generator\n  count: {a.records}\n"
                    f"  partitions: {a.partitions}\n  record_size: {a.size}\n  batch_size: 1000\n"
                    + sink.format(t=t_in) + "partitioner: fixed\n" + offsets)
            mirror = (f"version: 1\nname: mirror-{mode}-{tag}\nsource:\n  type: kafka\n  brokers: [{brokers}]\n"
                      f"  topics: [{t_in}]\n  group: mirror-{mode}-{tag}\n"
                      + sink.format(t=t_out) + "  key: record\npartitioner: fixed\n" + offsets)
            for name, text in (("load.yaml", load), ("mirror.yaml", mirror)):
                with open(os.path.join(work, name), "w") as f:
                    f.write(text)
            rows = [("generator → kafka", ["run", "--no-progress", "load.yaml"])]
            if a.mirror:
                rows.append(("kafka → kafka", ["run", "--no-progress", "--max-records",
                                               str(a.records), "mirror.yaml"]))
            for name, args in rows:
                wall, cpu = run(args, work)
                print(f"| {name} | {mode} | {wall:.2f} | {a.records / wall:,.0f} | {mb / wall:.1f} | "
                      f"{cpu:.2f} |", flush=True)
    finally:
        for s in started:
            subprocess.run(["bash", os.path.join(ROOT, "scripts/emulators", s), "stop", work])


if __name__ == "__main__":
    main()
