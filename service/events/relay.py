"""The outbox relay: publishes the events queued in account documents to Kafka, in order per account,
then removes exactly what it published. At-least-once: a crash between publish and removal republishes,
and subscribers drop duplicates by event id. One relay at a time across instances (a singleton lock),
which also keeps per-account order."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import redis.asyncio as redis
from pymongo.asynchronous.collection import AsyncCollection

from service import redis_keys
from service.events.producer import EventProducer, KafkaUnavailable
from service.events.schema import CONTENT_TYPE, TYPE_PREFIX
from service.metrics import EVENTS_FAILED, EVENTS_PUBLISHED, OUTBOX_BACKLOG
from service.refresh.locks import OwnedLock
from service.store.accounts import DELETED
from service.store.write_guard import NO_GUARD, AccountWriteGuard

log = logging.getLogger("broker.relay")
BATCH = 200
LEADER_SECONDS = 15.0


class OutboxRelay:
    def __init__(
        self,
        collection: AsyncCollection[dict[str, Any]],
        producer: EventProducer,
        topic: str,
        guard: AccountWriteGuard = NO_GUARD,
    ) -> None:
        self._collection = collection
        self._producer = producer
        self._topic = topic
        self._guard = guard

    async def publish_once(self) -> int:
        """Publishes what waits now; returns the number of events published. Raises KafkaUnavailable."""
        published = 0
        docs = (
            await self._collection.find({"has_outbox": True}, projection={"outbox": 1, "status": 1})
            .limit(BATCH)
            .to_list(None)
        )
        OUTBOX_BACKLOG.set(len(docs))
        for doc in docs:
            outbox: list[dict[str, Any]] = doc.get("outbox") or []
            if outbox:
                await self._send(doc["_id"], outbox)
                async with self._guard.hold(doc["_id"]):
                    await self._collection.update_one({"_id": doc["_id"]}, {"$pullAll": {"outbox": outbox}})
                published += len(outbox)
            await self._tidy(doc["_id"], doc.get("status"))
        return published

    async def _send(self, account_id: str, outbox: list[dict[str, Any]]) -> None:
        values = [json.dumps(event, separators=(",", ":")).encode() for event in outbox]
        try:
            await self._producer.send_many(
                self._topic,
                key=account_id.encode(),
                values=values,
                headers=[("content-type", CONTENT_TYPE.encode())],
            )
        except KafkaUnavailable:
            EVENTS_FAILED.inc(len(values))
            raise
        for event in outbox:
            EVENTS_PUBLISHED.labels(str(event.get("type", "")).removeprefix(TYPE_PREFIX)).inc()

    async def _tidy(self, account_id: str, status: str | None) -> None:
        """An emptied outbox clears the flag; a deleted account's document goes once its last event is out."""
        async with self._guard.hold(account_id):
            if status == DELETED:
                await self._collection.delete_one(
                    {"_id": account_id, "status": DELETED, "outbox": {"$size": 0}}
                )
            else:
                await self._collection.update_one(
                    {"_id": account_id, "outbox": {"$size": 0}}, {"$set": {"has_outbox": False}}
                )

    async def run(self, client: redis.Redis, poll: float, stop: asyncio.Event) -> None:
        lock = OwnedLock(client, redis_keys.singleton_lock("outbox-relay"), LEADER_SECONDS)
        leader = False
        delay = poll
        while not stop.is_set():
            try:
                leader = await lock.extend() if leader else await lock.acquire()
                published = await self.publish_once() if leader else 0
                delay = poll if published == 0 else 0.0
            except KafkaUnavailable as exc:
                log.warning("kafka unavailable; events stay in the outbox", extra={"error": str(exc)[:200]})
                delay = min(max(delay * 2, 0.5), 5.0)
            except Exception as exc:
                log.warning("relay pass failed", extra={"error": type(exc).__name__})
                delay = min(max(delay * 2, 0.5), 5.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        if leader:
            with contextlib.suppress(Exception):
                await lock.release()
