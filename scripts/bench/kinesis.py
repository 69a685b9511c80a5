#!/usr/bin/env python3
"""Kinesis throughput and CPU cost of the `sluice` binary against the kinesis-local emulator.

    cargo build --release -p sluice-runtime --bin sluice
    python3 scripts/bench/kinesis.py [--records 5000] [--size 1024] [--shards 4] [--aggregate]
        [--before OTHER_SLUICE_BINARY] [--repeat 3] [--instructions]

Starts its own emulator (scripts/emulators/kinesis.sh) unless SLUICE_TEST_KINESIS_ENDPOINT is set,
then measures two pipelines (specs/kinesis-{write,read}.yaml), each on a fresh stream:
  write: file (N JSON records of SIZE bytes) -> kinesis sink (PutRecords)
  read:  kinesis source (trim_horizon, polling) -> discard sink, --max-records N
For each: wall time, records/s, and the CPU time (user+sys) of the sluice process itself
(getrusage of the finished child), per MB of record data. The emulator's own CPU (from
/proc/PID/stat) is shown too: it is the bottleneck, not Sluice.

The CPU figure of a whole run includes start-up and shutdown, so each pipeline also runs with 0
records (an empty input file; an empty stream read with --until-caught-up): that run's CPU is the
fixed cost, and (CPU of the N-record run - CPU of the 0-record run) / MB the steady cost per MB.

--before BIN measures a second binary (e.g. main's release build) in the same run, alternating
with this one, so the two are comparable on a loaded machine; --repeat N takes the median of N
runs; --instructions counts instructions with callgrind instead of CPU seconds (repeatable
whatever the load; ~50x slower, so keep --records small).
"""

import argparse
import json
import os
import random
import statistics
import tempfile

import common


def write_input(path, records, size):
    with open(path, "w") as f:
        for i in range(records):
            rec = {"seq": i, "user_id": i % 1000, "pad": ""}
            rec["pad"] = "x" * max(0, size - len(json.dumps(rec)))
            f.write(json.dumps(rec) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=5000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--aggregate", action="store_true", help="KPL-aggregate in the sink")
    ap.add_argument("--before", help="a second sluice binary, measured alternately in the same run")
    ap.add_argument("--repeat", type=int, default=1, help="runs per binary; the table shows medians")
    ap.add_argument("--instructions", action="store_true",
                    help="count instructions (callgrind) instead of CPU seconds")
    a = ap.parse_args()
    binaries = [("after", common.sluice_bin())]
    if a.before:
        binaries.insert(0, ("before", a.before))
    work = tempfile.mkdtemp(prefix="sluice-kinesis-bench.")
    full_dir, empty_dir = os.path.join(work, "full"), os.path.join(work, "empty")
    os.makedirs(full_dir)
    os.makedirs(empty_dir)
    write_input(os.path.join(full_dir, "in.jsonl"), a.records, a.size)
    write_input(os.path.join(empty_dir, "in.jsonl"), 0, a.size)
    mb = a.records * a.size / 1e6
    pipelines = [("write", "file → kinesis (write)"), ("read", "kinesis → discard (read)")]
    # results[label][pipeline] = list of (wall, cost, startup cost, emulator CPU)
    results = {label: {p: [] for p, _ in pipelines} for label, _ in binaries}
    with common.emulator("kinesis", "SLUICE_TEST_KINESIS_ENDPOINT") as (endpoint, emu_pid):
        base = {"SLUICE_TEST_KINESIS_ENDPOINT": endpoint,
                "BENCH_AGGREGATE": "true" if a.aggregate else "false"}

        def run(binary, stream, folder, args):
            env = {**base, "BENCH_STREAM": stream, "BENCH_DIR": folder}
            e0 = common.proc_cpu_seconds(emu_pid)
            wall, cost, _ = common.run_sluice(args, folder, env, binary=binary,
                                              instructions=a.instructions)
            return wall, cost, common.cpu_since(emu_pid, e0)

        for _ in range(a.repeat):
            for label, binary in binaries:
                full = "bench-%016x" % random.getrandbits(64)
                empty = "bench-%016x" % random.getrandbits(64)
                for s in (full, empty):
                    common.create_stream(endpoint, s, a.shards)
                for p, _ in pipelines:
                    if p == "write":
                        _, zero, _ = run(binary, empty, empty_dir, ["run", common.spec("kinesis-write")])
                        wall, cost, emu = run(binary, full, full_dir, ["run", common.spec("kinesis-write")])
                    else:
                        _, zero, _ = run(binary, empty, empty_dir,
                                         ["run", "--until-caught-up", common.spec("kinesis-read")])
                        wall, cost, emu = run(binary, full, full_dir,
                                              ["run", "--max-records", str(a.records), common.spec("kinesis-read")])
                    results[label][p].append((wall, cost, zero, emu))
                for s in (full, empty):
                    common.aws_json(endpoint, "kinesis", "DeleteStream", {"StreamName": s})

    print(common.machine_line())
    print(f"{a.records} records of {a.size} B ({mb:.1f} MB), {a.shards} shards, aggregate={a.aggregate}, "
          f"median of {a.repeat} run(s) per binary")
    unit, scale = ("M instructions", 1e-6) if a.instructions else ("CPU s", 1.0)
    per_mb = "M instr/MB" if a.instructions else "CPU ms/MB"
    mb_scale = 1e-6 if a.instructions else 1000.0
    print(f"| binary | pipeline | wall s | records/s | sluice {unit} | sluice {per_mb} | "
          f"start-up {unit} (0 records) | start-up share | steady {per_mb} | emulator CPU s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for p, name in pipelines:
        for label, binary in binaries:
            rows = results[label][p]
            wall = statistics.median(r[0] for r in rows)
            cost = statistics.median(r[1] for r in rows)
            zero = statistics.median(r[2] for r in rows)
            emus = [r[3] for r in rows if r[3] is not None]
            emu = f"{statistics.median(emus):.2f}" if emus else "n/a"
            print(f"| {label} | {name} | {wall:.2f} | {a.records / wall:,.0f} | {cost * scale:.3f} | "
                  f"{mb_scale * cost / mb:.1f} | {zero * scale:.3f} | {100 * zero / cost:.0f}% | "
                  f"{mb_scale * (cost - zero) / mb:.1f} | {emu} |", flush=True)


if __name__ == "__main__":
    main()
