"""Readiness follows the real dependencies: a stopped Redis is named, and its return is noticed
without restarting the broker."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest_asyncio
from aiohttp.test_utils import TestClient

from service.app import create_app
from service.config import Settings
from tests.conftest import start_client
from tests.support.servers import PrivateRedis


@pytest_asyncio.fixture
async def private_redis() -> AsyncIterator[PrivateRedis]:
    server = PrivateRedis()
    await server.start()
    try:
        yield server
    finally:
        server.cleanup()


async def _ready_status(client: TestClient, want: int) -> dict[str, object]:  # type: ignore[type-arg]
    body: dict[str, object] = {}
    for _ in range(60):
        response = await client.get("/readyz")
        body = await response.json()
        if response.status == want:
            return body
        await asyncio.sleep(0.25)
    raise AssertionError(f"/readyz never answered {want}; last body {body}")


async def test_readyz_names_redis_when_it_stops_and_recovers_when_it_returns(
    settings: Settings, private_redis: PrivateRedis
) -> None:
    app = create_app(dataclasses.replace(settings, redis_url=private_redis.url, dependency_timeout=1.0))
    client = await start_client(app)
    try:
        await _ready_status(client, 200)

        await private_redis.stop()
        body = await _ready_status(client, 503)
        assert body["status"] == "not_ready"
        assert body["failed"] == ["redis"]

        await private_redis.start()  # same port, same broker process
        body = await _ready_status(client, 200)
        assert body["status"] == "ready"
    finally:
        await client.close()
