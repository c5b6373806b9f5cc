#!/usr/bin/env bash
# FerretDB v1 (MongoDB wire protocol, SQLite backend) built from the Go module proxy, on loopback.
source "$(dirname "$0")/common.sh"
NAME=ferretdb
VERSION="${FERRETDB_VERSION:-v1.24.2}"
DIR="$STATE_DIR/ferretdb"
PIDFILE="$DIR/ferretdb.pid"
LOGFILE="$DIR/ferretdb.log"
BINARY="$BIN_DIR/ferretdb-$VERSION"

# `go install ...@v1.24.2` is the documented way, but (1) the proxy answers 403 to the deprecation
# look-up it makes, and (2) the module zip lacks the generated build/version/version.txt, so such a
# binary panics at start. So: download the exact module, copy it, add version.txt, build it as its own
# main module (its own go.sum pins every dependency).
install() {
  [[ -x "$BINARY" ]] && return 0
  command -v go >/dev/null 2>&1 || die "$NAME" "Go is required to build FerretDB (install Go, then retry)"
  log "$NAME" "building FerretDB $VERSION from the Go module proxy (first time only, about a minute)"
  local moddir src
  moddir="$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "github.com/FerretDB/FerretDB@$VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -d "$moddir" ]] || die "$NAME" "could not download github.com/FerretDB/FerretDB@$VERSION"
  src="$STATE_DIR/build/ferretdb-$VERSION"
  rm -rf "$src" && mkdir -p "$(dirname "$src")" "$BIN_DIR"
  cp -r "$moddir" "$src" && chmod -R u+w "$src"
  echo "$VERSION" > "$src/build/version/version.txt"
  (cd "$src" && go build -buildvcs=false -trimpath -o "$BINARY.tmp" ./cmd/ferretdb)
  mv "$BINARY.tmp" "$BINARY"
  rm -rf "$src"
}

up() {
  if pid_alive "$PIDFILE"; then log "$NAME" "already running on 127.0.0.1:$LOCAL_MONGO_PORT"; return 0; fi
  install
  require_free_port "$NAME" "$LOCAL_MONGO_PORT"
  mkdir -p "$DIR/data"
  nohup "$BINARY" --handler=sqlite --sqlite-url="file:$DIR/data/" \
    --listen-addr="127.0.0.1:$LOCAL_MONGO_PORT" --state-dir="$DIR" \
    --telemetry=disable --debug-addr=- --log-level=warn \
    >"$LOGFILE" 2>&1 </dev/null &
  echo $! > "$PIDFILE"
  wait_until "$NAME" "$LOGFILE" "$PIDFILE" "$START_TIMEOUT" port_open "$LOCAL_MONGO_PORT"
  log "$NAME" "ready on 127.0.0.1:$LOCAL_MONGO_PORT (log: $LOGFILE)"
}

down() { stop_pidfile "$NAME" "$PIDFILE"; }

"${1:-up}"
