"""Benchmark 3, schedule scale: a million entries in a private Redis through RefreshSchedule's own keys
(pipelined ZADD in batches), spread over the next hour plus some due now; Redis memory per entry; the
latency of claim_due(now, 50, lease) while due entries exist; ZCARD and sizes()."""

from __future__ import annotations

import random
import time
from typing import Any

import redis.asyncio as redis

from service import redis_keys
from service.ids import new_id
from service.refresh.schedule import RefreshSchedule
from service.store.accounts import ACCOUNT_PREFIX
from tests.bench.common import percentile, say, step, table
from tests.support.servers import PrivateRedis

BATCH = 1000  # members per ZADD
PIPELINE = 10  # ZADDs per round trip


async def run(opts: Any) -> dict[str, Any]:
    server = PrivateRedis()
    await step("private redis", server.start(), 30)
    client = redis.Redis.from_url(server.url, socket_timeout=60)
    try:
        return await step("schedule benchmark", _run(client, opts), 1800)
    finally:
        await client.aclose()
        await server.stop()
        server.cleanup()


async def _used_memory(client: redis.Redis) -> int:
    info = await client.info("memory")
    return int(info["used_memory"])


async def _run(client: redis.Redis, opts: Any) -> dict[str, Any]:
    entries, claims, batch = opts.schedule_entries, opts.claims, opts.claim_batch
    due_now = min(entries, max(opts.due_now, claims * batch + batch))
    schedule = RefreshSchedule(client, opts.shards)
    lease = 60.0
    await client.flushdb()
    base_memory = await _used_memory(client)
    now = time.time()
    rng = random.Random(7)
    say(f"schedule: loading {entries:,} entries ({due_now:,} due now) in {opts.shards} shard(s)")
    started = time.perf_counter()
    loaded = 0
    pending: dict[str, list[Any]] = {}
    async with client.pipeline(transaction=False) as pipe:
        queued = 0
        for i in range(entries):
            account_id = new_id(ACCOUNT_PREFIX)
            # the first `due_now` entries fell due within the last minute; the rest spread over the hour
            due = now - rng.uniform(0, 60) if i < due_now else now + rng.uniform(1, 3600)
            key = redis_keys.refresh_due(schedule.shard_of(account_id))
            members = pending.setdefault(key, [])
            members.extend((due, account_id))
            if len(members) >= 2 * BATCH:
                pipe.zadd(key, dict(zip(members[1::2], members[0::2], strict=True)))
                pending[key] = []
                queued += 1
                if queued >= PIPELINE:
                    loaded += sum(await pipe.execute())
                    queued = 0
        for key, members in pending.items():
            if members:
                pipe.zadd(key, dict(zip(members[1::2], members[0::2], strict=True)))
        loaded += sum(await pipe.execute())
    load_seconds = time.perf_counter() - started
    memory = await _used_memory(client)

    say(f"schedule: {claims} x claim_due(now, {batch}, {lease:.0f}s lease)")
    latencies = []
    claimed = 0
    for _ in range(claims):
        t0 = time.perf_counter()
        got = await schedule.claim_due(time.time(), batch, lease)
        latencies.append((time.perf_counter() - t0) * 1000)
        claimed += len(got)
    latencies.sort()

    empty = []  # a claim when nothing is due (the idle worker's poll)
    far_past = time.time() - 3600 * 24
    for _ in range(200):
        t0 = time.perf_counter()
        await schedule.claim_due(far_past, batch, lease)
        empty.append((time.perf_counter() - t0) * 1000)
    empty.sort()

    def timed(n: int) -> Any:
        async def go(fn: Any) -> list[float]:
            out = []
            for _ in range(n):
                t0 = time.perf_counter()
                await fn()
                out.append((time.perf_counter() - t0) * 1000)
            return sorted(out)

        return go

    zcard = await timed(200)(lambda: client.zcard(redis_keys.refresh_due(0)))
    sizes = await timed(200)(lambda: schedule.sizes(time.time()))
    ids = [new_id(ACCOUNT_PREFIX) for _ in range(1000)]
    reschedule = []
    for account_id in ids:
        t0 = time.perf_counter()
        await schedule.schedule(account_id, time.time() + rng.uniform(1, 3600))
        reschedule.append((time.perf_counter() - t0) * 1000)
    reschedule.sort()
    total, leased, overdue = await schedule.sizes(time.time())

    def lat(values: list[float]) -> dict[str, float]:
        return {
            "p50_ms": round(percentile(values, 50), 3),
            "p99_ms": round(percentile(values, 99), 3),
            "max_ms": round(values[-1], 3),
        }

    return {
        "entries": loaded,
        "due_now": due_now,
        "shards": opts.shards,
        "load_seconds": round(load_seconds, 2),
        "load_per_second": round(loaded / load_seconds, 0),
        "redis_used_memory_mib": round(memory / 2**20, 1),
        "memory_bytes_per_entry": round((memory - base_memory) / max(loaded, 1), 1),
        "claim": {"calls": claims, "batch": batch, "claimed": claimed, **lat(latencies)},
        "claim_nothing_due": {"calls": len(empty), **lat(empty)},
        "zcard": lat(zcard),
        "sizes": lat(sizes),
        "schedule_one": lat(reschedule),
        "after": {"scheduled": total, "leased": leased, "overdue": overdue},
    }


def render(result: dict[str, Any]) -> str:
    c = result["claim"]
    return table(
        f"schedule scale: {result['entries']:,} entries, {result['shards']} shard(s), private redis-server",
        [
            ("load time (s)", result["load_seconds"]),
            ("load rate (entries/s)", result["load_per_second"]),
            ("Redis used_memory (MiB)", result["redis_used_memory_mib"]),
            ("memory per entry (bytes)", result["memory_bytes_per_entry"]),
            (f"claim_due(now, {c['batch']}) p50 (ms)", c["p50_ms"]),
            (f"claim_due(now, {c['batch']}) p99 (ms)", c["p99_ms"]),
            (f"claim_due(now, {c['batch']}) max (ms)", c["max_ms"]),
            ("entries claimed", f"{c['claimed']:,} in {c['calls']:,} calls"),
            (
                "claim_due, nothing due p50/p99 (ms)",
                f"{result['claim_nothing_due']['p50_ms']} / {result['claim_nothing_due']['p99_ms']}",
            ),
            ("ZCARD p50/p99 (ms)", f"{result['zcard']['p50_ms']} / {result['zcard']['p99_ms']}"),
            ("sizes() p50/p99 (ms)", f"{result['sizes']['p50_ms']} / {result['sizes']['p99_ms']}"),
            (
                "schedule() one entry p50/p99 (ms)",
                f"{result['schedule_one']['p50_ms']} / {result['schedule_one']['p99_ms']}",
            ),
        ],
    )
