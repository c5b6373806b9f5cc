"""The refresh worker: claims due accounts in batches and refreshes them, a bounded number at a time.
Stopping stops claiming, lets in-flight refreshes finish for a grace period, and gives back the rest.

The bound adapts to the database (additive increase, multiplicative decrease): a refresh that fails on a
database or Redis timeout halves it (at most once a second), each successful one raises it by about one per
round of refreshes, up to BROKER_REFRESH_CONCURRENCY. Without this, an overloaded database gets the same
number of refreshes at once, each of whose operations times out and is retried while the abandoned one
still runs on the server: measured here, 1,000 refreshes due at once against FerretDB gave ~2,000 timed-out
writes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

import pymongo.errors
import redis.exceptions

from service.config import Settings
from service.metrics import (
    REFRESH_CONCURRENCY,
    SCHEDULE_LEASED,
    SCHEDULE_OVERDUE,
    SCHEDULE_SIZE,
    SCHEDULING_LAG,
)
from service.refresh.policy import backoff_seconds
from service.refresh.refresher import Outcome, Refresher
from service.refresh.schedule import Claim, RefreshSchedule

log = logging.getLogger("broker.worker")
GRACE_SECONDS = 10.0
LOCKED_RETRY_SECONDS = 1.0
GAUGE_INTERVAL = 5.0
DECREASE_INTERVAL = 1.0
clock = time.monotonic  # a module attribute, so tests can move time for the backoff alone
# a dependency that answered too slowly: fewer refreshes at once will help it
OVERLOAD_ERRORS = (
    pymongo.errors.NetworkTimeout,
    pymongo.errors.ExecutionTimeout,
    pymongo.errors.WTimeoutError,
    redis.exceptions.TimeoutError,
)


class RefreshWorker:
    def __init__(self, settings: Settings, schedule: RefreshSchedule, refresher: Refresher) -> None:
        self._settings = settings
        self._schedule = schedule
        self._refresher = refresher
        self._in_flight: dict[asyncio.Task[None], Claim] = {}
        self._last_gauges = 0.0
        self._crashes: dict[str, int] = {}  # consecutive failed attempts by exception, for backoff
        self._last_decrease = 0.0
        self._set_limit(settings.refresh_concurrency)  # refreshes at once, adapted to the database

    async def run(self, stop: asyncio.Event) -> None:
        log.info("refresh worker started", extra={"concurrency": self._settings.refresh_concurrency})
        try:
            while not stop.is_set():
                try:
                    claimed = await self._claim_once()
                except Exception as exc:  # Redis down: keep trying, never crash the loop
                    log.warning("claiming failed", extra={"error": type(exc).__name__})
                    claimed = 0
                    await _sleep_or_stop(stop, 1.0)
                if claimed == 0:
                    await _sleep_or_stop(
                        stop, self._settings.refresh_poll_interval * random.uniform(0.8, 1.2)
                    )
        finally:
            await self._drain()

    async def _claim_once(self) -> int:
        free = int(self._limit) - len(self._in_flight)
        if free <= 0:
            await asyncio.wait(list(self._in_flight), return_when=asyncio.FIRST_COMPLETED)
            return 1
        now = time.time()
        claims = await self._schedule.claim_due(
            now, min(free, self._settings.refresh_batch), self._settings.refresh_lease_seconds
        )
        for claim in claims:
            SCHEDULING_LAG.observe(max(0.0, now - claim.due))
            task = asyncio.create_task(self._handle(claim))
            self._in_flight[task] = claim
            task.add_done_callback(lambda t: self._in_flight.pop(t, None))
        if now - self._last_gauges > GAUGE_INTERVAL:
            self._last_gauges = now
            size, leased, overdue = await self._schedule.sizes(now)
            SCHEDULE_SIZE.set(size)
            SCHEDULE_LEASED.set(leased)
            SCHEDULE_OVERDUE.set(overdue)
        return len(claims)

    async def _handle(self, claim: Claim) -> None:
        try:
            result = await self._refresher.refresh(claim.account_id)
            self._crashes.pop(claim.account_id, None)
            self._set_limit(min(self._settings.refresh_concurrency, self._limit + 1 / self._limit))
            if result.outcome == Outcome.LOCKED:
                # a credential read is refreshing it right now; look again shortly
                await self._schedule.schedule(claim.account_id, time.time() + LOCKED_RETRY_SECONDS)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # a dependency failed mid-refresh (or a bug): try again later; the lease is the backstop
            log.warning("refresh failed", extra={"account_id": claim.account_id, "error": type(exc).__name__})
            if isinstance(exc, OVERLOAD_ERRORS):
                self._back_off()
            attempt = self._crashes[claim.account_id] = self._crashes.get(claim.account_id, 0) + 1
            if len(self._crashes) > 100_000:
                self._crashes.clear()
            delay = backoff_seconds(
                attempt, base=self._settings.refresh_retry_base * 2, cap=self._settings.refresh_retry_max
            )
            try:
                await self._schedule.schedule(claim.account_id, time.time() + delay)
            except Exception:  # Redis is down as well: the lease expires and the claim comes back
                log.warning("could not reschedule", extra={"account_id": claim.account_id})

    def _set_limit(self, limit: float) -> None:
        self._limit = float(limit)
        REFRESH_CONCURRENCY.set(int(self._limit))

    def _back_off(self) -> None:
        now = clock()
        if now - self._last_decrease >= DECREASE_INTERVAL:
            self._last_decrease = now
            self._set_limit(max(1.0, self._limit / 2))
            log.info("refresh concurrency lowered", extra={"limit": int(self._limit)})

    async def _drain(self) -> None:
        if not self._in_flight:
            return
        log.info("waiting for in-flight refreshes", extra={"count": len(self._in_flight)})
        _, pending = await asyncio.wait(list(self._in_flight), timeout=GRACE_SECONDS)
        for task in pending:
            claim = self._in_flight.get(task)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            if claim is not None:
                with contextlib.suppress(Exception):
                    await self._schedule.release(claim.account_id, time.time())


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
