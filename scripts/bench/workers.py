#!/usr/bin/env python3
"""Parallel processing: 4 generator partitions -> wasm JSON mask -> discard (specs/workers.yaml)
with `pipeline.workers` 1, 2 and 4, against a binary from before `workers` existed (no such key).

    python3 scripts/bench/workers.py                 # throughput table (wall-clock: needs a quiet machine)
    python3 scripts/bench/workers.py --callgrind     # instructions, workers: 1 against before (any load)
    python3 scripts/bench/workers.py --spec workers-json   # JSON decode/encode instead of the mask
    python3 scripts/bench/workers.py --threads       # CPU per thread: the rate a quiet machine allows

`--threads` samples each thread's CPU time (/proc/PID/task) while the run goes. With C cores and
no other load, a run cannot be faster than its busiest thread, nor than all its CPU spread over
the C cores: the bound max(busiest, total / C) is what the wall clock of a quiet machine shows
(less any waiting), and it holds whatever else runs on the machine while measuring.

SLUICE_BIN is the binary under test (default: the release build in $CARGO_TARGET_DIR),
BEFORE_BIN the one to compare with (default ~/.cache/sluice/before/sluice; skipped if absent;
BEFORE_LABEL names its row, default "before"),
SLUICE_PLUGIN_DIR the folder of mask_fields.wasm (default: the test build,
$CARGO_TARGET_DIR/wasm-plugins/wasm32-wasip2/release). BENCH_RECORDS (default 1000000) and
BENCH_RECORD_SIZE (100) size the run; BENCH_REPEAT (3) runs each row that often and keeps the
fastest. COMPARE_BIN adds the `workers` rows of a second build that knows `workers` (labelled
COMPARE_LABEL, default "compare"), run in the same go, each build's ratios against its own
`workers: 1`.
"""

import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402


def spec_name():
    """specs/NAME.yaml from `--spec NAME`, default `workers`."""
    args = sys.argv[1:]
    return args[args.index("--spec") + 1] if "--spec" in args[:-1] else "workers"


def before_spec(folder):
    """The spec without the `workers` key, for a binary that does not know it."""
    with open(common.spec(spec_name())) as f:
        text = f.read()
    path = os.path.join(folder, "before.yaml")
    with open(path, "w") as f:
        text = re.sub(r"(?m)^\s+workers:.*\n", "", text)
        # `pipeline:` left with nothing under it.
        f.write(re.sub(r"(?m)^pipeline:\n(?![ ])", "", text))
    return path


def rows(before_bin):
    """(label, binary, spec, workers) for every row of the table."""
    folder = tempfile.mkdtemp(prefix="sluice-bench-workers-")
    out = []
    if before_bin:
        label = os.environ.get("BEFORE_LABEL", "before")
        out.append((f"{label} (one thread)", before_bin, before_spec(folder), None))
    builds = [("", common.sluice_bin())]
    if os.environ.get("COMPARE_BIN"):
        label = os.environ.get("COMPARE_LABEL", "compare")
        builds.insert(0, (f"{label}, ", os.environ["COMPARE_BIN"]))
    for prefix, binary in builds:
        for w in (1, 2, 4):
            out.append((f"{prefix}workers: {w}", binary, common.spec(spec_name()), w))
    return folder, out


def env_for(workers):
    env = {"BENCH_RECORDS": os.environ.get("BENCH_RECORDS", "1000000")}
    if workers is not None:
        env["BENCH_WORKERS"] = str(workers)
    return env


def throughput(before_bin):
    records = int(os.environ.get("BENCH_RECORDS", "1000000"))
    repeat = int(os.environ.get("BENCH_REPEAT", "3"))
    folder, table = rows(before_bin)
    print(common.machine_line() + f", spec {spec_name()}")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print()
    print("| binary | records | records/s | CPU s (whole process) | x workers: 1 |")
    print("|---|---|---|---|---|")
    base = None
    for label, binary, spec, workers in table:
        best = None
        for _ in range(repeat):
            wall, cpu, last = common.run_sluice(["run", spec], cwd=folder, env=env_for(workers),
                                                binary=binary)
            # The run's own time (the summary's "in 1.23s"), without start-up (plugin compilation).
            m = re.search(r" in ([0-9.]+)s ", last)
            run = float(m.group(1)) if m else wall
            if best is None or run < best[0]:
                best = (run, cpu)
        rate = records / best[0]
        if workers == 1:
            base = rate
        ratio = f"{rate / base:.2f}" if base else "-"
        print(f"| {label} | {records} | {rate:,.0f} | {best[1]:.2f} | {ratio} |")
    print()
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def instructions(binary, spec, workers, folder, records):
    """Instructions of one whole `sluice run` under callgrind (the "Collected" line)."""
    env = {**env_for(workers), "BENCH_RECORDS": str(records)}
    _, n, _ = common.run_sluice(["run", spec], folder, env=env, binary=binary, instructions=True)
    return n


