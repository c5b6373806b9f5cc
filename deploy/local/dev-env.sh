#!/usr/bin/env bash
# Local development secrets for `make run`: an encryption key and an admin API key, generated once into
# .run/dev.env (git-ignored, mode 600). Production takes these from a secret store, never from a file.
source "$(dirname "$0")/common.sh"
FILE="$STATE_DIR/dev.env"
[[ -f "$FILE" ]] && exit 0
mkdir -p "$STATE_DIR"
umask 077
python3 - > "$FILE" <<'PY'
import base64, secrets
print(f"BROKER_ENCRYPTION_KEYS=dev1:{base64.b64encode(secrets.token_bytes(32)).decode()}")
print(f"BROKER_ADMIN_API_KEY=dev_{secrets.token_urlsafe(24)}")
PY
log dev-env "generated local secrets in $FILE"
