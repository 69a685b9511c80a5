#!/usr/bin/env bash
# Starts or stops the local DynamoDB + DynamoDB Streams emulator (the `moto` server) for tests.
#
#   scripts/emulators/dynamodb.sh start RUN_DIR   # installs moto once (cached), starts it on a
#                                                 # free loopback port, writes RUN_DIR/dynamodb.env
#   scripts/emulators/dynamodb.sh stop RUN_DIR    # stops the server started for RUN_DIR
#
# RUN_DIR/dynamodb.env exports SLUICE_TEST_DYNAMODB_ENDPOINT; logs go to RUN_DIR/dynamodb.log.
set -euo pipefail

# shellcheck source=../lib/emulator.sh
source "$(dirname "$0")/../lib/emulator.sh"
emulator_args "$@"
VENV=$CACHE/moto-venv
MOTO_VERSION=5.2.5
PID_FILE=$RUN_DIR/dynamodb.pid

case "$cmd" in
  start)
    mkdir -p "$RUN_DIR" "$CACHE"
    # Pinned, like the broker: a new moto release changes what the tests see.
    if ! "$VENV/bin/pip" show moto 2>/dev/null | grep -qx "Version: $MOTO_VERSION"; then
      echo "dynamodb: installing moto[server]==$MOTO_VERSION into $VENV (once)" >&2
      python3 -m venv "$VENV"
      "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
    fi
    port=$(free_port)
    # A new session of its own, so `stop` can end the server and nothing else.
    setsid "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$RUN_DIR/dynamodb.log" 2>&1 &
    echo $! >"$PID_FILE"
    url=http://127.0.0.1:$port
    wait_ready dynamodb "$PID_FILE" "$RUN_DIR/dynamodb.log" 60 http_status_is "$url/moto-api/" 200
    echo "export SLUICE_TEST_DYNAMODB_ENDPOINT=$url" >"$RUN_DIR/dynamodb.env"
    echo "dynamodb: moto server on $url (pid $(cat "$PID_FILE"))" >&2
    ;;
  stop)
    stop_pid "$PID_FILE"
    ;;
  *)
    echo "usage: $0 start|stop RUN_DIR" >&2
    exit 2
    ;;
esac
