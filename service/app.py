"""The aiohttp application factory: settings, connections, components, middlewares and routes."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from service.background import background_ctx
from service.components import CATALOG, KEYRING, components_ctx
from service.config import Settings
from service.connections import SETTINGS, connections_ctx
from service.http import accounts, connect, health, oauth_apps, openapi, proxy, workspace
from service.http.errors import REQUEST_TIMEOUT, error_middleware
from service.http.observe import observe_middleware
from service.providers import ProviderCatalog
from service.store.keyring import Keyring

MAX_BODY_BYTES = 256 * 1024


def create_app(settings: Settings, *, http: bool = True) -> web.Application:
    """Raises ProviderLoadError or KeyringError when a provider file or the key setting is bad: the
    broker does not start half-configured."""
    app = web.Application(
        middlewares=[observe_middleware, error_middleware],
        client_max_size=MAX_BODY_BYTES,
    )
    app[SETTINGS] = settings
    app[REQUEST_TIMEOUT] = settings.request_timeout
    app[KEYRING] = Keyring.from_setting(settings.encryption_keys)
    extra = Path(settings.extra_providers_dir) if settings.extra_providers_dir else None
    app[CATALOG] = ProviderCatalog.load(extra)
    app.cleanup_ctx.append(connections_ctx)
    app.cleanup_ctx.append(components_ctx)
    app.cleanup_ctx.append(background_ctx)
    modules = (health, connect, accounts, oauth_apps, workspace, proxy, openapi) if http else (health,)
    for module in modules:
        app.add_routes(module.routes)
    return app
