"""The broker's parts, built once per application on top of its connections."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from service.connect_sessions import ConnectSessions
from service.connections import CONNECTIONS, SETTINGS
from service.oauth.discovery import Discovery
from service.oauth.token_client import TokenClient
from service.providers import ProviderCatalog
from service.store.accounts import AccountStore
from service.store.keyring import Keyring
from service.store.oauth_apps import OAuthAppStore

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


CATALOG = web.AppKey("catalog", ProviderCatalog)
KEYRING = web.AppKey("keyring", Keyring)
COMPONENTS = web.AppKey("components", Components)


async def components_ctx(app: web.Application) -> AsyncIterator[None]:
    conns = app[CONNECTIONS]
    keyring = app[KEYRING]
    components = Components(
        catalog=app[CATALOG],
        keyring=keyring,
        accounts=AccountStore(conns.db, keyring),
        oauth_apps=OAuthAppStore(conns.db, keyring),
        sessions=ConnectSessions(conns.redis),
        tokens=TokenClient(conns.http),
        discovery=Discovery(conns.http),
    )
    timeout = app[SETTINGS].dependency_timeout
    try:
        await components.accounts.ensure_indexes()
        await components.oauth_apps.ensure_indexes()
    except Exception as exc:  # MongoDB down at start-up: serve anyway, /readyz says so
        log.warning(
            "could not ensure indexes at start-up", extra={"error": type(exc).__name__, "timeout": timeout}
        )
    app[COMPONENTS] = components
    yield
