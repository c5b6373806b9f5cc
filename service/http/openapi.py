"""The OpenAPI 3.1 document, served at /openapi.json. Request bodies reuse the handlers' own schemas, so
the document cannot drift from what the API enforces; a test compares its paths with the real routes."""

from __future__ import annotations

from functools import cache
from typing import Any

from aiohttp import web

from service.http.accounts import ACCESS_SCHEMA, IMPORT_SCHEMA, RECONNECT_SCHEMA, RENAME_SCHEMA
from service.http.connect import CONNECT_TOKEN_SCHEMA
from service.http.oauth_apps import OAUTH_APP_SCHEMA
from service.http.workspace import KEY_SCHEMA, MEMBER_SCHEMA, WORKSPACE_SCHEMA

routes = web.RouteTableDef()

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {"type": "object"},
            },
        }
    },
}
_ACCOUNT = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "provider": {"type": "string"},
        "auth_type": {"type": "string", "enum": ["oauth2", "api_key", "basic"]},
        "external_user_id": {"type": ["string", "null"]},
        "status": {
            "type": "string",
            "enum": ["active", "refreshing_failed", "reauthorization_required", "revoked"],
        },
        "healthy": {"type": "boolean"},
        "scopes": {"type": "array", "items": {"type": "string"}},
        "metadata": {"type": "object"},
        "expires_at": {
            "type": ["string", "null"],
            "format": "date-time",
            "description": "Expiry of the current token; null when it does not expire.",
        },
        "version": {"type": "integer"},
        "credentials": {
            "type": "object",
            "description": "Only with include_credentials=1. OAuth: oauth_access_token, oauth_token_type "
            "(oauth_refresh_token only with include_refresh_token=1); key-based: the provider's field names.",
            "additionalProperties": {"type": "string"},
        },
    },
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _op(
    summary: str,
    ok: int = 200,
    body: dict[str, Any] | None = None,
    params: list[dict[str, Any]] | None = None,
    response: dict[str, Any] | None = None,
    auth: bool = True,
    errors: tuple[int, ...] = (),
) -> dict[str, Any]:
    responses: dict[str, Any] = {str(ok): {"description": "success", **_json(response or {"type": "object"})}}
    for status in ((400, 401, 403, 404, 413, 415) if auth else ()) + errors:
        responses[str(status)] = {"description": "error", **_json({"$ref": "#/components/schemas/Error"})}
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        op["requestBody"] = {"required": True, **_json(body)}
    if params:
        op["parameters"] = params
    if not auth:
        op["security"] = []
    return op


