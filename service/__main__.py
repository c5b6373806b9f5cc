"""Command line: `python -m service serve | keys rotate | keys generate`."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys

from aiohttp import web

from service.app import create_app
from service.config import Settings, SettingsError
from service.connections import open_mongo, open_redis
from service.logs import configure_logging
from service.providers import ProviderLoadError
from service.store.keyring import Keyring, KeyringError

log = logging.getLogger("broker")


def serve(settings: Settings) -> int:
    try:
        app = create_app(settings)
    except (ProviderLoadError, KeyringError) as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 2
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
    return 0


def work(settings: Settings, port: int) -> int:
    """The refresh worker, outbox relay and reconciler without the public API; /healthz, /readyz and
    /metrics are served on `port` (0: a free port) for probes and scraping."""
    try:
        app = create_app(dataclasses.replace(settings, run_worker=True), http=False)
    except (ProviderLoadError, KeyringError) as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 2
    print(f"OAuth broker worker (probes on 127.0.0.1:{port})", file=sys.stderr, flush=True)
    web.run_app(app, host=settings.http_host, port=port, access_log=None, print=None, shutdown_timeout=15)
    return 0


async def create_workspace(settings: Settings, name: str, owner: str) -> int:
    """Bootstraps a workspace and its first owner; prints the owner's API key (shown only this once)
    on stdout, and the ids on stderr."""
    from service.store.tenancy import SCOPES, TenancyStore

    client = open_mongo(settings)
    try:
        tenancy = TenancyStore(client[settings.mongo_db])
        await tenancy.ensure_indexes()
        workspace, member = await tenancy.create_workspace(name, owner)
        _, secret = await tenancy.issue_key(member, frozenset(SCOPES), name="bootstrap")
    finally:
        await client.close()
    print(f"workspace {workspace.id} ({name}), owner {member.id} ({owner}); API key:", file=sys.stderr)
    print(secret)
    return 0


async def rotate_keys(settings: Settings) -> int:
    from service.keys import rotate
    from service.store.write_guard import guard_for

    keyring = Keyring.from_setting(settings.encryption_keys)
    client = open_mongo(settings)
    redis_client = open_redis(settings)
    try:
        db = client[settings.mongo_db]
        return await rotate(db, keyring, guard=guard_for(settings, redis_client, db))
    finally:
        await client.close()
        await redis_client.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description="OAuth broker")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the HTTP server")
    worker = commands.add_parser("worker", help="run the refresh worker, outbox relay and reconciler")
    worker.add_argument("--port", type=int, default=0, help="port for /healthz, /readyz and /metrics")
    commands.add_parser("settings", help="print the settings table (Markdown, for the README)")
    admin = commands.add_parser("admin", help="bootstrap tenancy")
    admin_commands = admin.add_subparsers(dest="admin_command", required=True)
    create = admin_commands.add_parser(
        "create-workspace", help="create a workspace; prints its owner's API key"
    )
    create.add_argument("name")
    create.add_argument("--owner", default="owner", help="the first owner's name")
    keys = commands.add_parser("keys", help="encryption keys")
    keys.add_argument("action", choices=["rotate", "generate"])
    args = parser.parse_args(argv)
    if args.command == "settings":
        print("| variable | default | meaning |\n| --- | --- | --- |")
        for variable, default, meaning in Settings.documentation():
            print(f"| `{variable}` | `{default}` | {meaning} |")
        return 0
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    if args.command == "serve":
        return serve(settings)
    if args.command == "worker":
        return work(settings, args.port)
    if args.command == "admin":
        return asyncio.run(create_workspace(settings, args.name, args.owner))
    if args.action == "generate":
        print(Keyring.generate_key())
        return 0
    try:
        return asyncio.run(rotate_keys(settings))
    except KeyringError as exc:
        print(f"cannot rotate: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
