"""The refresh schedule: Redis sorted sets of account id -> due time, split into N shards.

Each shard has a `due` set (score: when to refresh) and a `leased` set (score: when the claim expires).
Claiming is one Lua script per shard: expired leases come back first, then due members move to `leased`.
A worker that dies loses nothing; its leases expire and are claimed again. Shard keys share a Redis
Cluster hash tag, so each shard's keys and its script live on one node."""

from __future__ import annotations

import random
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as redis

from service import redis_keys

# KEYS[1]=due KEYS[2]=leased ARGV[1]=now ARGV[2]=batch ARGV[3]=lease_until
# Returns a flat list: member, due score, member, due score, ...
_CLAIM = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(expired) do
  redis.call('ZREM', KEYS[2], member)
  redis.call('ZADD', KEYS[1], 'NX', ARGV[1], member)
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for i = 1, #due, 2 do
  redis.call('ZREM', KEYS[1], due[i])
  redis.call('ZADD', KEYS[2], ARGV[3], due[i])
  out[#out + 1] = due[i]
  out[#out + 1] = due[i + 1]
end
return out
"""

# KEYS[1]=due KEYS[2]=leased ARGV[1]=member ARGV[2]=next due ('' = unschedule)
_COMPLETE = """
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[2] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
end
return 1
"""


@dataclass(frozen=True)
class Claim:
    account_id: str
    due: float
    shard: int


class RefreshSchedule:
    def __init__(self, client: redis.Redis, shards: int = 1) -> None:
        self._redis = client
        self.shards = shards
        self._claim = client.register_script(_CLAIM)
        self._complete = client.register_script(_COMPLETE)

    def shard_of(self, account_id: str) -> int:
        return zlib.crc32(account_id.encode()) % self.shards

    def _keys(self, shard: int) -> list[str]:
        return [redis_keys.refresh_due(shard), redis_keys.refresh_leased(shard)]

    async def schedule(self, account_id: str, due: float) -> None:
        """Sets (or moves) the account's due time; a lease it may have is dropped (the write won)."""
        await self._complete(keys=self._keys(self.shard_of(account_id)), args=[account_id, repr(due)])

    async def unschedule(self, account_id: str) -> None:
        await self._complete(keys=self._keys(self.shard_of(account_id)), args=[account_id, ""])

    async def claim_due(self, now: float, batch: int, lease_seconds: float) -> list[Claim]:
        """Claims up to `batch` due accounts across shards, starting at a random shard so every shard
        gets its turn whatever the batch size."""
        claims: list[Claim] = []
        start = random.randrange(self.shards)
        for offset in range(self.shards):
            if len(claims) >= batch:
                break
            shard = (start + offset) % self.shards
            raw: Sequence[bytes] = await self._claim(
                keys=self._keys(shard), args=[repr(now), batch - len(claims), repr(now + lease_seconds)]
            )
            for i in range(0, len(raw), 2):
                claims.append(Claim(raw[i].decode(), float(raw[i + 1]), shard))
        return claims

    async def release(self, account_id: str, due: float) -> None:
        """Gives a claim back (shutdown): due again at `due`."""
        await self.schedule(account_id, due)

    async def is_scheduled(self, account_ids: Sequence[str]) -> list[bool]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for account_id in account_ids:
                due, leased = self._keys(self.shard_of(account_id))
                pipe.zscore(due, account_id)
                pipe.zscore(leased, account_id)
            scores = await pipe.execute()
        return [scores[i] is not None or scores[i + 1] is not None for i in range(0, len(scores), 2)]

    async def due_time(self, account_id: str) -> float | None:
        due, _ = self._keys(self.shard_of(account_id))
        score = await self._redis.zscore(due, account_id)
        return None if score is None else float(score)

    async def sizes(self, now: float) -> tuple[int, int, int]:
        """(scheduled, leased, due but not yet claimed) across shards."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for shard in range(self.shards):
                due, leased = self._keys(shard)
                pipe.zcard(due)
                pipe.zcard(leased)
                pipe.zcount(due, "-inf", now)
            values = await pipe.execute()
        scheduled = sum(values[0::3])
        leased_n = sum(values[1::3])
        overdue = sum(values[2::3])
        return scheduled + leased_n, leased_n, overdue
