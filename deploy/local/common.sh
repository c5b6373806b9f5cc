# Shared helpers for the local server scripts. Sourced, not run.
# Every server runs on loopback with its state under $STATE_DIR (git-ignored) and a pid file there,
# so `down` stops exactly the process `up` started.
set -euo pipefail

ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE_DIR="${BROKER_STATE_DIR:-$ROOT_DIR/.run}"
BIN_DIR="$STATE_DIR/bin"

LOCAL_REDIS_PORT="${LOCAL_REDIS_PORT:-6379}"
LOCAL_MONGO_PORT="${LOCAL_MONGO_PORT:-27017}"
LOCAL_KAFKA_PORT="${LOCAL_KAFKA_PORT:-9092}"
LOCAL_KAFKA_CONTROLLER_PORT="${LOCAL_KAFKA_CONTROLLER_PORT:-9093}"
START_TIMEOUT="${LOCAL_START_TIMEOUT:-90}"

log() { printf '[%s] %s\n' "$1" "$2"; }
die() { printf '[%s] ERROR: %s\n' "$1" "$2" >&2; exit 1; }

# pid_alive FILE: true when FILE names a running process.
pid_alive() {
  local file="$1"
  [[ -f "$file" ]] || return 1
  local pid
  pid="$(cat "$file" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

# port_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# require_free_port NAME PORT: a clear error when a port we need is taken by something we did not start.
require_free_port() {
  local name="$1" port="$2"
  if port_open "$port"; then
    die "$name" "port $port on 127.0.0.1 is already in use by another process; stop it or choose another port (see README, settings)"
  fi
}

# wait_until NAME LOGFILE PIDFILE TIMEOUT CHECK...: poll CHECK until it succeeds, or fail naming the
# server and its log (at once when the process behind PIDFILE has died).
wait_until() {
  local name="$1" logfile="$2" pidfile="$3" timeout="$4"
  shift 4
  local deadline=$((SECONDS + timeout))
  until "$@"; do
    if [[ -n "$pidfile" && -f "$pidfile" ]] && ! pid_alive "$pidfile"; then
      echo "---- last lines of $logfile ----" >&2
      tail -n 30 "$logfile" >&2 || true
      rm -f "$pidfile"
      die "$name" "exited during start-up; see $logfile"
    fi
    if (( SECONDS >= deadline )); then
      echo "---- last lines of $logfile ----" >&2
      tail -n 30 "$logfile" >&2 || true
      die "$name" "did not become ready within ${timeout}s; see $logfile"
    fi
    sleep 0.5
  done
}

# stop_pidfile NAME FILE: stop the process in FILE (TERM, then KILL after 20 s) and remove the file.
stop_pidfile() {
  local name="$1" file="$2"
  if ! pid_alive "$file"; then
    rm -f "$file"
    log "$name" "not running"
    return 0
  fi
  local pid
  pid="$(cat "$file")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name" "did not stop after TERM; sending KILL to $pid"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
  log "$name" "stopped (pid $pid)"
}

# apt_install PACKAGE...: install Debian packages, running `apt-get update` once per state dir.
apt_install() {
  local sudo=""
  [[ "$(id -u)" == 0 ]] || sudo="sudo"
  if [[ ! -f "$STATE_DIR/.apt-updated" ]]; then
    $sudo apt-get update -qq
    mkdir -p "$STATE_DIR" && touch "$STATE_DIR/.apt-updated"
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
