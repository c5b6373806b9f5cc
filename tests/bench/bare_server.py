"""The yardstick for credential reads: a bare aiohttp process answering the same route with a static JSON
body (a real credential response, read from a file), no middleware, no database.

  python -m tests.bench.bare_server --port 9001 --body-file .run/bench/<run>/body.json"""

from __future__ import annotations

import argparse
from pathlib import Path

from aiohttp import web


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bare_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body-file", type=Path, required=True)
    args = parser.parse_args()
    body = args.body_file.read_bytes()

    async def account(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json", headers={"Cache-Control": "no-store"})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/v1/accounts/{account_id}", account)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
