"""The Redis schedule: atomic claims with leases, expired leases come back, shards share the work."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest_asyncio
import redis.asyncio as redis

from service import redis_keys
from service.config import Settings
from service.connections import open_redis
from service.refresh.schedule import RefreshSchedule


@pytest_asyncio.fixture
async def client(settings: Settings) -> AsyncIterator[redis.Redis]:
    connection = open_redis(settings)
    try:
        yield connection
    finally:
        await connection.aclose()


async def _cleanup(client: redis.Redis, shards: int) -> None:
    for shard in range(shards):
        await client.delete(redis_keys.refresh_due(shard), redis_keys.refresh_leased(shard))


async def test_claims_are_exclusive_and_expired_leases_come_back(client: redis.Redis) -> None:
    await _cleanup(client, 1)
    schedule = RefreshSchedule(client, 1)
    now = time.time()
    ids = [f"apn_{uuid.uuid4().hex}" for _ in range(10)]
    for i, account_id in enumerate(ids):
        await schedule.schedule(account_id, now - 10 + i)
    await schedule.schedule("apn_future", now + 3600)
    first = await schedule.claim_due(now, 6, lease_seconds=30)
    second = await schedule.claim_due(now, 6, lease_seconds=30)
    assert [c.account_id for c in first] == ids[:6]  # oldest due first
    assert [c.account_id for c in second] == ids[6:]
    assert await schedule.claim_due(now, 6, lease_seconds=30) == []
    # a worker died: 30 s later its leases are claimable again
    again = await schedule.claim_due(now + 31, 20, lease_seconds=30)
    assert sorted(c.account_id for c in again) == sorted(ids)
    size, leased, overdue = await schedule.sizes(now + 31)
    assert (size, leased, overdue) == (11, 10, 0)
    await _cleanup(client, 1)


async def test_completing_a_claim_reschedules_it_and_drops_the_lease(client: redis.Redis) -> None:
    await _cleanup(client, 1)
    schedule = RefreshSchedule(client, 1)
    now = time.time()
    await schedule.schedule("apn_a", now - 1)
    [claim] = await schedule.claim_due(now, 10, lease_seconds=30)
    await schedule.schedule(claim.account_id, now + 100)
    assert await schedule.claim_due(now + 31, 10, lease_seconds=30) == []  # no stale lease left behind
    assert await schedule.due_time("apn_a") == now + 100
    await schedule.unschedule("apn_a")
    assert await schedule.is_scheduled(["apn_a"]) == [False]


async def test_shards_split_accounts_and_claims_visit_every_shard(client: redis.Redis) -> None:
    await _cleanup(client, 4)
    schedule = RefreshSchedule(client, 4)
    now = time.time()
    ids = [f"apn_{i:04d}" for i in range(200)]
    for account_id in ids:
        await schedule.schedule(account_id, now - 1)
    per_shard = [await client.zcard(redis_keys.refresh_due(s)) for s in range(4)]
    assert all(count > 20 for count in per_shard), per_shard
    claimed: set[str] = set()
    for _ in range(20):
        claimed |= {c.account_id for c in await schedule.claim_due(now, 50, lease_seconds=30)}
    assert claimed == set(ids)
    assert {redis_keys.refresh_due(1).split("{")[1].split("}")[0]} == {"r1"}  # cluster hash tag per shard
    await _cleanup(client, 4)
