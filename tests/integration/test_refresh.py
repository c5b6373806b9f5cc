"""The refresh engine against the real Redis and FerretDB and the fake provider: tokens stay fresh,
each generation is refreshed exactly once whatever the number of workers and readers, rotation never
trips reuse detection, and failures are retried or end in reauthorization."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from service.components import COMPONENTS
from service.config import Settings
from service.connections import CONNECTIONS
from tests.fakes.oauth_provider import TokenFailure
from tests.support.harness import BrokerHarness
from tests.support.workers import WorkerProcess

FAST = {
    "refresh_poll_interval": 0.05,
    "refresh_retry_base": 0.3,
    "refresh_retry_max": 2.0,
    "reconcile_interval": 1.0,
    "outbox_poll_interval": 0.1,
}


def fast(settings: Settings, **overrides: object) -> Settings:
    return dataclasses.replace(settings, **{**FAST, **overrides})  # type: ignore[arg-type]


@pytest_asyncio.fixture
async def refreshing(settings: Settings, tmp_path: Path) -> AsyncIterator[BrokerHarness]:
    """A broker with the refresh worker inside, and a provider issuing 3-second tokens."""
    harness = BrokerHarness(fast(settings, run_worker=True), tmp_path, access_token_ttl=3)
    await harness.start()
    try:
        yield harness
    finally:
        await harness.stop()


async def stored_token(harness: BrokerHarness, account_id: str) -> tuple[str, int, str]:
    """(access token, version, status) straight from the store, without triggering a refresh."""
    parts = harness.app[COMPONENTS]
    account = await parts.accounts.get_by_id(account_id)
    assert account is not None
    return parts.accounts.decrypt(account)["oauth_access_token"], account.version, account.status


async def test_short_lived_tokens_are_refreshed_before_they_expire_over_generations(
    refreshing: BrokerHarness,
) -> None:
    landed = await refreshing.connect("fake")
    account_id = landed["account_id"][0]
    seen: list[str] = []
    deadline = time.monotonic() + 9
    while time.monotonic() < deadline:
        token, _, status = await stored_token(refreshing, account_id)
        assert status == "active"
        assert refreshing.fake.is_access_token_valid(token), "the stored token expired before its refresh"
        if not seen or seen[-1] != token:
            seen.append(token)
        await asyncio.sleep(0.1)
    generations = len(seen) - 1
    assert generations >= 3
    refreshes = [c for c in refreshing.fake.refresh_calls if c.outcome == "ok"]
    assert len(refreshes) in (generations, generations + 1)  # one may land right after the last look
    assert refreshing.fake.reuse_detected == 0


async def test_three_workers_and_fifty_concurrent_reads_refresh_once_per_generation(
    settings: Settings, tmp_path: Path
) -> None:
    broker = BrokerHarness(fast(settings, run_worker=False), tmp_path, access_token_ttl=4)
    await broker.start()
    workers = [
        await WorkerProcess(fast(broker.settings, run_worker=True), tmp_path / f"worker{i}.log").start()
        for i in range(3)
    ]
    try:
        landed = await broker.connect("fake")
        account_id = landed["account_id"][0]
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline:
            bodies = await asyncio.gather(
                *(
                    broker.api("GET", f"/v1/accounts/{account_id}?include_credentials=1", expect=200)
                    for _ in range(50)
                )
            )
            for body in bodies:
                assert broker.fake.is_access_token_valid(body["data"]["credentials"]["oauth_access_token"])
            await asyncio.sleep(0.4)
        calls = broker.fake.refresh_calls
        presented = [c.refresh_token for c in calls]
        assert len(calls) >= 3, "expected several generations in 12 s of 4-second tokens"
        assert len(presented) == len(set(presented)), "a refresh token was presented twice"
        assert all(c.outcome == "ok" for c in calls), [c.outcome for c in calls]
        assert broker.fake.reuse_detected == 0
        _, version, status = await stored_token(broker, account_id)
        assert status == "active"
        assert version == 1 + len(calls)  # exactly one write per refresh
    finally:
        for worker in workers:
            await worker.stop()
        await broker.stop()


async def test_a_worker_killed_mid_refresh_loses_nothing_and_does_nothing_twice(
    settings: Settings, tmp_path: Path
) -> None:
    quick = fast(
        settings,
        run_worker=False,
        http_client_timeout=2.0,
        refresh_lock_seconds=2.5,
        refresh_lease_seconds=2.0,
    )
    broker = BrokerHarness(quick, tmp_path, access_token_ttl=6)
    await broker.start()
    broker.fake.timeout_delay = 4.0
    first = second = None
    try:
        landed = await broker.connect("fake")
        account_id = landed["account_id"][0]
        broker.fake.fail_next_token(TokenFailure.TIMEOUT)  # the provider hangs on the next refresh
        first = await WorkerProcess(fast(broker.settings, run_worker=True), tmp_path / "first.log").start()
        for _ in range(600):
            if broker.fake.refresh_calls:
                break
            await asyncio.sleep(0.05)
        assert broker.fake.refresh_calls, "the worker never started the refresh"
        first.kill()  # mid-refresh: waiting for the token endpoint, holding the lease and the lock
        second = await WorkerProcess(fast(broker.settings, run_worker=True), tmp_path / "second.log").start()
        for _ in range(600):  # a new process on a busy machine takes a while to start
            token, version, status = await stored_token(broker, account_id)
            if version >= 2:  # the second worker's refresh is stored
                break
            await asyncio.sleep(0.05)
        ok = [c for c in broker.fake.refresh_calls if c.outcome == "ok"]
        assert len(ok) == 1
        assert status == "active"
        assert version == 2
        assert broker.fake.is_access_token_valid(token)
        assert broker.fake.reuse_detected == 0
    finally:
        for worker in (first, second):
            if worker is not None:
                await worker.stop()
        await broker.stop()


async def test_the_reconciler_restores_the_schedule_after_redis_is_flushed(refreshing: BrokerHarness) -> None:
    landed = await refreshing.connect("fake")
    account_id = landed["account_id"][0]
    parts = refreshing.app[COMPONENTS]
    assert await parts.schedule.is_scheduled([account_id]) == [True]
    await refreshing.app[CONNECTIONS].redis.flushdb()
    assert await parts.schedule.is_scheduled([account_id]) == [False]
    before = len(refreshing.fake.refresh_calls)
    for _ in range(100):
        if len(refreshing.fake.refresh_calls) >= before + 2:
            break
        await asyncio.sleep(0.1)
    assert len(refreshing.fake.refresh_calls) >= before + 2, "refreshes did not continue after the flush"
    token, _, status = await stored_token(refreshing, account_id)
    assert status == "active"
    assert refreshing.fake.is_access_token_valid(token)


async def test_invalid_grant_marks_reauthorization_required_and_stops_scheduling(
    refreshing: BrokerHarness,
) -> None:
    landed = await refreshing.connect("fake")
    account_id = landed["account_id"][0]
    refreshing.fake.fail_next_token(TokenFailure.INVALID_GRANT)
    for _ in range(80):
        _, _, status = await stored_token(refreshing, account_id)
        if status == "reauthorization_required":
            break
        await asyncio.sleep(0.1)
    assert status == "reauthorization_required"
    parts = refreshing.app[COMPONENTS]
    assert await parts.schedule.is_scheduled([account_id]) == [False]
    body = await refreshing.api("GET", f"/v1/accounts/{account_id}", expect=200)
    assert body["data"]["last_error"]["code"] == "invalid_grant"
    assert body["data"]["healthy"] is False
    await asyncio.sleep(3.5)  # the token has now expired: a read must not return it
    expired = await refreshing.api("GET", f"/v1/accounts/{account_id}?include_credentials=1", expect=409)
    assert expired["error"]["code"] == "reauthorization_required"
    calls = len(refreshing.fake.refresh_calls)
    await asyncio.sleep(1.0)
    assert len(refreshing.fake.refresh_calls) == calls  # nothing more is tried

    # reconnecting puts it back on the schedule
    token = await refreshing.api(
        "POST",
        f"/v1/accounts/{account_id}/reconnect",
        expect=201,
        json={
            "success_redirect_uri": "https://product.example/connected",
            "error_redirect_uri": "https://product.example/failed",
        },
    )
    response = await refreshing.follow(token["connect_url"])
    assert response.headers["Location"].endswith(account_id)
    _, _, status = await stored_token(refreshing, account_id)
    assert status == "active"
    assert await parts.schedule.is_scheduled([account_id]) == [True]


async def test_rate_limiting_honours_retry_after(refreshing: BrokerHarness) -> None:
    landed = await refreshing.connect("fake")
    account_id = landed["account_id"][0]
    refreshing.fake.fail_next_token(TokenFailure.RATE_LIMITED, retry_after=2)
    for _ in range(80):
        if refreshing.fake.refresh_calls:
            break
        await asyncio.sleep(0.05)
    for _ in range(80):
        if len(refreshing.fake.refresh_calls) >= 2:
            break
        await asyncio.sleep(0.05)
    first, second = refreshing.fake.refresh_calls[:2]
    assert first.outcome == "rate_limited"
    assert second.time - first.time >= 1.95
    assert second.outcome == "ok"
    _, _, status = await stored_token(refreshing, account_id)
    assert status == "active"


@pytest.mark.parametrize("failure", [TokenFailure.SERVER_ERROR, TokenFailure.GARBAGE])
async def test_server_errors_are_retried_with_backoff_and_the_account_stays_active(
    refreshing: BrokerHarness, failure: TokenFailure
) -> None:
    landed = await refreshing.connect("fake")
    account_id = landed["account_id"][0]
    refreshing.fake.fail_next_token([failure, failure, failure])
    for _ in range(120):
        if any(c.outcome == "ok" for c in refreshing.fake.refresh_calls):
            break
        await asyncio.sleep(0.05)
    calls = refreshing.fake.refresh_calls
    assert [c.outcome for c in calls[:4]][-1] == "ok", [c.outcome for c in calls]
    gaps = [b.time - a.time for a, b in itertools.pairwise(calls[:4])]
    assert gaps[-1] > 0.3  # backing off (full jitter keeps it above base/2 * 2^(n-1))
    body = await refreshing.api("GET", f"/v1/accounts/{account_id}", expect=200)
    assert body["data"]["status"] == "active"
    assert body["data"]["last_error"] is None


async def test_a_rotated_credential_stashed_by_a_refresh_that_died_is_stored_without_calling_the_provider(
    settings: Settings, tmp_path: Path
) -> None:
    import aiohttp

    from service.store.accounts import Credentials

    broker = BrokerHarness(fast(settings, run_worker=False), tmp_path, access_token_ttl=600)
    await broker.start()
    try:
        account_id = (await broker.connect("fake"))["account_id"][0]
        parts = broker.app[COMPONENTS]
        account = await parts.accounts.get_by_id(account_id)
        assert account is not None
        old_refresh = parts.accounts.decrypt(account)["oauth_refresh_token"]
        # A refresh that died after the provider rotated the grant: the new tokens exist only in the stash.
        async with aiohttp.ClientSession() as http:
            response = await http.post(
                f"{broker.fake.base_url}/token",
                data={"grant_type": "refresh_token", "refresh_token": old_refresh},
                headers={
                    "Authorization": aiohttp.encode_basic_auth(
                        "broker-client", "broker secret/with:reserved&chars"
                    )
                },
            )
            rotated = await response.json()
        assert response.status == 200
        stashed = parts.refresher.planned(
            Credentials(
                values={
                    "oauth_access_token": rotated["access_token"],
                    "oauth_token_type": "Bearer",
                    "oauth_refresh_token": rotated["refresh_token"],
                }
            ),
            parts.catalog.get("fake"),
        )
        await parts.refresher.pending.put(account_id, account.version, stashed)
        calls = len(broker.fake.token_calls)

        result = await parts.refresher.refresh(account_id, seen_version=account.version)

        assert result.outcome.value == "refreshed"
        assert len(broker.fake.token_calls) == calls  # the provider was not asked again
        fresh = await parts.accounts.get_by_id(account_id)
        assert fresh is not None
        assert parts.accounts.decrypt(fresh)["oauth_refresh_token"] == rotated["refresh_token"]
        assert await parts.refresher.pending.get(account_id) is None
        # and the next refresh presents the live token: no reuse detected
        await parts.refresher.refresh(account_id, seen_version=fresh.version)
        assert broker.fake.reuse_detected == 0
        assert broker.fake.refresh_calls[-1].outcome == "ok"
    finally:
        await broker.stop()
