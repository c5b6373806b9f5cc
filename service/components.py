"""The broker's parts, built once per application on top of its connections."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from service.access import AUTHENTICATOR, Authenticator
from service.audit import AuditLog
from service.config import Settings
from service.connect_sessions import ConnectSessions
from service.connections import CONNECTIONS, SETTINGS, Connections
from service.oauth.discovery import Discovery
from service.oauth.token_client import TokenClient
from service.providers import ProviderCatalog
from service.refresh.refresher import Refresher
from service.refresh.schedule import RefreshSchedule
from service.store.accounts import AccountStore
from service.store.keyring import Keyring
from service.store.oauth_apps import OAuthAppStore
from service.store.tenancy import TenancyStore
from service.store.write_guard import guard_for

log = logging.getLogger("broker")


@dataclass
class Components:
    catalog: ProviderCatalog
    keyring: Keyring
    accounts: AccountStore
    oauth_apps: OAuthAppStore
    sessions: ConnectSessions
    tokens: TokenClient
    discovery: Discovery
    schedule: RefreshSchedule
    refresher: Refresher
    tenancy: TenancyStore
    audit: AuditLog


CATALOG = web.AppKey("catalog", ProviderCatalog)
KEYRING = web.AppKey("keyring", Keyring)
COMPONENTS = web.AppKey("components", Components)


def build_components(
    settings: Settings, conns: Connections, catalog: ProviderCatalog, keyring: Keyring
) -> Components:
    accounts = AccountStore(conns.db, keyring, guard_for(settings, conns.redis, conns.db))
    oauth_apps = OAuthAppStore(conns.db, keyring)
    tokens = TokenClient(conns.http)
    discovery = Discovery(conns.http)
    schedule = RefreshSchedule(conns.redis, settings.refresh_shards)
    refresher = Refresher(
        settings=settings,
        redis_client=conns.redis,
        accounts=accounts,
        oauth_apps=oauth_apps,
        catalog=catalog,
        tokens=tokens,
        discovery=discovery,
        schedule=schedule,
    )
    return Components(
        catalog=catalog,
        keyring=keyring,
        accounts=accounts,
        oauth_apps=oauth_apps,
        sessions=ConnectSessions(conns.redis),
        tokens=tokens,
        discovery=discovery,
        schedule=schedule,
        refresher=refresher,
        tenancy=TenancyStore(conns.db),
        audit=AuditLog(conns.db),
    )


async def components_ctx(app: web.Application) -> AsyncIterator[None]:
    conns = app[CONNECTIONS]
    keyring = app[KEYRING]
    components = build_components(app[SETTINGS], conns, app[CATALOG], keyring)
    timeout = app[SETTINGS].dependency_timeout
    try:
        await components.accounts.ensure_indexes()
        await components.oauth_apps.ensure_indexes()
        await components.tenancy.ensure_indexes()
        await components.audit.ensure_indexes()
    except Exception as exc:  # MongoDB down at start-up: serve anyway, /readyz says so
        log.warning(
            "could not ensure indexes at start-up", extra={"error": type(exc).__name__, "timeout": timeout}
        )
    app[COMPONENTS] = components
    app[AUTHENTICATOR] = Authenticator(components.tenancy, app[SETTINGS].api_key_cache_seconds)
    stop = asyncio.Event()
    flusher = asyncio.create_task(components.audit.run(stop), name="audit")
    try:
        yield
    finally:
        stop.set()
        components.audit.wake()  # the final flush starts now, not after the flush interval
        try:
            await asyncio.wait_for(flusher, 2 * timeout + 1)
        except Exception as exc:  # MongoDB down at shutdown: what is buffered cannot be kept
            log.error(
                "audit entries lost at shutdown",
                extra={"error": type(exc).__name__, "buffered": components.audit.buffered},
            )
