"""The refresh worker's bound adapts to the database: halved (at most once a second) by refreshes that time
out, raised again by refreshes that succeed, never above BROKER_REFRESH_CONCURRENCY nor below one."""

from __future__ import annotations

import time
from typing import Any

import pymongo.errors
import pytest

from service.config import Settings
from service.refresh import worker as worker_module
from service.refresh.refresher import Outcome, RefreshResult
from service.refresh.schedule import Claim
from service.refresh.worker import RefreshWorker


class Schedule:
    def __init__(self) -> None:
        self.rescheduled: list[str] = []

    async def schedule(self, account_id: str, at: float) -> None:
        self.rescheduled.append(account_id)


class Refresher:
    def __init__(self) -> None:
        self.error: Exception | None = None

    async def refresh(self, account_id: str) -> RefreshResult:
        if self.error is not None:
            raise self.error
        return RefreshResult(Outcome.REFRESHED)


def worker(concurrency: int = 16) -> tuple[RefreshWorker, Refresher, Schedule]:
    refresher, schedule = Refresher(), Schedule()
    settings = Settings(refresh_concurrency=concurrency)
    return RefreshWorker(settings, schedule, refresher), refresher, schedule  # type: ignore[arg-type]


def claim(n: int) -> Claim:
    return Claim(f"apn_{n}", time.time(), 0)


async def test_timeouts_halve_the_bound_once_a_second_and_successes_restore_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(worker_module, "clock", lambda: clock[0])
    w, refresher, schedule = worker(16)
    refresher.error = pymongo.errors.NetworkTimeout("timed out")
    for n in range(10):  # a burst of timeouts within one second counts once
        await w._handle(claim(n))
    assert w._limit == 8
    assert len(schedule.rescheduled) == 10
    for step in range(1, 6):
        clock[0] += 1.1
        await w._handle(claim(100 + step))
    assert w._limit == 1  # never below one

    refresher.error = None
    for n in range(200):
        await w._handle(claim(n))
    assert w._limit == 16  # back to the setting, not above it


async def test_other_failures_leave_the_bound_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    w, refresher, _ = worker(16)
    refresher.error = ValueError("a bug, not a slow database")
    await w._handle(claim(1))
    assert w._limit == 16


async def test_claims_never_exceed_the_current_bound() -> None:
    w, _, _ = worker(16)
    w._limit = 3.7
    claimed: list[int] = []

    class Claims:
        async def claim_due(self, now: float, limit: int, lease: float) -> list[Any]:
            claimed.append(limit)
            return []

        async def sizes(self, now: float) -> tuple[int, int, int]:
            return 0, 0, 0

    w._schedule = Claims()  # type: ignore[assignment]
    await w._claim_once()
    assert claimed == [3]
