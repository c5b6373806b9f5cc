#!/usr/bin/env bash
# Start or stop every local server the broker needs: infra.sh up|down|status
source "$(dirname "$0")/common.sh"
HERE="$(cd "$(dirname "$0")" && pwd)"
SERVERS=(redis ferretdb kafka)

case "${1:-up}" in
  up) for s in "${SERVERS[@]}"; do bash "$HERE/$s.sh" up; done ;;
  down) for s in "${SERVERS[@]}"; do bash "$HERE/$s.sh" down; done ;;
  status)
    for s in "${SERVERS[@]}"; do
      if pid_alive "$STATE_DIR/$s/$s.pid"; then echo "$s: running (pid $(cat "$STATE_DIR/$s/$s.pid"))"; else echo "$s: stopped"; fi
    done ;;
  *) die infra "usage: infra.sh up|down|status" ;;
esac
