# Sourced by scripts/emulators/*.sh: what every local test server script does alike.

# A free TCP port on the loopback interface.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# True when something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# True when URL answers HTTP with status CODE (any status when CODE is `any`).
http_status_is() {
  local got
  got=$(curl -s -o /dev/null -w '%{http_code}' "$1" 2>/dev/null || true)
  if [ "$2" = any ]; then [ -n "$got" ] && [ "$got" != "000" ]; else [ "$got" = "$2" ]; fi
}

# wait_ready NAME PID_FILE LOG SECONDS CHECK...: polls CHECK until it succeeds; fails (showing
# the log's tail) when the process has exited or SECONDS have passed.
wait_ready() {
  local name=$1 pid_file=$2 log=$3 limit=$4
  shift 4
  local deadline=$((SECONDS + limit))
  until "$@"; do
    if [ $SECONDS -ge "$deadline" ] || ! kill -0 "$(cat "$pid_file")" 2>/dev/null; then
      echo "$name: not ready within ${limit}s (or exited); log $log:" >&2
      tail -n 30 "$log" >&2 || true
      exit 1
    fi
    sleep 0.1
  done
}

# Stops the process in PID_FILE: TERM, up to 5 s of grace, then KILL.
stop_pid() {
  local pid_file=$1 pid
  [ -f "$pid_file" ] || return 0
  pid=$(cat "$pid_file")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pid_file"
}

# The arguments every scripts/emulators/*.sh takes: sets cmd (start|stop), RUN_DIR and CACHE, or
# prints the usage and exits 2.
emulator_args() {
  cmd=${1:-}
  RUN_DIR=${2:-}
  if [ -z "$cmd" ] || [ -z "$RUN_DIR" ]; then
    echo "usage: $0 start|stop RUN_DIR" >&2
    exit 2
  fi
  CACHE=${SLUICE_CACHE:-$HOME/.cache/sluice}
}

# Installs PACKAGE==VERSION into the venv VENV once (again only when the version differs) and
# prints the path of its binary BIN (a glob below the venv's site-packages); exits 1 if it is
# missing.
pip_binary() {
  local venv=$1 package=$2 version=$3 bin_glob=$4 shown bin
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" >&2
  fi
  shown=$("$venv/bin/pip" show "$package" 2>/dev/null || true)
  if ! grep -qx "Version: $version" <<<"$shown"; then
    echo "installing $package==$version into $venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check "$package==$version" >&2
  fi
  # shellcheck disable=SC2086 # the glob is meant to expand
  bin=$(ls "$venv"/lib/python3*/site-packages/$bin_glob 2>/dev/null | head -n1)
  if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "$0: no $bin_glob in $package==$version under $venv" >&2
    exit 1
  fi
  echo "$bin"
}

# The command line of a Kafka-protocol broker script: `start RUN_DIR`, `stop RUN_DIR` (ends what
# start started) or `install`. The script sets NAME (file names in RUN_DIR), LABEL, PACKAGE and
# VERSION (pinned, installed into $CACHE/NAME-venv), BIN_GLOB (the binary in the package),
# BROKERS_VAR and BIN_VAR (RUN_DIR/NAME.env exports SLUICE_TEST_<BROKERS_VAR>_BROKERS and
# SLUICE_TEST_<BIN_VAR>_BIN), and defines `serve RUN_DIR BIN PORT`, which starts the server in the
# background, its output appended to RUN_DIR/NAME.log.
broker_main() {
  local venv=${SLUICE_CACHE:-$HOME/.cache/sluice}/$NAME-venv run_dir bin port
  case "${1:-}" in
    start)
      run_dir=${2:?usage: $NAME.sh start RUN_DIR}
      mkdir -p "$run_dir"
      run_dir=$(cd "$run_dir" && pwd)
      bin=$(pip_binary "$venv" "$PACKAGE" "$VERSION" "$BIN_GLOB")
      port=$(free_port)
      serve "$run_dir" "$bin" "$port"
      echo $! >"$run_dir/$NAME.pid"
      wait_ready "$NAME" "$run_dir/$NAME.pid" "$run_dir/$NAME.log" 30 port_open "$port"
      cat >"$run_dir/$NAME.env" <<ENV
export SLUICE_TEST_${BROKERS_VAR}_BROKERS=127.0.0.1:$port
export SLUICE_TEST_${BIN_VAR}_BIN=$bin
ENV
      echo "kafka ($LABEL) listening on 127.0.0.1:$port (pid $(cat "$run_dir/$NAME.pid"), log $run_dir/$NAME.log)" >&2
      ;;
    stop) stop_pid "${2:?usage: $NAME.sh stop RUN_DIR}/$NAME.pid" ;;
    install) pip_binary "$venv" "$PACKAGE" "$VERSION" "$BIN_GLOB" ;;
    *)
      echo "usage: $0 start RUN_DIR | stop RUN_DIR | install" >&2
      exit 2
      ;;
  esac
}
