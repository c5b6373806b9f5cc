"""The broker's background work: the refresh worker, the outbox relay and the schedule reconciler.
They run inside `serve` (setting BROKER_RUN_WORKER) or alone in `python -m service worker`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from service.components import COMPONENTS
from service.connections import CONNECTIONS, SETTINGS
from service.events.relay import OutboxRelay
from service.refresh.reconciler import run_reconciler
from service.refresh.worker import RefreshWorker

log = logging.getLogger("broker")


async def background_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    if not settings.run_worker:
        yield
        return
    conns = app[CONNECTIONS]
    parts = app[COMPONENTS]
    stop = asyncio.Event()
    relay = OutboxRelay(parts.accounts.collection, conns.producer, settings.kafka_topic, parts.accounts.guard)
    tasks = [
        asyncio.create_task(
            RefreshWorker(settings, parts.schedule, parts.refresher).run(stop), name="refresh"
        ),
        asyncio.create_task(relay.run(conns.redis, settings.outbox_poll_interval, stop), name="relay"),
        asyncio.create_task(
            run_reconciler(conns.redis, parts.accounts, parts.schedule, settings.reconcile_interval, stop),
            name="reconciler",
        ),
    ]
    try:
        yield
    finally:
        stop.set()  # stop claiming; the worker finishes or releases what it holds
        done, pending = await asyncio.wait(tasks, timeout=15)
        for task in pending:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.error(
                    "background task failed", extra={"task": task.get_name()}, exc_info=task.exception()
                )
