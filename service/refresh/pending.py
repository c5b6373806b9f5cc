"""A write-ahead for rotated credentials. The moment a provider answers a refresh, the new credential
(encrypted) is put in Redis before the MongoDB write; if the process dies or MongoDB is down before that
write lands, the next refresher of the account stores the stashed credential instead of calling the
provider again with a refresh token that rotation has already killed (RFC 9700 §4.14.2)."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import redis.asyncio as redis

from service import redis_keys
from service.store.accounts import Credentials
from service.store.keyring import Keyring

TTL_SECONDS = 7 * 86400


def _aad(account_id: str) -> str:
    return f"pending:{account_id}:credentials"


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse(value: str | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value)


class PendingCredentials:
    def __init__(self, client: redis.Redis, keyring: Keyring) -> None:
        self._redis = client
        self._keyring = keyring

    async def put(self, account_id: str, base_version: int, creds: Credentials) -> None:
        plain = {
            "values": dict(creds.values),
            "expires_at": _iso(creds.expires_at),
            "scopes": list(creds.scopes),
            "metadata": dict(creds.metadata),
            "refresh_at": _iso(creds.refresh_at),
        }
        blob = self._keyring.encrypt_json(plain, _aad(account_id))
        record = {
            "base_version": base_version,
            "kid": blob["kid"],
            "n": base64.b64encode(blob["n"]).decode(),
            "ct": base64.b64encode(blob["ct"]).decode(),
        }
        await self._redis.set(redis_keys.pending_credential(account_id), json.dumps(record), ex=TTL_SECONDS)

    async def get(self, account_id: str) -> tuple[int, Credentials] | None:
        raw = await self._redis.get(redis_keys.pending_credential(account_id))
        if raw is None:
            return None
        record: dict[str, Any] = json.loads(raw)
        blob = {
            "v": 1,
            "kid": record["kid"],
            "n": base64.b64decode(record["n"]),
            "ct": base64.b64decode(record["ct"]),
        }
        plain = self._keyring.decrypt_json(blob, _aad(account_id))
        creds = Credentials(
            values=plain["values"],
            expires_at=_parse(plain["expires_at"]),
            scopes=tuple(plain["scopes"]),
            metadata=plain["metadata"],
            refresh_at=_parse(plain["refresh_at"]),
        )
        return int(record["base_version"]), creds

    async def drop(self, account_id: str) -> None:
        await self._redis.delete(redis_keys.pending_credential(account_id))
