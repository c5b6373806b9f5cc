"""The broker's own clients against the real servers: MongoDB (FerretDB), Redis, Kafka."""

from __future__ import annotations

import asyncio
import uuid

from aiohttp import web
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from service.connections import CONNECTIONS, SETTINGS


async def test_mongodb_document_round_trip(client: object, app: web.Application) -> None:
    db = app[CONNECTIONS].db
    marker = uuid.uuid4().hex
    result = await db["roundtrip"].insert_one({"marker": marker, "n": 1})
    await db["roundtrip"].update_one({"_id": result.inserted_id, "n": 1}, {"$inc": {"n": 1}})
    found = await db["roundtrip"].find_one({"_id": result.inserted_id})
    assert found is not None
    assert found["marker"] == marker
    assert found["n"] == 2


async def test_redis_sorted_set_round_trip(client: object, app: web.Application) -> None:
    r = app[CONNECTIONS].redis
    key = f"test:zset:{uuid.uuid4().hex}"
    try:
        await r.zadd(key, {"acc-a": 30.0, "acc-b": 10.0, "acc-c": 20.0})
        due = await r.zrangebyscore(key, "-inf", 25.0)
        assert due == [b"acc-b", b"acc-c"]
    finally:
        await r.delete(key)


async def test_kafka_message_produced_and_consumed_on_fresh_topic(
    client: object, app: web.Application
) -> None:
    settings = app[SETTINGS]
    topic = f"test-{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()

    producer = app[CONNECTIONS].producer
    for _ in range(50):  # the producer connects in the background: wait for it
        try:
            await producer.ping()
            break
        except Exception:
            await asyncio.sleep(0.2)
    await producer.send(topic, key=b"acc-1", value=b'{"hello": "kafka"}')

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    try:
        message = await asyncio.wait_for(consumer.getone(), timeout=20)
    finally:
        await consumer.stop()
    assert message.key == b"acc-1"
    assert message.value == b'{"hello": "kafka"}'
