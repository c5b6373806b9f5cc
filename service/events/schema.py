"""Credential events as CloudEvents 1.0 (structured JSON). Ids, provider, status, expiry and version:
never a token, key or secret. Documented for subscribers in docs/events.md."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

SOURCE = "urn:oauth-broker"
TYPE_PREFIX = "oauthbroker."
CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"

CONNECTED = "account.connected"
ROTATED = "credential.rotated"
REFRESH_FAILED = "refresh.failed"
REAUTHORIZATION_REQUIRED = "account.reauthorization_required"
REVOKED = "account.revoked"
DELETED = "account.deleted"
TYPES = (CONNECTED, ROTATED, REFRESH_FAILED, REAUTHORIZATION_REQUIRED, REVOKED, DELETED)


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def account_event(
    kind: str,
    *,
    account_id: str,
    workspace_id: str,
    provider: str,
    status: str,
    expires_at: dt.datetime | None,
    version: int,
    **extra: str | int | None,
) -> dict[str, Any]:
    """One event, JSON-ready (strings and numbers only, so it round-trips through MongoDB unchanged)."""
    assert kind in TYPES, kind
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": SOURCE,
        "type": TYPE_PREFIX + kind,
        "subject": account_id,
        "time": _iso(dt.datetime.now(dt.UTC)),
        "datacontenttype": "application/json",
        "data": {
            "account_id": account_id,
            "workspace_id": workspace_id,
            "provider": provider,
            "status": status,
            "expires_at": _iso(expires_at),
            "version": version,
            **extra,
        },
    }
