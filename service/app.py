"""The aiohttp application factory: settings, connections, middlewares and routes wired together."""

from __future__ import annotations

from aiohttp import web

from service.config import Settings
from service.connections import SETTINGS, connections_ctx
from service.http import health
from service.http.errors import error_middleware
from service.http.observe import observe_middleware

MAX_BODY_BYTES = 256 * 1024


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[observe_middleware, error_middleware],
        client_max_size=MAX_BODY_BYTES,
    )
    app[SETTINGS] = settings
    app.cleanup_ctx.append(connections_ctx)
    app.add_routes(health.routes)
    return app
