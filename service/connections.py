"""Connections to the servers the broker stands on, opened and closed with the application."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import redis.asyncio as redis
import redis.exceptions as redis_errors
from aiohttp import web
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from service.config import Settings
from service.events.producer import EventProducer


@dataclass
class Connections:
    mongo: AsyncMongoClient[dict[str, object]]
    db: AsyncDatabase[dict[str, object]]
    redis: redis.Redis
    producer: EventProducer
    http: aiohttp.ClientSession

    def pings(self) -> dict[str, Callable[[], Awaitable[object]]]:
        """One cheap round trip per dependency, for readiness."""
        return {
            "mongodb": lambda: self.mongo.admin.command("ping"),
            "redis": lambda: self.redis.ping(),
            "kafka": self.producer.ping,
        }


SETTINGS = web.AppKey("settings", Settings)
CONNECTIONS = web.AppKey("connections", Connections)


def open_mongo(settings: Settings) -> AsyncMongoClient[dict[str, object]]:
    timeout_ms = int(settings.dependency_timeout * 1000)
    return AsyncMongoClient(
        settings.mongo_url,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        timeoutMS=timeout_ms * 2,  # client-side timeout for every operation, retries included
        appname="oauth-broker",
        tz_aware=True,
    )


def open_redis(settings: Settings) -> redis.Redis:
    # After a Redis restart every pooled connection is stale: the first command on each fails with
    # "connection closed". Retrying on a fresh connection makes that invisible (tried: without it, the
    # first readiness ping after a restart reports Redis down).
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.dependency_timeout,
        socket_connect_timeout=settings.dependency_timeout,
        health_check_interval=15,
        decode_responses=False,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=2),
        retry_on_error=[redis_errors.ConnectionError, redis_errors.TimeoutError],
    )


def open_http(settings: Settings) -> aiohttp.ClientSession:
    timeout = aiohttp.ClientTimeout(
        total=settings.http_client_timeout, sock_connect=settings.http_client_connect_timeout
    )
    return aiohttp.ClientSession(
        timeout=timeout,
        connector=aiohttp.TCPConnector(limit=200, limit_per_host=50, ttl_dns_cache=300),
        headers={"User-Agent": "oauth-broker/0.1"},
        raise_for_status=False,
    )


async def connections_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    mongo = open_mongo(settings)
    producer = EventProducer(settings)
    await producer.start()
    conns = Connections(
        mongo=mongo,
        db=mongo[settings.mongo_db],
        redis=open_redis(settings),
        producer=producer,
        http=open_http(settings),
    )
    app[CONNECTIONS] = conns
    try:
        yield
    finally:
        await asyncio.gather(
            conns.http.close(),
            conns.producer.stop(),
            conns.redis.aclose(),
            conns.mongo.close(),
            return_exceptions=True,
        )