def callgrind(before_bin):
    """Instructions per record, one worker against before: the same work, so load does not matter.
    Two runs per binary (BENCH_RECORDS and 5x as many, default 20000); their difference divided
    by the extra records leaves out start-up (plugin compilation, which a cache may skip)."""
    folder, table = rows(before_bin)
    small = int(os.environ.get("BENCH_RECORDS", "20000"))
    large = 5 * small
    print(f"| binary | instructions, {small} records | {large} records | per record (difference) |")
    print("|---|---|---|---|")
    for label, binary, spec, workers in table:
        if workers not in (None, 1):
            continue
        a = instructions(binary, spec, workers, folder, small)
        b = instructions(binary, spec, workers, folder, large)
        print(f"| {label} | {a:,} | {b:,} | {(b - a) / (large - small):,.0f} |")


def thread_cpu(pid, seen):
    """Adds every thread's CPU seconds so far to SEEN (tid -> (name, seconds))."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return
    for tid in tids:
        got = common.stat_cpu(f"/proc/{pid}/task/{tid}/stat")
        if got:
            seen[tid] = got


def thread_run(label, binary, spec, workers, folder):
    """One run sampled per thread: (total CPU s, busiest thread's CPU s)."""
    p = subprocess.Popen([binary, "run", spec], cwd=folder, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "SLUICE_LOG": "warn", **env_for(workers)})
    seen = {}
    while p.poll() is None:
        thread_cpu(p.pid, seen)
        time.sleep(0.01)  # sampling interval: a thread's last 10 ms may be missed
    if p.returncode != 0:
        sys.exit(f"{label} failed:\n{p.stderr.read()}")
    total = sum(c for _, c in seen.values())
    busiest = max((c for _, c in seen.values()), default=0.0)
    return total, busiest


def threads(before_bin):
    """The per-thread CPU bound of each row: BENCH_REPEAT rounds over all rows (so a change of
    load touches every row alike), each row's median run by its bound."""
    records = int(os.environ.get("BENCH_RECORDS", "1000000"))
    repeat = int(os.environ.get("BENCH_REPEAT", "3"))
    cores = os.cpu_count() or 1
    folder, table = rows(before_bin)
    print(common.machine_line() + f", spec {spec_name()}, load average {os.getloadavg()[0]:.2f}, "
          f"median of {repeat}")
    print()
    print(f"| binary | records | CPU s | busiest thread s | bound on {cores} cores, records/s | x workers: 1 |")
    print("|---|---|---|---|---|---|")
    runs = [[] for _ in table]
    for _ in range(repeat):
        for i, row in enumerate(table):
            total, busiest = thread_run(*row, folder)
            runs[i].append((records / max(busiest, total / cores, 1e-9), total, busiest))
    base = None
    for (label, _, _, workers), row_runs in zip(table, runs):
        rate, total, busiest = sorted(row_runs)[len(row_runs) // 2]
        if workers == 1:
            base = rate
        ratio = f"{rate / base:.2f}" if base else "-"
        print(f"| {label} | {records} | {total:.2f} | {busiest:.2f} | {rate:,.0f} | {ratio} |")


def main():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(common.ROOT, "target"))
    os.environ.setdefault(
        "SLUICE_PLUGIN_DIR", os.path.join(target, "wasm-plugins", "wasm32-wasip2", "release"))
    if not os.path.exists(os.path.join(os.environ["SLUICE_PLUGIN_DIR"], "mask_fields.wasm")):
        sys.exit("mask_fields.wasm missing in SLUICE_PLUGIN_DIR: build the plugins "
                 "(cargo test -p sluice-runtime --test workers builds them)")
    os.environ["SLUICE_BIN"] = common.sluice_bin()
    before_bin = os.environ.get("BEFORE_BIN", os.path.expanduser("~/.cache/sluice/before/sluice"))
    if not os.path.exists(before_bin):
        print(f"({before_bin} missing: no before row)", file=sys.stderr)
        before_bin = None
    if "--callgrind" in sys.argv[1:]:
        callgrind(before_bin)
    elif "--threads" in sys.argv[1:]:
        threads(before_bin)
    else:
        throughput(before_bin)


if __name__ == "__main__":
    main()
