#!/usr/bin/env bash
# The wasm JSON mask against native code, before and after a change of the SDK or the plugin, in
# one run (docs/benchmarks.md, "Plugins", "Faster wasm"). Builds `plugins/mask-fields` of commit
# BEFORE (default fbc1f00) to wasm, then prints
#   1. criterion's times of the 1000-record mask cases (wasm, wasm-baseline = BEFORE's plugin,
#      native, native-serde_json), wall clock;
#   2. with `--instructions`: instructions per 1000-record batch of each case (callgrind; repeatable
#      whatever the machine's load). Needs valgrind.
# Usage: runtime/benches/plugins_mask.sh [--instructions] [BEFORE]
set -euo pipefail
instructions=false
if [ "${1:-}" = --instructions ]; then instructions=true; shift; fi
before=${1:-fbc1f00}
repo=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
src=$target/mask-before-$before
if [ ! -f "$src/wasm/wasm32-wasip2/release/mask_fields.wasm" ]; then
  mkdir -p "$src/tree"
  git -C "$repo" archive "$before" sdk plugins | tar -x -C "$src/tree"
  cargo build --release --target wasm32-wasip2 --manifest-path "$src/tree/plugins/Cargo.toml" \
    --target-dir "$src/wasm" -p mask-fields
fi
export SLUICE_BENCH_BASELINE=$src/wasm/wasm32-wasip2/release
bench=$(cd "$repo" && cargo bench -p sluice-runtime --bench plugins --no-run --message-format=json |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("executable") and m.get("target", {}).get("name") == "plugins": print(m["executable"])')
cd "$repo/runtime"
cases='(wasm|wasm-baseline|native|native-serde_json)'
if ! $instructions; then
  "$bench" --bench "mask/.*/$cases/1000\$"
  exit
fi
for size in 100B 1KiB; do
  for case in wasm wasm-baseline native native-serde_json; do
    out=$(mktemp)
    valgrind --tool=callgrind --dump-instr=no --callgrind-out-file="$out" \
      "$bench" --bench --profile-time 2 "mask/$size/$case/1000\$" >/dev/null 2>&1
    case $case in native*) fn=native_mask ;; *) fn='WasmTransform as sluice_runtime::stage::Stage>::process' ;; esac
    # Inclusive instructions of `fn` per call, from the calls recorded into it.
    python3 - "$out" "$fn" "$size" "$case" <<'EOF'
import re, sys
path, fn, size, case = sys.argv[1:]
lines = open(path).read().split("\n")
ids = {m[1] for l in lines if (m := re.match(r"c?fn=\((\d+)\) (.*)", l)) and fn in m[2]}
calls = ir = 0
for i, l in enumerate(lines):
    m = re.match(r"cfn=\((\d+)\)", l)
    if m and m[1] in ids and lines[i + 1].startswith("calls="):
        calls += int(lines[i + 1].split()[0].split("=")[1])
        ir += int(lines[i + 2].split()[1])
print(f"mask/{size}/{case}/1000: {ir / max(calls, 1) / 1e6:.2f} M instructions per batch ({calls} batches)")
EOF
    rm -f "$out"
  done
done
