"""Shared fixtures. Tests talk to the real Redis, Kafka and FerretDB that `make infra-up` starts."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from service.app import create_app
from service.config import Settings


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    """Settings from the environment, with a database of this test run's own."""
    settings = Settings.from_env()
    return dataclasses.replace(settings, mongo_db=f"broker_test_{uuid.uuid4().hex[:10]}")


@pytest.fixture
def settings(base_settings: Settings) -> Settings:
    return base_settings


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
