#!/usr/bin/env bash
# The demo OAuth provider for `make run` (the fake authorization server from the tests, with a login
# page), and `link`: register it with the running broker and print a connect link and a curl line.
source "$(dirname "$0")/common.sh"
NAME=demo-provider
DIR="$STATE_DIR/demo"
PIDFILE="$DIR/demo.pid"
LOGFILE="$DIR/demo.log"
DEMO_PORT="${DEMO_PROVIDER_PORT:-8090}"
PYTHON="${PYTHON:-$ROOT_DIR/.venv/bin/python}"
BROKER="${BROKER_PUBLIC_URL:-http://127.0.0.1:${BROKER_HTTP_PORT:-8080}}"

up() {
  if pid_alive "$PIDFILE"; then log "$NAME" "already running on 127.0.0.1:$DEMO_PORT"; return 0; fi
  require_free_port "$NAME" "$DEMO_PORT"
  mkdir -p "$DIR"
  (cd "$ROOT_DIR" && nohup "$PYTHON" -m tests.fakes.oauth_provider --host 127.0.0.1 --port "$DEMO_PORT" \
    --client-id demo-client --client-secret demo-secret --redirect-uri "$BROKER/oauth/callback" \
    --access-token-ttl 300 >"$LOGFILE" 2>&1 </dev/null &
    echo $! > "$PIDFILE")
  wait_until "$NAME" "$LOGFILE" "$PIDFILE" 30 port_open "$DEMO_PORT"
  log "$NAME" "ready on http://127.0.0.1:$DEMO_PORT (log: $LOGFILE)"
}

down() { stop_pidfile "$NAME" "$PIDFILE"; }

api() {  # api METHOD PATH [JSON]
  curl -sS --max-time 10 -X "$1" "$BROKER$2" -H "Authorization: Bearer $BROKER_API_KEY" \
    -H 'Content-Type: application/json' ${3:+--data "$3"}
}

link() {
  for _ in $(seq 1 120); do
    curl -sf --max-time 2 "$BROKER/readyz" >/dev/null 2>&1 && break
    sleep 0.5
  done
  api PUT /v1/oauth-apps/demo '{"client_id":"demo-client","client_secret":"demo-secret"}' >/dev/null
  local body url keys_url
  body='{"success_redirect_uri":"'"$BROKER"'/landing/success","error_redirect_uri":"'"$BROKER"'/landing/error"'
  url="$(api POST /v1/connect/tokens "$body,\"provider\":\"demo\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["connect_url"])')"
  keys_url="$(api POST /v1/connect/tokens "$body,\"provider\":\"demokeys\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["connect_url"])')"
  cat <<MSG

==================================================================================================
 The broker is ready on $BROKER  (API key: see .run/dev.env, BROKER_API_KEY)

 1. Open this link in a browser and approve on the demo provider's login page:
      $url
    (a key-based app too, use key-123: $keys_url)
 2. The landing page shows the account id and the curl line that reads its credential, e.g.
      curl -s -H "Authorization: Bearer \$BROKER_API_KEY" "$BROKER/v1/accounts?provider=demo"
 New links: make demo-link      Stop: Ctrl-C, then make infra-down
==================================================================================================
MSG
}

"${1:-up}"
