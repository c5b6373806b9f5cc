"""Rebuilds the refresh schedule from MongoDB: every account that should be scheduled and is not goes
back in, so a Redis flush or failover loses no refresh. One instance at a time (a singleton lock)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import redis.asyncio as redis

from service import redis_keys
from service.metrics import RECONCILED
from service.refresh.locks import OwnedLock
from service.refresh.schedule import RefreshSchedule
from service.store.accounts import AccountStore

log = logging.getLogger("broker.reconciler")
PAGE = 500


async def reconcile(accounts: AccountStore, schedule: RefreshSchedule) -> int:
    added = 0
    after: str | None = None
    while True:
        rows = await accounts.refreshable_ids(after, PAGE)
        if not rows:
            return added
        present = await schedule.is_scheduled([account_id for account_id, _ in rows])
        for (account_id, due), scheduled in zip(rows, present, strict=True):
            if not scheduled and due is not None:
                await schedule.schedule(account_id, due.timestamp())
                added += 1
        after = rows[-1][0]
        RECONCILED.inc(sum(1 for p in present if not p))


async def run_reconciler(
    client: redis.Redis,
    accounts: AccountStore,
    schedule: RefreshSchedule,
    interval: float,
    stop: asyncio.Event,
) -> None:
    while not stop.is_set():
        lock = OwnedLock(client, redis_keys.singleton_lock("reconciler"), max(interval * 0.9, 1.0))
        try:
            if await lock.acquire():  # left to expire: at most one run per interval across instances
                added = await reconcile(accounts, schedule)
                if added:
                    log.warning("reconciler restored schedule entries", extra={"added": added})
        except Exception as exc:
            log.warning("reconcile failed", extra={"error": type(exc).__name__})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
