#!/usr/bin/env bash
# A second local Kafka-protocol broker, for what tansu cannot test: noida-db (PyPI noida-db==0.2.3,
# its Kafka service only), installed once into ~/.cache/sluice/noida-venv. Unlike tansu it hides
# aborted and open transactions from read_committed consumers, fences a zombie transactional producer,
# and reports true high watermarks (see docs/contributing.md and ../shared/TESTING.md).
#
#   scripts/emulators/noida.sh start RUN_DIR   # starts it, writes RUN_DIR/noida.env
#   scripts/emulators/noida.sh stop RUN_DIR    # stops what start started
#   scripts/emulators/noida.sh install         # only installs (prints the binary's path)
#
# RUN_DIR/noida.env exports SLUICE_TEST_NOIDA_BROKERS (host:port) and SLUICE_TEST_NOIDA_BIN (the
# binary, for tests that start a private broker: `$BIN start --data-dir D --only kafka --kafka-port P`).
# Data lives in RUN_DIR/noida (thrown away with the run); logs go to RUN_DIR/noida.log.
set -euo pipefail

CACHE=${SLUICE_CACHE:-$HOME/.cache/sluice}
VENV=$CACHE/noida-venv
VERSION=0.2.3

install() {
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" >&2
  fi
  local shown
  shown=$("$VENV/bin/pip" show noida-db 2>/dev/null || true)
  if ! grep -qx "Version: $VERSION" <<<"$shown"; then
    echo "installing noida-db==$VERSION into $VENV" >&2
    "$VENV/bin/pip" install -q --disable-pip-version-check "noida-db==$VERSION" >&2
  fi
  local bin
  bin=$(ls "$VENV"/lib/python3*/site-packages/noida_db/noida-db 2>/dev/null | head -n1)
  if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "noida.sh: no noida-db binary in noida-db==$VERSION under $VENV" >&2
    exit 1
  fi
  echo "$bin"
}

# shellcheck source=../lib/emulator.sh
source "$(dirname "$0")/../lib/emulator.sh"

start() {
  local run_dir=$1 bin port
  mkdir -p "$run_dir"
  run_dir=$(cd "$run_dir" && pwd)
  bin=$(install)
  port=$(free_port)
  # The binary itself (not the Python launcher), so that stop's signal reaches the server.
  "$bin" start --data-dir "$run_dir/noida" --only kafka --kafka-port "$port" \
    >>"$run_dir/noida.log" 2>&1 &
  echo $! >"$run_dir/noida.pid"
  wait_ready noida "$run_dir/noida.pid" "$run_dir/noida.log" 30 port_open "$port"
  cat >"$run_dir/noida.env" <<EOF2
export SLUICE_TEST_NOIDA_BROKERS=127.0.0.1:$port
export SLUICE_TEST_NOIDA_BIN=$bin
EOF2
  echo "kafka (noida-db) listening on 127.0.0.1:$port (pid $(cat "$run_dir/noida.pid"), log $run_dir/noida.log)" >&2
}

stop() {
  stop_pid "$1/noida.pid"
}

case "${1:-}" in
  start) start "${2:?usage: noida.sh start RUN_DIR}" ;;
  stop) stop "${2:?usage: noida.sh stop RUN_DIR}" ;;
  install) install ;;
  *)
    echo "usage: $0 start RUN_DIR | stop RUN_DIR | install" >&2
    exit 2
    ;;
esac
