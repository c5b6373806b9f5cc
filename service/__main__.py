"""Command line: `python -m service serve`."""

from __future__ import annotations

import argparse
import logging
import sys

from aiohttp import web

from service.app import create_app
from service.config import Settings, SettingsError
from service.logs import configure_logging

log = logging.getLogger("broker")


def serve(settings: Settings) -> None:
    app = create_app(settings)
    url = f"http://{settings.http_host}:{settings.http_port}"
    log.info("broker listening", extra={"url": url})
    print(f"OAuth broker on {url}  (readiness: {url}/readyz)", file=sys.stderr, flush=True)
    web.run_app(
        app,
        host=settings.http_host,
        port=settings.http_port,
        access_log=None,
        print=None,
        shutdown_timeout=10,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description="OAuth broker")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the HTTP server")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    if args.command == "serve":
        serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
