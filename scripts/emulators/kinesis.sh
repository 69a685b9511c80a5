#!/usr/bin/env bash
# Starts or stops the local Kinesis emulator (`kinesis-local`, a build of kinesis-mock) for tests.
#
#   scripts/emulators/kinesis.sh start RUN_DIR   # installs kinesis-local once (cached), makes a
#                                                # TLS cert once, starts it on a free loopback
#                                                # port, writes RUN_DIR/kinesis.env
#   scripts/emulators/kinesis.sh stop RUN_DIR    # stops the server started for RUN_DIR
#
# RUN_DIR/kinesis.env exports SLUICE_TEST_KINESIS_ENDPOINT (plain HTTP/1.1, which also serves
# SubscribeToShard); logs go to RUN_DIR/kinesis.log.
set -euo pipefail

# shellcheck source=../lib/emulator.sh
source "$(dirname "$0")/../lib/emulator.sh"
emulator_args "$@"
NPM_DIR=$CACHE/npm
CERT=$CACHE/kinesis-cert.json
MAIN=$NPM_DIR/node_modules/kinesis-local/main.js
KINESIS_LOCAL_VERSION=0.6.2
PID_FILE=$RUN_DIR/kinesis.pid

make_cert() {
  # kinesis-local crashes at start without a cert file, even for plain HTTP; its bundled cert has
  # no subjectAltName, so make one for 127.0.0.1.
  local tmp
  tmp=$(mktemp -d)
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=127.0.0.1" \
    -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" >/dev/null 2>&1
  python3 - "$tmp/key.pem" "$tmp/cert.pem" "$CERT.tmp" <<'EOF'
import json, sys
key, cert, out = sys.argv[1:4]
with open(out, "w") as f:
    json.dump({"server": {"key": open(key).read(), "cert": open(cert).read()}}, f)
EOF
  mv "$CERT.tmp" "$CERT"
  rm -rf "$tmp"
}

case "$cmd" in
  start)
    mkdir -p "$RUN_DIR" "$CACHE" "$NPM_DIR"
    # Pinned, like the broker: a new emulator release changes what the tests see.
    if ! grep -q "\"version\" *: *\"$KINESIS_LOCAL_VERSION\"" "$NPM_DIR/node_modules/kinesis-local/package.json" 2>/dev/null; then
      echo "kinesis: installing kinesis-local@$KINESIS_LOCAL_VERSION into $NPM_DIR (once)" >&2
      npm install --silent --no-audit --no-fund --prefix "$NPM_DIR" "kinesis-local@$KINESIS_LOCAL_VERSION" >&2
    fi
    [ -s "$CERT" ] || make_cert
    port=$(free_port)
    tls_port=$(free_port)
    # A new session of its own, so `stop` can end the server and nothing else.
    KINESIS_MOCK_CERT_PATH=$CERT \
      KINESIS_MOCK_PLAIN_PORT=$port \
      KINESIS_MOCK_TLS_PORT=$tls_port \
      CREATE_STREAM_DURATION=0ms DELETE_STREAM_DURATION=0ms \
      SPLIT_SHARD_DURATION=0ms MERGE_SHARDS_DURATION=0ms UPDATE_SHARD_COUNT_DURATION=0ms \
      REGISTER_STREAM_CONSUMER_DURATION=0ms DEREGISTER_STREAM_CONSUMER_DURATION=0ms \
      START_STREAM_ENCRYPTION_DURATION=0ms STOP_STREAM_ENCRYPTION_DURATION=0ms \
      LOG_LEVEL=${KINESIS_LOG_LEVEL:-WARN} \
      setsid node "$MAIN" >"$RUN_DIR/kinesis.log" 2>&1 &
    echo $! >"$PID_FILE"
    url=http://127.0.0.1:$port
    wait_ready kinesis "$PID_FILE" "$RUN_DIR/kinesis.log" 60 http_status_is "$url/" any
    echo "export SLUICE_TEST_KINESIS_ENDPOINT=$url" >"$RUN_DIR/kinesis.env"
    echo "kinesis: kinesis-local on $url (pid $(cat "$PID_FILE"))" >&2
    ;;
  stop)
    stop_pid "$PID_FILE"
    ;;
  *)
    echo "usage: $0 start|stop RUN_DIR" >&2
    exit 2
    ;;
esac
