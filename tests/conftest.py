"""Shared fixtures. Tests talk to the real Redis, Kafka and FerretDB that `make infra-up` starts."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pymongo.asynchronous.database import AsyncDatabase

from service.app import create_app
from service.config import Settings
from service.connections import open_mongo
from tests.support import canary
from tests.support.harness import BrokerHarness


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    """Settings from the environment, with a database of this test run's own."""
    settings = Settings.from_env()
    return dataclasses.replace(
        settings,
        mongo_db=f"broker_test_{uuid.uuid4().hex[:10]}",
        encryption_keys=",".join(TEST_KEYS),
        run_worker=False,  # tests that need the refresh worker or the relay turn it on
    )


@pytest.fixture
def settings(base_settings: Settings) -> Settings:
    return base_settings


@pytest_asyncio.fixture
async def db(settings: Settings) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
    """A database of the test's own on the real server, dropped afterwards."""
    client = open_mongo(settings)
    database = client[f"{settings.mongo_db}_{uuid.uuid4().hex[:8]}"]
    try:
        yield database
    finally:
        await client.drop_database(database.name)
        await client.close()


@pytest_asyncio.fixture
async def broker(settings: Settings, tmp_path: Path) -> AsyncIterator[BrokerHarness]:
    """The broker on a known loopback port with a fake OAuth provider and test provider definitions."""
    harness = BrokerHarness(settings, tmp_path)
    await harness.start()
    try:
        yield harness
    finally:
        await harness.stop()


async def start_client(app: web.Application) -> TestClient[web.Request, web.Application]:
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


@pytest_asyncio.fixture
async def app(settings: Settings) -> web.Application:
    return create_app(settings)


@pytest_asyncio.fixture
async def client(app: web.Application) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """The broker served over real HTTP on loopback, with its real connections."""
    client = await start_client(app)
    try:
        yield client
    finally:
        await client.close()


TEST_KEYS = (
    "k2:" + "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=",  # 32 x 'B'
    "k1:" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=",  # 32 x 'A'
)


def pytest_configure(config: pytest.Config) -> None:
    canary.install()
    for key in TEST_KEYS:
        canary.register(key.split(":", 1)[1])


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """No API key, token or secret may appear in any log line of the whole run."""
    found = canary.leaks()
    if found:
        print(f"\nLOG CANARY: {len(found)} log line(s) contain a secret:")
        for secret, line in found[:20]:
            print(f"  [{secret}] {line}")
        session.exitstatus = 1
    else:
        checked = f"{len(canary.LINES)} lines checked against {len(canary.SECRETS)} secrets"
        print(f"\nlog canary: {checked}, none leaked")
