"""Locks with an owner token: taken with SET NX PX, released or extended only by their owner (a Lua
compare-and-delete), so a lock that expired and was taken by another process is never released by
the first one."""

from __future__ import annotations

import asyncio
import random
import secrets
import time

import redis.asyncio as redis

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class OwnedLock:
    def __init__(self, client: redis.Redis, key: str, ttl_seconds: float) -> None:
        self._redis = client
        self.key = key
        self.ttl_ms = int(ttl_seconds * 1000)
        self.token = secrets.token_hex(16)
        self._release = client.register_script(_RELEASE)
        self._extend = client.register_script(_EXTEND)

    async def acquire(self) -> bool:
        return bool(await self._redis.set(self.key, self.token, nx=True, px=self.ttl_ms))

    async def acquire_within(self, seconds: float) -> bool:
        """Tries again (jittered backoff, 2 ms growing to 50 ms) until the lock is free or `seconds` pass."""
        deadline = time.monotonic() + seconds
        delay = 0.002
        while not await self.acquire():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.05)
        return True

    async def release(self) -> bool:
        return bool(await self._release(keys=[self.key], args=[self.token]))

    async def extend(self) -> bool:
        return bool(await self._extend(keys=[self.key], args=[self.token, self.ttl_ms]))

    async def held_by_anyone(self) -> bool:
        return bool(await self._redis.exists(self.key))
