"""Credential events reach Kafka as CloudEvents, keyed by account, in order, without secrets, and none
is lost while Kafka is down."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import jsonschema
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from service.components import COMPONENTS
from service.config import Settings
from tests.integration.test_refresh import fast
from tests.support.harness import BrokerHarness

ROOT = Path(__file__).resolve().parents[2]


async def make_topic(settings: Settings) -> str:
    topic = f"test-events-{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()
    return topic


async def consume_all(settings: Settings, topic: str, *, until: int, timeout: float = 60) -> list[Any]:
    """Reads the topic from the start until `until` records arrived (or the timeout)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while len(records) < until and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                records.extend(messages)
    finally:
        await consumer.stop()
    return records


async def test_events_are_cloudevents_keyed_by_account_without_secrets(
    settings: Settings, tmp_path: Path
) -> None:
    topic = await make_topic(settings)
    broker = BrokerHarness(fast(settings, run_worker=True, kafka_topic=topic), tmp_path, access_token_ttl=3)
    await broker.start()
    try:
        landed = await broker.connect("fake")
        account_id = landed["account_id"][0]
        for _ in range(100):
            if len([c for c in broker.fake.refresh_calls if c.outcome == "ok"]) >= 2:
                break
            await asyncio.sleep(0.1)
        await broker.api("DELETE", f"/v1/accounts/{account_id}", expect=200)
        records = await consume_all(settings, topic, until=5)
        secrets = set(broker.fake.access_tokens) | set(broker.fake.refresh_tokens)
        collection = broker.app[COMPONENTS].accounts.collection
        for _ in range(50):  # the relay removes the deleted account's document after its last events
            if await collection.count_documents({"_id": account_id}) == 0:
                break
            await asyncio.sleep(0.1)
        assert await collection.count_documents({"_id": account_id}) == 0
    finally:
        await broker.stop()
    types = [json.loads(r.value)["type"] for r in records]
    assert types[0] == "oauthbroker.account.connected"
    assert types.count("oauthbroker.credential.rotated") >= 2
    assert types[-2:] == ["oauthbroker.account.revoked", "oauthbroker.account.deleted"]
    validator = jsonschema.Draft202012Validator(json.loads((ROOT / "docs/events.schema.json").read_text()))
    for record in records:
        validator.validate(json.loads(record.value))
        assert record.key == account_id.encode()
        assert dict(record.headers)["content-type"].startswith(b"application/cloudevents+json")
        event = json.loads(record.value)
        assert event["specversion"] == "1.0"
        assert event["subject"] == account_id
        assert set(event["data"]) >= {
            "account_id",
            "workspace_id",
            "provider",
            "status",
            "expires_at",
            "version",
        }
        for secret in secrets:
            assert secret not in record.value.decode(), "a token reached Kafka"
    versions = [json.loads(r.value)["data"]["version"] for r in records]
    assert versions == sorted(versions)


def kafka(action: str) -> None:
    subprocess.run(
        ["bash", str(ROOT / "deploy/local/kafka.sh"), action],
        check=True,
        timeout=180,
        stdout=subprocess.DEVNULL,
    )


async def test_no_event_is_lost_while_kafka_is_down_for_twenty_seconds(
    settings: Settings, tmp_path: Path
) -> None:
    topic = await make_topic(settings)
    broker = BrokerHarness(fast(settings, run_worker=True, kafka_topic=topic), tmp_path, access_token_ttl=3)
    await broker.start()
    try:
        accounts = [(await broker.connect("fake"))["account_id"][0] for _ in range(3)]
        await asyncio.sleep(1.0)
        kafka("down")
        try:
            await asyncio.sleep(20)  # tokens keep rotating; their events wait in the outbox
        finally:
            kafka("up")
        parts = broker.app[COMPONENTS]
        expected: dict[str, int] = {}
        for _ in range(120):  # the relay drains once Kafka is back
            waiting = await parts.accounts.collection.count_documents({"has_outbox": True})
            if waiting == 0:
                break
            await asyncio.sleep(0.5)
        assert waiting == 0, "events still waiting in outboxes"
        for account_id in accounts:
            account = await parts.accounts.get_by_id(account_id)
            assert account is not None
            expected[account_id] = account.version
        total = sum(expected.values())
        records = await consume_all(settings, topic, until=total, timeout=60)
    finally:
        await broker.stop()
    rotated_while_down = sum(expected.values()) - len(accounts)
    assert rotated_while_down >= 3 * 5, "tokens should have rotated while Kafka was down"
    by_account: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        event = json.loads(record.value)
        by_account.setdefault(record.key.decode(), []).append(event)
    for account_id, version in expected.items():
        events = by_account[account_id]
        first_seen: dict[str, int] = {}
        for event in events:
            first_seen.setdefault(event["id"], event["data"]["version"])
        # every version from connect (1) to now arrived; at-least-once may repeat an id, never skip one
        assert sorted(first_seen.values()) == list(range(1, version + 1))
        assert list(first_seen.values()) == sorted(first_seen.values()), "per-account order broken"
