"""The Kafka producer: idempotent, acks=all, and patient with a Kafka that is not there yet."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from service.config import Settings

log = logging.getLogger("broker.kafka")

RECONNECT_DELAY = 2.0


class KafkaUnavailable(Exception):
    """Kafka cannot be reached now."""


class EventProducer:
    """Owns one AIOKafkaProducer. Start-up does not wait for Kafka: the broker serves requests (and
    reports Kafka as not ready) until a connection succeeds in the background."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._connecting: asyncio.Task[None] | None = None

    def _new_producer(self) -> AIOKafkaProducer:
        timeout_ms = int(self._settings.dependency_timeout * 1000)
        return AIOKafkaProducer(
            bootstrap_servers=self._settings.kafka_bootstrap,
            client_id="oauth-broker",
            enable_idempotence=True,
            acks="all",
            request_timeout_ms=max(timeout_ms * 5, 10_000),
            retry_backoff_ms=200,
            metadata_max_age_ms=30_000,
            connections_max_idle_ms=540_000,
        )

    async def start(self) -> None:
        if not await self._try_start():
            self._connecting = asyncio.create_task(self._keep_trying(), name="kafka-connect")

    async def _try_start(self) -> bool:
        producer = self._new_producer()
        try:
            await asyncio.wait_for(producer.start(), self._settings.dependency_timeout * 5)
        except (KafkaError, OSError, TimeoutError) as exc:
            with contextlib.suppress(Exception):
                await producer.stop()
            log.warning("kafka not reachable yet", extra={"error": type(exc).__name__})
            return False
        self._producer = producer
        log.info("kafka producer started", extra={"bootstrap": self._settings.kafka_bootstrap})
        return True

    async def _keep_trying(self) -> None:
        while True:
            await asyncio.sleep(RECONNECT_DELAY)
            if await self._try_start():
                return

    async def stop(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def ping(self) -> None:
        """Raises KafkaUnavailable unless a broker answers a metadata request now."""
        if self._producer is None:
            raise KafkaUnavailable("producer not connected")
        try:
            await self._producer.client.fetch_all_metadata()
        except KafkaError as exc:
            raise KafkaUnavailable(str(exc)) from exc

    async def send_many(
        self, topic: str, *, key: bytes, values: list[bytes], headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        """Sends records in order (same key, same partition; the idempotent producer keeps the order)
        and waits until all are acknowledged by all in-sync replicas."""
        if self._producer is None:
            raise KafkaUnavailable("producer not connected")
        try:
            futures = [
                await self._producer.send(topic, value=value, key=key, headers=headers) for value in values
            ]
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise KafkaUnavailable(str(exc)) from exc

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        """Sends one record and waits for acks=all; raises KafkaUnavailable when it cannot."""
        if self._producer is None:
            raise KafkaUnavailable("producer not connected")
        try:
            await self._producer.send_and_wait(topic, value=value, key=key)
        except KafkaError as exc:
            raise KafkaUnavailable(str(exc)) from exc
