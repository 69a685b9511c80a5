#!/usr/bin/env python3
"""Kinesis throughput of the `sluice` binary against the kinesis-local emulator.

    cargo build --release -p sluice-runtime --bin sluice
    python3 scripts/bench/kinesis.py [--records 5000] [--size 1024] [--shards 4] [--aggregate]

Starts its own emulator (scripts/emulators/kinesis.sh) unless SLUICE_TEST_KINESIS_ENDPOINT is set,
then measures two pipelines (specs/kinesis-{write,read}.yaml) on a fresh stream:
  write: file (N JSON records of SIZE bytes) -> kinesis sink (PutRecords)
  read:  kinesis source (trim_horizon, polling) -> discard sink, --max-records N
For each: wall time, records/s, and the CPU time (user+sys) of the sluice process itself
(getrusage of the finished child), per MB of record data. The emulator's own CPU (from
/proc/PID/stat) is shown too: it is the bottleneck, not Sluice.
"""

import argparse
import json
import os
import random
import tempfile

import common


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=5000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--aggregate", action="store_true", help="KPL-aggregate in the sink")
    a = ap.parse_args()
    common.sluice_bin()
    work = tempfile.mkdtemp(prefix="sluice-kinesis-bench.")
    with common.emulator("kinesis", "SLUICE_TEST_KINESIS_ENDPOINT") as (endpoint, emu_pid):
        stream = "bench-%016x" % random.getrandbits(64)
        common.create_stream(endpoint, stream, a.shards)
        with open(os.path.join(work, "in.jsonl"), "w") as f:
            for i in range(a.records):
                rec = {"seq": i, "user_id": i % 1000, "pad": ""}
                rec["pad"] = "x" * max(0, a.size - len(json.dumps(rec)))
                f.write(json.dumps(rec) + "\n")
        mb = a.records * a.size / 1e6
        env = {"SLUICE_TEST_KINESIS_ENDPOINT": endpoint, "BENCH_STREAM": stream, "BENCH_DIR": work,
               "BENCH_AGGREGATE": "true" if a.aggregate else "false"}
        print(common.machine_line())
        print(f"{a.records} records of {a.size} B ({mb:.1f} MB), {a.shards} shards, aggregate={a.aggregate}")
        print(common.TABLE_HEAD.format("emulator"))
        for name, args in (("file → kinesis (write)", ["run", common.spec("kinesis-write")]),
                           ("kinesis → discard (read)",
                            ["run", "--max-records", str(a.records), common.spec("kinesis-read")])):
            e0 = common.proc_cpu_seconds(emu_pid)
            wall, cpu, _ = common.run_sluice(args, work, env)
            print(common.row(name, a.records, mb, wall, cpu, common.cpu_delta(emu_pid, e0)), flush=True)
        common.aws_json(endpoint, "kinesis", "DeleteStream", {"StreamName": stream})


if __name__ == "__main__":
    main()
