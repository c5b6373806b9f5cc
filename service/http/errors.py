"""Domain errors and the one middleware that turns every failure into a JSON error response."""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Any

import pymongo.errors
import redis.exceptions
from aiohttp import web
from aiohttp.typedefs import Handler

from service.events.producer import KafkaUnavailable
from service.logs import no_store_var

# Failures of MongoDB, Redis or Kafka (connection refused, timeouts): the request may succeed later.
DEPENDENCY_ERRORS: tuple[type[BaseException], ...] = (
    pymongo.errors.ConnectionFailure,
    pymongo.errors.ExecutionTimeout,
    pymongo.errors.WTimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    KafkaUnavailable,
)

log = logging.getLogger("broker.http")


class ApiError(Exception):
    """An error the client can act on: HTTP status, a stable machine-readable code and a message."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return {"error": error}


def _code_for_status(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


REQUEST_TIMEOUT = web.AppKey("request_timeout", float)
STREAMING_PREFIXES = ("/v1/proxy/",)  # bounded by their upstream's timeouts instead


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    deadline = None if request.path.startswith(STREAMING_PREFIXES) else request.app.get(REQUEST_TIMEOUT)
    try:
        async with asyncio.timeout(deadline):
            return await handler(request)
    except TimeoutError:
        log.warning("request timed out", extra={"method": request.method})
        return web.json_response(
            error_body("request_timeout", "the broker could not answer in time; retry shortly"),
            status=503,
            headers={"Retry-After": "1"},
        )
    except ApiError as exc:
        return web.json_response(error_body(exc.code, exc.message, **exc.details), status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and other non-errors pass through untouched
        headers = {k: v for k, v in exc.headers.items() if k.lower() in {"allow", "retry-after"}}
        message = exc.reason if exc.text is None or exc.text.startswith(f"{exc.status}:") else exc.text
        return web.json_response(
            error_body(_code_for_status(exc.status), message), status=exc.status, headers=headers
        )
    except DEPENDENCY_ERRORS as exc:
        # a server the broker stands on is down: say so quickly, never hang, never a 500
        log.warning("dependency unavailable", extra={"error": type(exc).__name__})
        return web.json_response(
            error_body(
                "dependency_unavailable", "a server the broker depends on is unavailable; retry shortly"
            ),
            status=503,
            headers={"Retry-After": "1"},
        )
    except Exception:
        resource = request.match_info.route.resource
        path = (resource.canonical if resource else "unmatched") if no_store_var.get() else request.path
        log.exception("unhandled error", extra={"method": request.method, "path": path})
        return web.json_response(
            error_body("internal_error", "the broker failed to handle this request"), status=500
        )
