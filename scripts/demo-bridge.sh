#!/usr/bin/env bash
# The bridge demo: Kinesis → JSON → wasm mask-fields → wasm field-partitioner → Kafka.
#
#   scripts/demo-bridge.sh [RECORDS]     # default 5000
#
# Starts a local Kinesis emulator (kinesis-local) and a local Kafka broker (tansu) with the
# project's own scripts, creates a 2-shard stream, writes RECORDS generated click events into it
# (with sluice itself: generator → kinesis sink), runs examples/kinesis-to-kafka.yaml until the
# stream is drained (--max-records), reads the topic back (kafka → file) and prints a
# verification: records read and written, per-partition counts, masked emails, headers, per-user
# order. Then stops what it started. Needs no cloud account.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
RECORDS=${1:-${RECORDS:-5000}}
export SLUICE_CACHE=${SLUICE_CACHE:-$HOME/.cache/sluice}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$SLUICE_CACHE/target}

# shellcheck source=lib/setup.sh
source "$ROOT/scripts/lib/setup.sh"
build_demo
export SLUICE_PLUGIN_DIR="$ROOT/.sluice/plugins"

RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bridge.XXXXXX")
stop_all() {
  bash "$ROOT/scripts/emulators/kinesis.sh" stop "$RUN_DIR" || true
  bash "$ROOT/scripts/emulators/kafka.sh" stop "$RUN_DIR" || true
}
trap stop_all EXIT
echo "==> starting kinesis-local and tansu (state in $RUN_DIR)"
bash scripts/emulators/kinesis.sh start "$RUN_DIR"
bash scripts/emulators/kafka.sh start "$RUN_DIR"
# shellcheck disable=SC1091
source "$RUN_DIR/kinesis.env"
# shellcheck disable=SC1091
source "$RUN_DIR/kafka.env"
export KINESIS_ENDPOINT=$SLUICE_TEST_KINESIS_ENDPOINT
export KAFKA_BROKERS=$SLUICE_TEST_KAFKA_BROKERS
export BRIDGE_STREAM=clicks BRIDGE_TOPIC=clicks
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
WORK=$RUN_DIR/work
mkdir -p "$WORK"

echo "==> creating stream $BRIDGE_STREAM (2 shards)"
amz_date=$(date -u +%Y%m%dT%H%M%SZ)
curl -sf -X POST "$KINESIS_ENDPOINT/" \
  -H 'Content-Type: application/x-amz-json-1.1' \
  -H 'X-Amz-Target: Kinesis_20131202.CreateStream' \
  -H "X-Amz-Date: $amz_date" \
  -H "Authorization: AWS4-HMAC-SHA256 Credential=test/${amz_date:0:8}/us-east-1/kinesis/aws4_request, SignedHeaders=host;x-amz-date, Signature=0" \
  -d "{\"StreamName\":\"$BRIDGE_STREAM\",\"ShardCount\":2}" >/dev/null

echo "==> writing $RECORDS sample click events into the stream (sluice: generator → kinesis)"
cat >"$WORK/load.yaml" <<EOF
version: 1
name: load
source:
  type: generator
  count: $RECORDS
  partitions: 2
format:
  decode: json
  encode: json
partitioner:
  fields: [user_id]
sink:
  type: kinesis
  stream: $BRIDGE_STREAM
  aws:
    region: us-east-1
    endpoint: $KINESIS_ENDPOINT
    credentials: {provider: basic, access_key_id: test, secret_access_key: test}
offsets:
  store: memory
EOF
(cd "$WORK" && SLUICE_LOG=warn "$SLUICE" run load.yaml --no-progress 2>&1 | tail -n 2)

echo "==> sluice run examples/kinesis-to-kafka.yaml --max-records $RECORDS"
# The example's offsets live beside it (relative paths are relative to the spec): forget those
# of an earlier demo, whose stream was another.
"$SLUICE" offsets reset "$ROOT/examples/kinesis-to-kafka.yaml" >/dev/null 2>&1 || true
(cd "$WORK" && SLUICE_LOG=warn "$SLUICE" run "$ROOT/examples/kinesis-to-kafka.yaml" --max-records "$RECORDS" --no-progress 2>&1 | tee "$WORK/bridge.log" | tail -n 3)

echo "==> reading topic $BRIDGE_TOPIC back (sluice: kafka → file)"
cat >"$WORK/verify.yaml" <<EOF
version: 1
name: verify
source:
  type: kafka
  brokers: [$KAFKA_BROKERS]
  topics: [$BRIDGE_TOPIC]
  group: demo-verify
sink:
  type: file
  path: out/verify.jsonl
  envelope: true
offsets:
  store: memory
EOF
(cd "$WORK" && SLUICE_LOG=warn "$SLUICE" run verify.yaml --max-records "$RECORDS" --no-progress >"$WORK/verify.log" 2>&1) ||
  { cat "$WORK/verify.log"; exit 1; }

echo "==> verification"
python3 - "$WORK/out/verify.jsonl" "$RECORDS" <<'PY'
import json, sys
from collections import Counter, defaultdict
path, want = sys.argv[1], int(sys.argv[2])
rows = [json.loads(l) for l in open(path)]
seqs = [r["value"]["seq"] for r in rows]
parts = Counter(r["metadata"]["partition"] for r in rows)
masked = sum(1 for r in rows if "@" not in str(r["value"].get("email", "")))
with_headers = sum(1 for r in rows if "shard-id" in r.get("headers", {}) and "sequence-number" in r.get("headers", {}))
shards = Counter(r.get("headers", {}).get("shard-id") for r in rows)
# Per-user order: one user is one Kinesis shard and one Kafka partition (read back in offset
# order), so the Kinesis sequence numbers of a user's records must increase in Kafka.
# Stronger, with many records per pair: within a Kafka partition, the records of each Kinesis
# shard keep the shard's order.
order_ok, per_user, per_pair = True, defaultdict(list), defaultdict(list)
for r in rows:
    seqnum = int(r["headers"]["sequence-number"])
    per_user[r["value"]["user_id"]].append(seqnum)
    per_pair[(r["metadata"]["partition"], r["headers"]["shard-id"])].append(seqnum)
for s in list(per_user.values()) + list(per_pair.values()):
    if s != sorted(s):
        order_ok = False
print(f"  records in Kafka:        {len(rows)} (unique {len(set(seqs))} of {want})")
print(f"  per Kafka partition:     " + ", ".join(f"{k}: {v}" for k, v in sorted(parts.items())))
print(f"  per Kinesis shard:       " + ", ".join(f"{k}: {v}" for k, v in sorted(shards.items())))
print(f"  emails masked:           {masked} of {len(rows)}")
print(f"  shard-id/sequence-number headers: {with_headers} of {len(rows)}")
print(f"  order kept:              {'yes' if order_ok else 'NO'} (per user: {len(per_user)} users; per shard within each Kafka partition: {len(per_pair)} pairs)")
ok = len(set(seqs)) == want and masked == len(rows) and with_headers == len(rows) and order_ok
print("  RESULT: " + ("OK" if ok else "FAILED"))
sys.exit(0 if ok else 1)
PY
