#!/usr/bin/env bash
# Redis from Debian's packages, on loopback, no persistence (tests and local runs only).
source "$(dirname "$0")/common.sh"
NAME=redis
DIR="$STATE_DIR/redis"
PIDFILE="$DIR/redis.pid"
LOGFILE="$DIR/redis.log"

install() {
  command -v redis-server >/dev/null 2>&1 && return 0
  log "$NAME" "installing redis-server from Debian's packages"
  apt_install redis-server
}

ping() { redis-cli -h 127.0.0.1 -p "$LOCAL_REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

up() {
  if pid_alive "$PIDFILE"; then log "$NAME" "already running on 127.0.0.1:$LOCAL_REDIS_PORT"; return 0; fi
  install
  require_free_port "$NAME" "$LOCAL_REDIS_PORT"
  mkdir -p "$DIR"
  redis-server --bind 127.0.0.1 --port "$LOCAL_REDIS_PORT" --protected-mode yes \
    --save "" --appendonly no --dir "$DIR" --daemonize yes \
    --pidfile "$PIDFILE" --logfile "$LOGFILE"
  wait_until "$NAME" "$LOGFILE" "$PIDFILE" "$START_TIMEOUT" ping
  log "$NAME" "ready on 127.0.0.1:$LOCAL_REDIS_PORT (log: $LOGFILE)"
}

down() { stop_pidfile "$NAME" "$PIDFILE"; }

"${1:-up}"
