#!/usr/bin/env bash
# The demo: a generator → JSON → wasm mask-fields transform → wasm field partitioner → file
# pipeline on the embedded file offset store. Needs no cloud account and no running server.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export SLUICE_CACHE=${SLUICE_CACHE:-$HOME/.cache/sluice}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$SLUICE_CACHE/target}

# shellcheck source=lib/setup.sh
source "$ROOT/scripts/lib/setup.sh"
build_demo

echo "==> sluice validate examples/demo.yaml"
"$SLUICE" validate examples/demo.yaml
echo "==> sluice run examples/demo.yaml"
rm -f out/demo.jsonl
"$SLUICE" offsets reset examples/demo.yaml >/dev/null 2>&1 || true
"$SLUICE" run examples/demo.yaml "$@"
echo
echo "==> the output: out/demo.jsonl ($(wc -l < out/demo.jsonl) records); the first two:"
head -n 2 out/demo.jsonl
echo
echo "==> committed offsets (sluice offsets list examples/demo.yaml):"
"$SLUICE" offsets list examples/demo.yaml
