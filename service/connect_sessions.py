"""Short-lived, single-use browser-flow state in Redis: connect tokens and OAuth transactions.

Both are stored under a hash of their secret (a Redis dump never reveals a usable token), with a TTL,
and consumed with GETDEL so each works exactly once."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import redis.asyncio as redis

from service import redis_keys


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class ConnectToken:
    """What an internal service allowed a browser to do: connect (or reconnect) one account."""

    workspace_id: str
    owner_id: str
    success_redirect_uri: str
    error_redirect_uri: str
    expires_at: float
    provider: str | None = None
    external_user_id: str | None = None
    account_id: str | None = None  # set for a reconnect: the flow re-authorizes this account
    connection_settings: dict[str, str] = field(default_factory=dict)
    popup: bool = False


@dataclass(frozen=True)
class OAuthTransaction:
    """One authorization request in flight, from the redirect to the provider until its callback."""

    provider: str
    connect: ConnectToken
    code_verifier: str | None
    redirect_uri: str
    connection_settings: dict[str, str]
    issuer: str | None
    require_iss: bool
    created_at: float


class ConnectSessions:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    async def issue_connect_token(self, token: ConnectToken) -> str:
        secret = "ctok_" + secrets.token_urlsafe(32)
        ttl = max(1, int(token.expires_at - time.time()))
        await self._redis.set(redis_keys.connect_token(_hash(secret)), json.dumps(asdict(token)), ex=ttl)
        return secret

    async def peek_connect_token(self, secret: str) -> ConnectToken | None:
        """Reads without consuming (a key-based form is shown before it is submitted)."""
        raw = await self._redis.get(redis_keys.connect_token(_hash(secret)))
        return None if raw is None else _connect_token(raw)

    async def take_connect_token(self, secret: str) -> ConnectToken | None:
        raw = await self._redis.getdel(redis_keys.connect_token(_hash(secret)))
        return None if raw is None else _connect_token(raw)

    async def begin_transaction(self, state: str, tx: OAuthTransaction, ttl: int) -> None:
        await self._redis.set(redis_keys.oauth_transaction(_hash(state)), json.dumps(asdict(tx)), ex=ttl)

    async def take_transaction(self, state: str) -> OAuthTransaction | None:
        raw = await self._redis.getdel(redis_keys.oauth_transaction(_hash(state)))
        if raw is None:
            return None
        data: dict[str, Any] = json.loads(raw)
        data["connect"] = ConnectToken(**data["connect"])
        return OAuthTransaction(**data)


def _connect_token(raw: bytes | str) -> ConnectToken | None:
    token = ConnectToken(**json.loads(raw))
    return token if token.expires_at > time.time() else None
