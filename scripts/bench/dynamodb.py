#!/usr/bin/env python3
"""DynamoDB throughput of the `sluice` binary against the moto emulator.

    cargo build --release -p sluice-runtime --bin sluice
    python3 scripts/bench/dynamodb.py [--items 20000] [--size 256] [--segments 4]

Starts its own emulator (scripts/emulators/dynamodb.sh) unless SLUICE_TEST_DYNAMODB_ENDPOINT is
set, then measures three pipelines (specs/dynamodb-*.yaml) on a fresh table:
  write:    generator (N JSON records of SIZE bytes) -> dynamodb sink (BatchWriteItem, 25 per call)
  snapshot: dynamodb source (parallel Scan, SEGMENTS segments) -> discard sink
  cdc:      dynamodb source (the write table's stream, trim_horizon) -> discard sink, --max-records N
For each: wall time, items/s, and the CPU time (user+sys) of the sluice process itself
(getrusage of the finished child) per MB of record data. The emulator's CPU (from /proc/PID/stat)
is shown too: moto is the bottleneck, not Sluice.
"""

import argparse
import random
import sys
import tempfile

import common


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=20000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--segments", type=int, default=4)
    a = ap.parse_args()
    common.sluice_bin()
    with common.emulator("dynamodb", "SLUICE_TEST_DYNAMODB_ENDPOINT") as (endpoint, emu_pid), \
            tempfile.TemporaryDirectory() as work:
        table = f"bench-{random.getrandbits(32):08x}"
        common.aws_json(endpoint, "dynamodb", "CreateTable", {
            "TableName": table,
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": "seq", "AttributeType": "N"}],
            "KeySchema": [{"AttributeName": "seq", "KeyType": "HASH"}],
            "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        })
        mb = a.items * a.size / 1e6
        env = {"SLUICE_TEST_DYNAMODB_ENDPOINT": endpoint, "BENCH_TABLE": table,
               "BENCH_RECORDS": str(a.items), "BENCH_SIZE": str(a.size), "BENCH_SEGMENTS": str(a.segments)}
        print(common.machine_line())
        print(f"{a.items} items of {a.size} B ({mb:.1f} MB), segments: {a.segments}")
        print(common.TABLE_HEAD.format("moto"))
        for name, spec, extra in (
            ("write (generator → dynamodb)", "dynamodb-write", ()),
            ("snapshot (dynamodb scan → discard)", "dynamodb-snapshot", ()),
            ("cdc (dynamodb stream → discard)", "dynamodb-cdc", ("--max-records", str(a.items))),
        ):
            e0 = common.proc_cpu_seconds(emu_pid)
            wall, cpu, summary = common.run_sluice(["run", *extra, common.spec(spec)], work, env)
            print(f"# {summary}", file=sys.stderr)
            print(common.row(name, a.items, mb, wall, cpu, common.cpu_delta(emu_pid, e0)), flush=True)


if __name__ == "__main__":
    main()
