"""Liveness, readiness and the Prometheus scrape endpoint."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from service.connections import CONNECTIONS, SETTINGS
from service.metrics import DEPENDENCY_UP

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _check(name: str, ping: Callable[[], Awaitable[object]], limit: float) -> tuple[str, str]:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(ping(), limit)
        outcome = "ok"
    except TimeoutError:
        outcome = "timeout"
    except Exception as exc:
        outcome = f"error: {type(exc).__name__}"
    DEPENDENCY_UP.labels(name, "ok" if outcome == "ok" else "failed").observe(time.perf_counter() - started)
    return name, outcome


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    timeout = request.app[SETTINGS].dependency_timeout
    pings = request.app[CONNECTIONS].pings()
    results = dict(await asyncio.gather(*(_check(n, p, timeout) for n, p in pings.items())))
    failed = sorted(name for name, outcome in results.items() if outcome != "ok")
    if failed:
        return web.json_response({"status": "not_ready", "failed": failed, "checks": results}, status=503)
    return web.json_response({"status": "ready", "checks": results})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})
