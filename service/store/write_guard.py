"""Serialises the writes to one account document where the database does not.

The broker's compare-and-swap writes (a credential only if `version` is still the one read) and the outbox
relay's `$pullAll` rely on MongoDB applying each single-document update atomically. FerretDB 1.x does not:
it reads the document, applies the update in Go and writes the whole document back, with nothing between
the two to stop another connection. Two concurrent writers of one account both "win" the compare-and-swap,
and the later write-back silently undoes the other. Measured on the local FerretDB 1.24: of 100 relay
`$pullAll`s racing a credential write, 17 reverted the new credential and dropped its event; of 200 concurrent
`$inc`s on one document, 17 were applied.

So where the server is FerretDB (its `buildInfo` says so; BROKER_ACCOUNT_WRITE_LOCK=auto), or when
BROKER_ACCOUNT_WRITE_LOCK=on, every write to an account document holds a short per-account Redis lock
(owner token, SET NX PX). On MongoDB the guard does nothing. What stays open on FerretDB: a write that
outlives its client timeout may still land after the lock is released, so it takes a server stuck for
longer than that timeout to race again."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pymongo.errors
import redis.asyncio as redis
from pymongo.asynchronous.database import AsyncDatabase

from service import redis_keys
from service.config import ACCOUNT_WRITE_LOCK_MODES, Settings
from service.refresh.locks import OwnedLock


class AccountWriteBusy(pymongo.errors.ExecutionTimeout):
    """Another writer held the account's write lock for the whole wait: handled like a database timeout
    (a 503 for the API, a retry for the refresher)."""

    def __init__(self, account_id: str) -> None:
        super().__init__(f"account {account_id} is being written by another process", code=50)


async def is_ferretdb(db: AsyncDatabase[Any]) -> bool:
    info = await db.client.admin.command("buildInfo")
    return "ferretdbVersion" in info


class AccountWriteGuard:
    def __init__(
        self,
        client: redis.Redis | None,
        mode: str = "off",
        *,
        detect: Callable[[], Awaitable[bool]] | None = None,
        ttl_seconds: float = 30.0,
        wait_seconds: float = 5.0,
    ) -> None:
        assert mode in ACCOUNT_WRITE_LOCK_MODES, mode
        assert mode == "off" or client is not None, "a write lock needs Redis"
        self._redis = client
        self._needed: bool | None = {"on": True, "off": False}.get(mode)
        self._detect = detect
        self.ttl_seconds = ttl_seconds
        self.wait_seconds = wait_seconds

    async def needed(self) -> bool:
        if self._needed is None:
            self._needed = await self._detect() if self._detect is not None else True
        return self._needed

    @contextlib.asynccontextmanager
    async def hold(self, account_id: str) -> AsyncIterator[None]:
        if not await self.needed():
            yield
            return
        assert self._redis is not None
        lock = OwnedLock(self._redis, redis_keys.account_write_lock(account_id), self.ttl_seconds)
        if not await lock.acquire_within(self.wait_seconds):
            raise AccountWriteBusy(account_id)
        try:
            yield
        finally:
            with contextlib.suppress(redis.RedisError, OSError):
                await lock.release()  # if this fails the lock expires by itself


NO_GUARD = AccountWriteGuard(None, "off")


def guard_for(settings: Settings, client: redis.Redis, db: AsyncDatabase[Any]) -> AccountWriteGuard:
    op_seconds = 2 * settings.dependency_timeout  # the MongoDB client's budget for one operation
    return AccountWriteGuard(
        client,
        settings.account_write_lock,
        detect=lambda: is_ferretdb(db),
        ttl_seconds=max(30.0, 5 * op_seconds),  # outlives any write of the holder's
        wait_seconds=op_seconds + 1,  # outlasts one write of another holder's
    )
