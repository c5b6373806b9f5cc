"""OAuth clients per workspace and provider (client id, encrypted secret, redirect URI, scopes)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.access import authenticate, require_admin
from service.components import COMPONENTS, Components
from service.connections import SETTINGS
from service.http.errors import ApiError
from service.http.validation import json_body
from service.store.oauth_apps import OAuthApp

routes = web.RouteTableDef()

OAUTH_APP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["client_id", "client_secret"],
    "properties": {
        "client_id": {"type": "string", "minLength": 1, "maxLength": 512},
        "client_secret": {"type": "string", "minLength": 1, "maxLength": 2048},
        "redirect_uri": {"type": "string", "minLength": 1, "maxLength": 2048},
        "scopes": {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": 256},
            "maxItems": 200,
        },
    },
}


def app_view(app: OAuthApp) -> dict[str, Any]:
    return {
        "provider": app.provider,
        "client_id": app.client_id,
        "redirect_uri": app.redirect_uri,
        "scopes": None if app.scopes is None else list(app.scopes),
        "created_at": app.created_at.isoformat(),
        "updated_at": app.updated_at.isoformat(),
    }


def _oauth_provider(parts: Components, name: str) -> str:
    provider = parts.catalog.get(name)
    if provider is None:
        raise ApiError(404, "unknown_provider", f"no provider named {name!r}")
    if not provider.is_oauth:
        raise ApiError(400, "not_an_oauth_provider", f"{name} uses keys, not OAuth")
    return provider.name


@routes.put("/v1/oauth-apps/{provider}")
async def put_oauth_app(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    require_admin(principal)
    body = await json_body(request, OAUTH_APP_SCHEMA)
    parts: Components = request.app[COMPONENTS]
    provider = _oauth_provider(parts, request.match_info["provider"])
    redirect_uri = body.get("redirect_uri", request.app[SETTINGS].callback_url)
    if not redirect_uri.startswith(("https://", "http://127.0.0.1", "http://localhost")):
        raise ApiError(
            400, "invalid_field", "redirect_uri must be https (or loopback http)", field="redirect_uri"
        )
    app = await parts.oauth_apps.put(
        principal.workspace_id,
        provider,
        client_id=body["client_id"],
        client_secret=body["client_secret"],
        redirect_uri=redirect_uri,
        scopes=body.get("scopes"),
    )
    return web.json_response({"data": app_view(app)})


@routes.get("/v1/oauth-apps")
async def list_oauth_apps(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    parts: Components = request.app[COMPONENTS]
    return web.json_response(
        {"data": [app_view(a) for a in await parts.oauth_apps.list(principal.workspace_id)]}
    )


@routes.get("/v1/oauth-apps/{provider}")
async def get_oauth_app(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    parts: Components = request.app[COMPONENTS]
    app = await parts.oauth_apps.get(principal.workspace_id, request.match_info["provider"])
    if app is None:
        raise ApiError(404, "oauth_app_not_found", "no OAuth app registered for this provider")
    return web.json_response({"data": app_view(app)})


@routes.delete("/v1/oauth-apps/{provider}")
async def delete_oauth_app(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    require_admin(principal)
    parts: Components = request.app[COMPONENTS]
    if not await parts.oauth_apps.delete(principal.workspace_id, request.match_info["provider"]):
        raise ApiError(404, "oauth_app_not_found", "no OAuth app registered for this provider")
    return web.json_response({"data": {"provider": request.match_info["provider"], "deleted": True}})


@routes.get("/v1/providers")
async def list_providers(request: web.Request) -> web.Response:
    await authenticate(request)
    parts: Components = request.app[COMPONENTS]
    data = []
    for name in parts.catalog.names():
        p = parts.catalog.get(name)
        assert p is not None
        data.append(
            {
                "name": p.name,
                "display_name": p.display_name,
                "auth_type": p.auth_type,
                "connection_settings": [s.name for s in p.connection_settings],
                "credential_fields": [f.name for f in p.credential_fields]
                if not p.is_oauth
                else ["oauth_access_token", "oauth_refresh_token"],
            }
        )
    return web.json_response({"data": data})