def _q(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_ID = {"name": "account_id", "in": "path", "required": True, "schema": {"type": "string"}}
_PROVIDER = {"name": "provider", "in": "path", "required": True, "schema": {"type": "string"}}
_ONE = {"type": "object", "properties": {"data": {"$ref": "#/components/schemas/Account"}}}
_FLAG = {"type": "string", "enum": ["0", "1", "true", "false"]}
_HTML = {
    "description": "an HTML page or a redirect (302)",
    "content": {"text/html": {"schema": {"type": "string"}}},
}


_PROXY_PATH = {
    "name": "path",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "Path below the provider's API base URL; the caller's query string is passed on as is. "
    "A path with .. or . segments, //, a backslash, an @, a scheme, whitespace or control characters "
    "(as sent or percent-decoded) is a 400 invalid_proxy_path.",
}
_PROXIED = {
    "default": {
        "description": "The provider's answer (status, headers and body) as is, redirects included, without "
        "hop-by-hop headers and Set-Cookie; or a broker error as JSON: 400 invalid_proxy_path, "
        "invalid_credentials or invalid_connection_settings, 401, 403, 404, 409, 413 request_too_large, "
        "502 upstream_unavailable, 504 upstream_timeout."
    }
}
PROXY_METHODS = ("get", "post", "put", "patch", "delete")


def _proxy(summary: str, path_parameter: dict[str, Any]) -> dict[str, Any]:
    """One proxy path: every method goes to the provider unchanged (bodies up to 8 MiB)."""
    item: dict[str, Any] = {"parameters": [path_parameter, _PROXY_PATH]}
    for method in PROXY_METHODS:
        item[method] = {"summary": summary, "responses": _PROXIED}
    return item


@cache
def document() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/healthz": {"get": _op("Process is alive", auth=False)},
        "/readyz": {"get": _op("MongoDB, Redis and Kafka answer", auth=False, errors=(503,))},
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "security": [],
                "responses": {"200": {"description": "text exposition format"}},
            }
        },
        "/openapi.json": {"get": _op("This document", auth=False)},
        "/v1/providers": {"get": _op("Providers the broker knows")},
        "/v1/oauth-apps": {"get": _op("OAuth apps of the workspace (no secrets)")},
        "/v1/oauth-apps/{provider}": {
            "parameters": [_PROVIDER],
            "get": _op("One OAuth app"),
            "put": _op("Register or replace the OAuth client for a provider", body=OAUTH_APP_SCHEMA),
            "delete": _op("Remove the OAuth client"),
        },
        "/v1/connect/tokens": {
            "post": _op(
                "A single-use connect token and URL for the browser flow", ok=201, body=CONNECT_TOKEN_SCHEMA
            ),
        },
        "/v1/accounts": {
            "get": _op(
                "List accounts (cursor pagination)",
                params=[
                    _q("provider", {"type": "string"}),
                    _q("external_user_id", {"type": "string"}),
                    _q("status", {"type": "string"}),
                    _q("limit", {"type": "integer", "minimum": 1, "maximum": 200}),
                    _q("cursor", {"type": "string"}, "next_cursor of the previous page"),
                ],
            ),
            "post": _op(
                "Import credentials held elsewhere", ok=201, body=IMPORT_SCHEMA, response=_ONE, errors=(422,)
            ),
        },
        "/v1/accounts/{account_id}": {
            "parameters": [_ID],
            "get": _op(
                "One account; its credential with include_credentials=1",
                response=_ONE,
                params=[
                    _q("include_credentials", _FLAG),
                    _q("include_refresh_token", _FLAG),
                ],
            ),
            "patch": _op("Rename (nickname)", body=RENAME_SCHEMA, response=_ONE),
            "delete": _op("Revoke at the provider (when it can) and delete"),
        },
        "/v1/accounts/{account_id}/reconnect": {
            "parameters": [_ID],
            "post": _op("A connect URL that re-authorizes this same account", ok=201, body=RECONNECT_SCHEMA),
        },
        "/v1/accounts/{account_id}/test": {
            "parameters": [_ID],
            "post": _op("Run the provider's test request with this credential", errors=(409,)),
        },
        "/v1/accounts/{account_id}/access": {
            "parameters": [_ID],
            "put": _op(
                "Share with the workspace or named members, or make private",
                body=ACCESS_SCHEMA,
                response=_ONE,
            ),
        },
        "/v1/accounts/{account_id}/usage": {
            "parameters": [_ID],
            "get": _op("Which members and keys used the credential, how often, when last"),
        },
        "/v1/proxy/{account_id}/{path}": _proxy(
            "Call the provider's API with this account's credential (needs credentials:read; a 401 is "
            "retried once after a refresh)",
            _ID,
        ),
        "/v1/proxy/external/{provider}/{path}": _proxy(
            "Call the provider's API with a credential given in this request only (headers "
            "X-Broker-Credential-<field>, e.g. X-Broker-Credential-api_key or "
            "X-Broker-Credential-oauth_access_token, and X-Broker-Setting-<name>); nothing is stored",
            _PROVIDER,
        ),
        "/v1/users/{external_user_id}": {
            "parameters": [
                {"name": "external_user_id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "delete": _op("Delete (and revoke) every account of one end user"),
        },
        "/v1/workspace": {
            "get": _op("The workspace, and who you are in it"),
            "patch": _op("Workspace settings (no-store default, redirect allowlist)", body=WORKSPACE_SCHEMA),
        },
        "/v1/members": {
            "get": _op("Members of the workspace"),
            "post": _op("Add a member (owners and admins)", ok=201, body=MEMBER_SCHEMA),
        },
        "/v1/members/{member_id}": {
            "parameters": [
                {"name": "member_id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "delete": _op("Remove a member (their keys are revoked)", errors=(409,)),
        },
        "/v1/api-keys": {
            "get": _op("API keys (yours; all of them for admins); never the secret"),
            "post": _op("A new API key, shown once", ok=201, body=KEY_SCHEMA),
        },
        "/v1/api-keys/{key_id}": {
            "parameters": [{"name": "key_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "delete": _op("Revoke an API key"),
        },
        "/connect/{provider}": {
            "parameters": [
                _PROVIDER,
                {"name": "token", "in": "query", "required": True, "schema": {"type": "string"}},
            ],
            "get": {
                "summary": "Browser: start connecting (redirect to the provider, or the key form)",
                "security": [],
                "responses": {"200": _HTML, "302": {"description": "to the provider"}, "400": _HTML},
            },
            "post": {
                "summary": "Browser: submit the key form",
                "security": [],
                "responses": {"200": _HTML, "302": {"description": "to the success URL"}, "400": _HTML},
            },
        },
        "/connect": {
            "get": {
                "summary": "Browser: choose a provider for a connect token without one",
                "security": [],
                "parameters": [
                    {"name": "token", "in": "query", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": _HTML, "400": _HTML},
            },
        },
        "/landing/success": {
            "get": {
                "summary": "Browser: hosted success page (shows the account id)",
                "security": [],
                "parameters": [_q("account_id", {"type": "string"})],
                "responses": {"200": _HTML, "400": _HTML},
            },
        },
        "/landing/error": {
            "get": {
                "summary": "Browser: hosted error page (shows the error code)",
                "security": [],
                "parameters": [_q("error", {"type": "string"}), _q("error_description", {"type": "string"})],
                "responses": {"400": _HTML},
            },
        },
        "/oauth/callback": {
            "get": {
                "summary": "Browser: the provider's redirect back (state, code, iss or error)",
                "security": [],
                "responses": {
                    "302": {"description": "to the success or error URL"},
                    "200": _HTML,
                    "400": _HTML,
                },
            },
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "OAuth broker",
            "version": "0.1.0",
            "description": "Connect third-party accounts; get fresh credentials with one call.",
        },
        "servers": [{"url": "/"}],
        "security": [{"apiKey": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "Broker API key"}
            },
            "schemas": {"Error": _ERROR, "Account": _ACCOUNT},
        },
    }


@routes.get("/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(document())
