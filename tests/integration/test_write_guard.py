"""Writers of one account document never undo each other, on the real MongoDB-compatible server.

FerretDB 1.x applies an update as read, modify in Go, write the whole document back, with no lock between
the two: the outbox relay's `$pullAll` racing a credential write could put the old credential back and drop
the new event. The account write guard (a per-account Redis lock, on where the server is FerretDB)
closes that. On MongoDB the guard is off and the server's atomic updates make the same test pass."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import random
import uuid
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from service import redis_keys
from service.components import COMPONENTS
from service.config import Settings
from service.connections import open_mongo, open_redis
from service.events.producer import EventProducer
from service.events.relay import OutboxRelay
from service.store.accounts import AccountStore, Credentials, NewAccount
from service.store.keyring import Keyring
from service.store.write_guard import AccountWriteBusy, AccountWriteGuard, guard_for, is_ferretdb
from tests.conftest import TEST_KEYS
from tests.integration.test_events import consume_all, make_topic
from tests.support.harness import BrokerHarness

KEYRING = Keyring.from_setting(",".join(TEST_KEYS))


def creds(token: str) -> Credentials:
    return Credentials(
        {"oauth_access_token": f"at-{token}", "oauth_refresh_token": f"rt-{token}"},
        expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
    )


async def test_the_relay_and_a_credential_write_never_undo_each_other(
    settings: Settings, db: AsyncDatabase[dict[str, Any]]
) -> None:
    topic = await make_topic(settings)
    settings = dataclasses.replace(settings, kafka_topic=topic)
    redis_client = open_redis(settings)
    producer = EventProducer(settings)
    await producer.start()
    other_client = open_mongo(settings)  # the relay and the refresher are two processes: two clients
    try:
        other_db = other_client[db.name]
        guard = guard_for(settings, redis_client, db)
        assert await guard.needed() == await is_ferretdb(db)
        writer = AccountStore(db, KEYRING, guard)
        relay = OutboxRelay(
            other_db["accounts"], producer, topic, guard_for(settings, redis_client, other_db)
        )
        rng = random.Random(7)
        accounts = []
        for n in range(40):
            account = await writer.create(NewAccount("wsp_g", "fake", "oauth", f"a{n}", "mem_g"), creds("v1"))

            async def rotate(account: Any = account) -> Any:
                await asyncio.sleep(rng.uniform(0, 0.015))
                return await writer.replace_credentials(account, creds("v2"), refreshed=True)

            _, rotated = await asyncio.gather(relay.publish_once(), rotate())
            assert rotated is not None
            assert rotated.version == 2
            accounts.append(account.id)
        while await relay.publish_once():
            pass
        for account_id in accounts:
            stored = await writer.get_by_id(account_id)
            assert stored is not None
            assert stored.version == 2
            assert writer.decrypt(stored)["oauth_refresh_token"] == "rt-v2", "the new credential was undone"
        records = await consume_all(settings, topic, until=2 * len(accounts))
        versions: dict[str, set[int]] = {}
        for record in records:
            event = json.loads(record.value)
            versions.setdefault(record.key.decode(), set()).add(event["data"]["version"])
        assert versions == {account_id: {1, 2} for account_id in accounts}, "an event was lost"
    finally:
        await producer.stop()
        await redis_client.aclose()
        await other_client.close()


async def test_a_write_waits_for_the_holder_and_gives_up_as_a_timeout(settings: Settings) -> None:
    redis_client = open_redis(settings)
    account_id = f"apn_guard_{uuid.uuid4().hex[:8]}"
    key = redis_keys.account_write_lock(account_id)
    try:
        guard = AccountWriteGuard(redis_client, "on", ttl_seconds=5, wait_seconds=0.3)
        await redis_client.set(key, "someone else", px=200)
        async with guard.hold(account_id):  # the other holder's lock expires (or is released) first
            assert await redis_client.get(key) != b"someone else"
        assert await redis_client.exists(key) == 0
        await redis_client.set(key, "someone else", px=5_000)
        with pytest.raises(AccountWriteBusy):
            async with guard.hold(account_id):
                pass
        assert await redis_client.get(key) == b"someone else"  # never released by a non-owner
    finally:
        await redis_client.delete(key)
        await redis_client.aclose()


async def test_off_never_touches_redis() -> None:
    guard = AccountWriteGuard(None, "off")
    async with guard.hold("apn_x"):
        pass
    assert not await guard.needed()


async def test_an_api_write_blocked_by_a_stuck_writer_answers_503(broker: BrokerHarness) -> None:
    account = await broker.import_account(provider="fakekeys", credentials={"api_key": "key-123"})
    redis_client = open_redis(broker.settings)
    key = redis_keys.account_write_lock(account["id"])
    try:
        if not await broker.app[COMPONENTS].accounts.guard.needed():
            pytest.skip("the guard is off on MongoDB")
        await redis_client.set(key, "stuck", px=60_000)
        reply = await broker.call("PATCH", f"/v1/accounts/{account['id']}", json={"name": "renamed"})
        assert reply.status == 503
        assert reply.body["error"]["code"] == "dependency_unavailable"
        await redis_client.delete(key)
        reply = await broker.call("PATCH", f"/v1/accounts/{account['id']}", json={"name": "renamed"})
        assert reply.status == 200
        assert reply.body["data"]["name"] == "renamed"
    finally:
        await redis_client.delete(key)
        await redis_client.aclose()
