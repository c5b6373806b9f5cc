"""Per-request observation: request id, one structured log line, and the HTTP metrics."""

from __future__ import annotations

import logging
import re
import time
import uuid

from aiohttp import web
from aiohttp.typedefs import Handler

from service.logs import no_store_var, request_id_var
from service.metrics import HTTP_REQUEST_DURATION, HTTP_REQUESTS

log = logging.getLogger("broker.http")

REQUEST_ID_HEADER = "X-Request-Id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def route_template(request: web.Request) -> str:
    """The route's template (`/v1/accounts/{id}`), never the raw path: metric labels stay bounded."""
    resource = request.match_info.route.resource
    return "unmatched" if resource is None else resource.canonical


@web.middleware
async def observe_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
    token = request_id_var.set(request_id)
    no_store = no_store_var.set(request.headers.get("X-No-Store", "").strip() == "1")
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        response.headers[REQUEST_ID_HEADER] = request_id
        return response
    except web.HTTPException as exc:  # redirects raised by handlers
        status = exc.status
        exc.headers[REQUEST_ID_HEADER] = request_id
        raise
    finally:
        elapsed = time.perf_counter() - started
        route = route_template(request)
        HTTP_REQUESTS.labels(request.method, route, str(status)).inc()
        HTTP_REQUEST_DURATION.labels(request.method, route).observe(elapsed)
        # The query string is never logged: connect tokens and OAuth codes travel there. Under
        # no-store not even the path is (proxy paths and user ids can carry data).
        log.info(
            "request",
            extra={
                "method": request.method,
                "path": route if no_store_var.get() else request.path,
                "route": route,
                "status": status,
                "duration_ms": round(elapsed * 1000, 2),
            },
        )
        request_id_var.reset(token)
        no_store_var.reset(no_store)
