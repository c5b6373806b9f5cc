#!/usr/bin/env bash
# Local development secrets for `make run`, made once into .run/dev.env (git-ignored, mode 600): an
# encryption key, and a demo workspace whose owner's API key is BROKER_API_KEY. Production takes the
# encryption keys from a secret store and bootstraps with `python -m service admin create-workspace`.
source "$(dirname "$0")/common.sh"
FILE="$STATE_DIR/dev.env"
PYTHON="${PYTHON:-$ROOT_DIR/.venv/bin/python}"
grep -q '^BROKER_API_KEY=' "$FILE" 2>/dev/null && exit 0
mkdir -p "$STATE_DIR"
umask 077
key="$("$PYTHON" -m service keys generate)"
api_key="$(cd "$ROOT_DIR" && "$PYTHON" -m service admin create-workspace Demo --owner "demo owner" 2>/dev/null)"
[[ -n "$api_key" ]] || die dev-env "could not create the demo workspace (is FerretDB running? make infra-up)"
{
  echo "BROKER_ENCRYPTION_KEYS=dev1:$key"
  echo "BROKER_API_KEY=$api_key"
} > "$FILE"
log dev-env "generated local secrets and a demo workspace in $FILE"
