#!/usr/bin/env bash
# Runs every Sluice test on a fresh machine or a warm one.
#
# Installs what the tests need (the wasm32-wasip2 target, librdkafka's build tools, the local
# Kinesis/DynamoDB emulators and Kafka broker, cached under ~/.cache/sluice), starts the local
# servers on free loopback ports, runs formatting, lint and all tests, and stops the servers.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
export SLUICE_CACHE=${SLUICE_CACHE:-$HOME/.cache/sluice}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$SLUICE_CACHE/target}
mkdir -p "$SLUICE_CACHE"
cd "$ROOT"

step() { printf '\n==> %s\n' "$*"; }

step "toolchain"
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
# shellcheck source=lib/setup.sh
source "$ROOT/scripts/lib/setup.sh"

step "local servers"
RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/sluice-test.XXXXXX")
export SLUICE_TEST_RUN_DIR=$RUN_DIR
emulators=("$ROOT"/scripts/emulators/*.sh)
stop_all() {
  for s in "${emulators[@]}"; do [ -f "$s" ] && bash "$s" stop "$RUN_DIR" || true; done
}
trap stop_all EXIT
for s in "${emulators[@]}"; do
  [ -f "$s" ] || continue
  bash "$s" start "$RUN_DIR"
done
for f in "$RUN_DIR"/*.env; do
  [ -f "$f" ] || continue
  # shellcheck disable=SC1090
  source "$f"
done
env | grep '^SLUICE_TEST_' | sort || true

step "format"
cargo fmt --all --check

step "lint"
cargo clippy --workspace --all-targets --quiet -- -D warnings

TEST_LOG="$RUN_DIR/tests.log"
step "tests"
cargo test --workspace 2>&1 | tee -a "$TEST_LOG"

if [ -f plugins/Cargo.toml ]; then
  step "plugin unit tests (native)"
  cargo test --manifest-path plugins/Cargo.toml --workspace 2>&1 | tee -a "$TEST_LOG"
fi

# One closing line for the whole run (cargo prints one per test binary).
step "summary"
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$TEST_LOG"
