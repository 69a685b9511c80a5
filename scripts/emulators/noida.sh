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

NAME=noida LABEL=noida-db BROKERS_VAR=NOIDA BIN_VAR=NOIDA
PACKAGE=noida-db VERSION=0.2.3 BIN_GLOB=noida_db/noida-db

# shellcheck source=../lib/emulator.sh
source "$(dirname "$0")/../lib/emulator.sh"

serve() {
  local run_dir=$1 bin=$2 port=$3
  # The binary itself (not the Python launcher), so that stop's signal reaches the server.
  "$bin" start --data-dir "$run_dir/noida" --only kafka --kafka-port "$port" \
    >>"$run_dir/noida.log" 2>&1 &
}

broker_main "$@"
