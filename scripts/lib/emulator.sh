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
