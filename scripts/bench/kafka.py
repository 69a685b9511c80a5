#!/usr/bin/env python3
"""Kafka throughput of the `sluice` binary against a local broker (tansu).

    cargo build --release -p sluice-runtime --bin sluice
    python3 scripts/bench/kafka.py [--records 200000] [--size 1024] [--partitions 4]
                                   [--kinesis-records 3000]
    python3 scripts/bench/kafka.py --exactly-once [--commit-interval 1s]

--exactly-once compares at-least-once with `sink.exactly_once` instead (the cost of the Kafka
transaction): generator → kafka, both with the Kafka offset store, against noida-db
(scripts/emulators/noida.sh, or SLUICE_TEST_NOIDA_BROKERS), which does transactions.

Starts its own broker (scripts/emulators/kafka.sh) unless SLUICE_TEST_KAFKA_BROKERS is set, and
its own kinesis-local for the Kinesis → Kafka row unless SLUICE_TEST_KINESIS_ENDPOINT is set.
Measures, on fresh topics (specs/kafka-*.yaml):
  generator → kafka     the sink alone (idempotent producer, acks=all, --compression)
  kafka → discard       the source alone (consumer group, --max-records N; the wall time
                        includes joining the group, ~3-5 s on tansu)
  kafka → kafka         the two together (the mirror case), records passed through as bytes
  kinesis → kafka       the bridge with JSON decode/encode (kinesis-local is the bottleneck:
                        ~500 records/s, so only the CPU Sluice spends per MB is meaningful)
For each: wall time, records/s, MB/s of record values and the CPU time (user+sys) of the sluice
process (getrusage of the finished child) per MB. The broker's CPU is shown too.
"""

import argparse
import random
import tempfile

import common


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
    ap.add_argument("--commit-interval", default="1s",
                    help="with --exactly-once: commit_interval (one transaction each)")
    a = ap.parse_args()
    if a.exactly_once:
        return exactly_once(a)
    common.sluice_bin()
    work = tempfile.mkdtemp(prefix="sluice-kafka-bench.")
    with common.emulator("kafka", "SLUICE_TEST_KAFKA_BROKERS") as (brokers, broker_pid):
        tag = "%012x" % random.getrandbits(48)
        env = {"SLUICE_TEST_KAFKA_BROKERS": brokers, "BENCH_TAG": tag, "BENCH_SIZE": str(a.size),
               "BENCH_PARTITIONS": str(a.partitions), "BENCH_COMPRESSION": a.compression,
               "BENCH_TOPIC_IN": f"bench-in-{tag}"}
        mb = a.records * a.size / 1e6
        print(common.machine_line())
        print(f"{a.records} records of {a.size} B ({mb:.0f} MB), {a.partitions} partitions, "
              "broker tansu (memory storage) on the same machine")
        print(common.TABLE_HEAD.format("broker"))

        def row(name, n, spec, extra=(), **more):
            b0 = common.proc_cpu_seconds(broker_pid)
            args = ["run", "--no-progress", *extra, common.spec(spec)]
            wall, cpu, _ = common.run_sluice(args, work, {**env, "BENCH_RECORDS": str(n), **more})
            print(common.row(name, n, n * a.size / 1e6, wall, cpu, common.cpu_delta(broker_pid, b0)), flush=True)

        n = a.records
        row("generator → kafka", n, "kafka-load")
        row("kafka → discard", n, "kafka-read", ("--max-records", str(n)))
        row("kafka → kafka", n, "kafka-mirror", ("--max-records", str(n)), BENCH_TOPIC_OUT=f"bench-out-{tag}")

        if a.kinesis_records > 0:
            with common.emulator("kinesis", "SLUICE_TEST_KINESIS_ENDPOINT") as (endpoint, _):
                stream = f"bench-{tag}"
                common.create_stream(endpoint, stream, a.partitions)
                env.update(SLUICE_TEST_KINESIS_ENDPOINT=endpoint, BENCH_STREAM=stream)
                k = a.kinesis_records
                common.run_sluice(["run", "--no-progress", common.spec("kafka-kinesis-load")], work,
                                  {**env, "BENCH_RECORDS": str(k)})
                row("kinesis → kafka (bridge)", k, "kafka-bridge", ("--max-records", str(k)),
                    BENCH_TOPIC_OUT=f"bench-bridge-{tag}")


def exactly_once(a):
    """At-least-once against exactly-once: same broker (noida-db), same Kafka offset store,
    generator → kafka (specs/kafka-load-alo.yaml, specs/kafka-load-eos.yaml)."""
    common.sluice_bin()
    work = tempfile.mkdtemp(prefix="sluice-eos-bench.")
    with common.emulator("noida", "SLUICE_TEST_NOIDA_BROKERS") as (brokers, broker_pid):
        tag = "%012x" % random.getrandbits(48)
        env = {"SLUICE_TEST_NOIDA_BROKERS": brokers, "BENCH_TAG": tag, "BENCH_SIZE": str(a.size),
               "BENCH_PARTITIONS": str(a.partitions), "BENCH_RECORDS": str(a.records),
               "BENCH_COMMIT_INTERVAL": a.commit_interval}
        mb = a.records * a.size / 1e6
        print(common.machine_line())
        print(f"binary {common.sluice_bin()}; {a.records} records of {a.size} B ({mb:.0f} MB), "
              f"{a.partitions} partitions, broker noida-db on the same machine, "
              f"commit_interval {a.commit_interval}")
        print(common.TABLE_HEAD.format("broker"))
        for name, spec in (("generator → kafka, at-least-once", "kafka-load-alo"),
                           ("generator → kafka, exactly-once", "kafka-load-eos")):
            b0 = common.proc_cpu_seconds(broker_pid)
            wall, cpu, _ = common.run_sluice(["run", "--no-progress", common.spec(spec)], work, env)
            print(common.row(name, a.records, mb, wall, cpu, common.cpu_delta(broker_pid, b0)), flush=True)


if __name__ == "__main__":
    main()
