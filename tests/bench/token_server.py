"""A minimal, fast token endpoint for the refresh benchmark, run as its own process:

  python -m tests.bench.token_server --port 9000 --client-id ID --client-secret SECRET

POST /token accepts grant_type=refresh_token with client_secret_basic authentication, rotates the refresh
token on every call (the old one is dead from then on, as with RFC 9700 rotation), and counts the calls per
refresh token and in total. A refresh token presented twice is answered invalid_grant and counted as a
duplicate presentation. GET /stats reports the counts as JSON."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import secrets
import time
from collections import Counter
from typing import Any
from urllib.parse import parse_qsl, quote

from aiohttp import web

SEED_PREFIX = "rt0_"  # refresh tokens the benchmark seeded; every other valid one was issued here


class TokenServer:
    def __init__(self, client_id: str, client_secret: str, expires_in: int, delay: float) -> None:
        pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
        self.expected_auth = "Basic " + base64.b64encode(pair.encode()).decode()
        self.expires_in = expires_in
        self.delay = delay
        self.presented: Counter[str] = Counter()
        self.issued: set[str] = set()
        self.calls = 0
        self.ok = 0
        self.duplicates = 0
        self.unknown = 0
        self.auth_failures = 0
        self.bad_requests = 0
        self.first_call: float | None = None
        self.last_call: float | None = None
        self.last_ok: float | None = None

    async def token(self, request: web.Request) -> web.Response:
        now = time.time()
        self.calls += 1
        self.first_call = self.first_call or now
        self.last_call = now
        if request.headers.get("Authorization") != self.expected_auth:
            self.auth_failures += 1
            return _error(401, "invalid_client")
        params = dict(parse_qsl((await request.read()).decode()))
        if params.get("grant_type") != "refresh_token" or not params.get("refresh_token"):
            self.bad_requests += 1
            return _error(400, "invalid_request")
        presented = params["refresh_token"]
        self.presented[presented] += 1
        if self.presented[presented] > 1:
            self.duplicates += 1
            return _error(400, "invalid_grant")
        if not presented.startswith(SEED_PREFIX) and presented not in self.issued:
            self.unknown += 1
            return _error(400, "invalid_grant")
        self.issued.discard(presented)
        if self.delay:
            await asyncio.sleep(self.delay)
        refresh = "rt1_" + secrets.token_urlsafe(24)
        self.issued.add(refresh)
        self.ok += 1
        self.last_ok = time.time()
        body = {
            "access_token": "at1_" + secrets.token_urlsafe(30),
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "refresh_token": refresh,
            "scope": "read",
        }
        return web.Response(
            body=json.dumps(body).encode(),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    def snapshot(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "ok": self.ok,
            "refresh_tokens_presented": len(self.presented),
            "duplicate_presentations": self.duplicates,
            "tokens_presented_more_than_once": sum(1 for n in self.presented.values() if n > 1),
            "unknown_tokens": self.unknown,
            "auth_failures": self.auth_failures,
            "bad_requests": self.bad_requests,
            "first_call_at": self.first_call,
            "last_call_at": self.last_call,
            "last_ok_at": self.last_ok,
        }


def _error(status: int, code: str) -> web.Response:
    return web.Response(
        status=status, body=json.dumps({"error": code}).encode(), content_type="application/json"
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.token_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret", required=True)
    parser.add_argument("--expires-in", type=int, default=3600)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds each successful call takes")
    args = parser.parse_args()
    server = TokenServer(args.client_id, args.client_secret, args.expires_in, args.delay)
    app = web.Application()
    app.router.add_post("/token", server.token)
    app.router.add_get("/stats", server.stats)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
