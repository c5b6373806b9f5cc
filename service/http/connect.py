"""The browser flow: connect tokens, the redirect to the provider, the key form and the OAuth callback."""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from authlib.common.urls import add_params_to_uri

from service.access import authenticate
from service.components import COMPONENTS, Components
from service.connect_sessions import ConnectToken, OAuthTransaction
from service.connections import CONNECTIONS, SETTINGS
from service.http import pages
from service.http.errors import ApiError
from service.http.validation import json_body
from service.ids import is_id
from service.oauth.discovery import DiscoveryError
from service.oauth.protocol import (
    ClientCredentials,
    Endpoints,
    authorization_url,
    check_issuer,
    new_code_verifier,
    new_state,
)
from service.oauth.token_client import TokenEndpointError
from service.provider_api import ProviderApiError, run_test_request
from service.providers import Provider, ProviderInputError
from service.store.accounts import ACCOUNT_PREFIX, Account, Credentials, NewAccount

log = logging.getLogger("broker.connect")
routes = web.RouteTableDef()

MAX_CONNECT_TOKEN_TTL = 4 * 3600
CONNECT_TOKEN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["success_redirect_uri", "error_redirect_uri"],
    "properties": {
        "provider": {"type": "string", "pattern": "^[a-z][a-z0-9_-]{1,63}$"},
        "external_user_id": {"type": "string", "minLength": 1, "maxLength": 256},
        "success_redirect_uri": {"type": "string", "minLength": 1, "maxLength": 2048},
        "error_redirect_uri": {"type": "string", "minLength": 1, "maxLength": 2048},
        "connection_settings": {
            "type": "object",
            "additionalProperties": {"type": "string", "maxLength": 512},
            "maxProperties": 32,
        },
        "popup": {"type": "boolean"},
        "expires_in": {"type": "integer", "minimum": 60, "maximum": MAX_CONNECT_TOKEN_TTL},
    },
}


# ---------------------------------------------------------------- connect tokens (internal API)


async def issue_connect_token(
    request: web.Request,
    *,
    workspace_id: str,
    owner_id: str,
    body: dict[str, Any],
    account: Account | None = None,
) -> web.Response:
    """Shared by POST /v1/connect/tokens and POST /v1/accounts/{id}/reconnect."""
    settings = request.app[SETTINGS]
    parts: Components = request.app[COMPONENTS]
    workspace = await parts.tenancy.workspace(workspace_id)
    allowed = settings.redirect_allowlist | set(workspace.allowed_redirect_uris if workspace else ())
    for key in ("success_redirect_uri", "error_redirect_uri"):
        if body[key] not in allowed:
            raise ApiError(
                400,
                "redirect_uri_not_allowed",
                f"{key} is not in the broker's allowlist (exact match)",
                field=key,
            )
    provider_name = account.provider if account is not None else body.get("provider")
    connection_settings = (
        dict(account.connection_settings) if account else body.get("connection_settings", {})
    )
    if provider_name is not None:
        provider = _provider_or_404(parts, provider_name)
        if connection_settings or not provider.connection_settings:
            try:
                connection_settings = provider.resolve_settings(connection_settings)
            except ProviderInputError as exc:
                raise ApiError(400, "invalid_connection_settings", str(exc), field=exc.setting) from None
    ttl = body.get("expires_in", settings.connect_token_ttl)
    token = ConnectToken(
        workspace_id=workspace_id,
        owner_id=owner_id,
        success_redirect_uri=body["success_redirect_uri"],
        error_redirect_uri=body["error_redirect_uri"],
        expires_at=time.time() + min(ttl, MAX_CONNECT_TOKEN_TTL),
        provider=provider_name,
        external_user_id=account.external_user_id if account else body.get("external_user_id"),
        account_id=account.id if account else None,
        connection_settings=connection_settings,
        popup=bool(body.get("popup", False)),
    )
    secret = await parts.sessions.issue_connect_token(token)
    path = f"/connect/{provider_name}" if provider_name else "/connect"
    connect_url = add_params_to_uri(settings.public_url + path, [("token", secret)])
    expires_at = dt.datetime.fromtimestamp(token.expires_at, dt.UTC).isoformat().replace("+00:00", "Z")
    return web.json_response(
        {"token": secret, "connect_url": connect_url, "expires_at": expires_at}, status=201
    )


@routes.post("/v1/connect/tokens")
async def create_connect_token(request: web.Request) -> web.Response:
    principal = await authenticate(request, "connect")
    body = await json_body(request, CONNECT_TOKEN_SCHEMA)
    return await issue_connect_token(
        request, workspace_id=principal.workspace_id, owner_id=principal.member_id, body=body
    )


def _provider_or_404(parts: Components, name: str) -> Provider:
    provider = parts.catalog.get(name)
    if provider is None:
        raise ApiError(404, "unknown_provider", f"no provider named {name!r}")
    return provider


# ---------------------------------------------------------------- landing the browser


def _origin(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}"


def land_success(token: ConnectToken, account: Account) -> web.StreamResponse:
    if token.popup:
        return pages.popup_result(
            _origin(token.success_redirect_uri), {"status": "success", "account_id": account.id}
        )
    raise web.HTTPFound(add_params_to_uri(token.success_redirect_uri, [("account_id", account.id)]))


def land_error(token: ConnectToken, code: str, message: str) -> web.StreamResponse:
    log.info("connect failed", extra={"error_code": code, "provider": token.provider})
    if token.popup:
        return pages.popup_result(_origin(token.error_redirect_uri), {"status": "error", "error": code})
    params = [("error", code), ("error_description", message)]
    raise web.HTTPFound(add_params_to_uri(token.error_redirect_uri, params))


# ---------------------------------------------------------------- start: /connect/{provider}


def invalid_link() -> web.Response:
    return pages.error_page("connect_token_invalid", "This connect link is invalid, expired or already used.")


@routes.get("/connect/{provider}")
async def start_connect(request: web.Request) -> web.StreamResponse:
    parts: Components = request.app[COMPONENTS]
    secret = request.query.get("token", "")
    token = await parts.sessions.peek_connect_token(secret) if secret else None
    if token is None:
        return invalid_link()
    provider = parts.catalog.get(request.match_info["provider"])
    if provider is None or (token.provider is not None and token.provider != provider.name):
        return pages.error_page("provider_mismatch", "This connect link is not for this provider.")
    if not provider.is_oauth:
        return pages.key_form(provider, secret)
    # Settings the connect token carries are binding (a reconnect keeps the account's); the browser
    # may only fill in the ones it left open.
    given = {s.name: request.query[s.name] for s in provider.connection_settings if s.name in request.query}
    given |= dict(token.connection_settings)
    try:
        settings = provider.resolve_settings(given)
    except ProviderInputError as exc:
        first_visit = not any(s.name in request.query for s in provider.connection_settings)
        return pages.settings_form(provider, secret, given, None if first_visit else str(exc))
    return await _redirect_to_provider(request, parts, provider, secret, settings)


async def _redirect_to_provider(
    request: web.Request, parts: Components, provider: Provider, secret: str, settings: dict[str, str]
) -> web.StreamResponse:
    token = await parts.sessions.take_connect_token(secret)  # single use from here on
    if token is None:
        return pages.error_page(
            "connect_token_invalid", "This connect link is invalid, expired or already used."
        )
    config = provider.oauth2
    assert config is not None
    app = await parts.oauth_apps.get(token.workspace_id, provider.name)
    if app is None:
        return land_error(
            token, "oauth_app_not_configured", f"no OAuth app is registered for {provider.name}"
        )
    try:
        endpoints = await parts.discovery.endpoints(provider, settings)
    except DiscoveryError as exc:
        return land_error(token, "provider_discovery_failed", str(exc))
    state = new_state()
    verifier = new_code_verifier() if config.pkce else None
    scopes = list(app.scopes if app.scopes is not None else config.scopes)
    tx = OAuthTransaction(
        provider=provider.name,
        connect=token,
        code_verifier=verifier,
        redirect_uri=app.redirect_uri,
        connection_settings=settings,
        issuer=endpoints.issuer,
        require_iss=endpoints.require_iss,
        created_at=time.time(),
    )
    await parts.sessions.begin_transaction(state, tx, request.app[SETTINGS].oauth_state_ttl)
    url = authorization_url(
        config,
        endpoints,
        client_id=app.client_id,
        redirect_uri=app.redirect_uri,
        state=state,
        scopes=scopes,
        code_verifier=verifier,
    )
    raise web.HTTPFound(url)


# ---------------------------------------------------------------- key-based form


@routes.post("/connect/{provider}")
async def submit_key_form(request: web.Request) -> web.StreamResponse:
    parts: Components = request.app[COMPONENTS]
    try:
        form = await request.post()
    except ValueError:  # a malformed multipart or form body (missing boundary, bad encoding)
        return pages.error_page("invalid_form", "The form could not be read. Go back and submit it again.")
    secret = str(form.get("token", ""))
    token = await parts.sessions.peek_connect_token(secret) if secret else None
    provider = parts.catalog.get(request.match_info["provider"])
    if token is None or provider is None or provider.is_oauth:
        return pages.error_page(
            "connect_token_invalid", "This connect link is invalid, expired or already used."
        )
    if token.provider is not None and token.provider != provider.name:
        return pages.error_page("provider_mismatch", "This connect link is not for this provider.")
    values = {f.name: str(form.get(f.name, "")).strip() for f in provider.credential_fields}
    problem = key_field_problem(provider, values)
    given = {s.name: str(form[s.name]) for s in provider.connection_settings if s.name in form}
    given |= dict(token.connection_settings)
    try:
        settings = provider.resolve_settings(given)
    except ProviderInputError as exc:
        problem = problem or str(exc)
    if problem:
        return pages.key_form(provider, secret, problem)
    try:
        outcome = await run_test_request(
            request.app[CONNECTIONS].http, provider, settings=settings, metadata={}, credentials=values
        )
    except ProviderApiError as exc:
        return pages.key_form(provider, secret, str(exc))
    if outcome is not None and not outcome.ok:
        return pages.key_form(
            provider, secret, f"{provider.display_name} did not accept these credentials ({outcome.status})."
        )
    token = await parts.sessions.take_connect_token(secret)
    if token is None:
        return pages.error_page("connect_token_invalid", "This connect link was used meanwhile.")
    account = await save_connection(parts, token, provider, settings, Credentials(values=values))
    return land_success(token, account)


def key_field_problem(provider: Provider, values: dict[str, str]) -> str | None:
    for f in provider.credential_fields:
        value = values.get(f.name, "")
        if not value:
            return f"{f.label} is required."
        if f.pattern is not None and not f.pattern.fullmatch(value):
            return f"{f.label} does not look right."
    return None


# ---------------------------------------------------------------- OAuth callback


@routes.get("/oauth/callback")
async def oauth_callback(request: web.Request) -> web.StreamResponse:
    parts: Components = request.app[COMPONENTS]
    query = request.query
    state = query.get("state", "")
    tx = await parts.sessions.take_transaction(state) if 0 < len(state) <= 512 else None
    if tx is None:
        return pages.error_page(
            "state_invalid", "This sign-in response is unknown, expired or was already used. Start again."
        )
    token = tx.connect
    provider = parts.catalog.get(tx.provider)
    if provider is None or provider.oauth2 is None:
        return land_error(token, "unknown_provider", "the provider is no longer configured")
    # RFC 9207 §2.4: the issuer is checked on error responses too, before anything else is believed.
    iss_problem = check_issuer_of(tx, query.get("iss"))
    if iss_problem is not None:
        return land_error(
            token, iss_problem, "the response did not come from the expected authorization server"
        )
    if "error" in query:
        error = query["error"][:64]
        code = "access_denied" if error == "access_denied" else "provider_error"
        return land_error(token, code, f"the provider answered {error}")
    try:
        endpoints = await parts.discovery.endpoints(provider, tx.connection_settings)
    except DiscoveryError as exc:
        return land_error(token, "provider_discovery_failed", str(exc))
    code = query.get("code", "")
    if not code or len(code) > 2048:
        return land_error(token, "code_missing", "the provider sent no authorization code")
    app = await parts.oauth_apps.get(token.workspace_id, provider.name)
    if app is None:
        return land_error(
            token, "oauth_app_not_configured", f"no OAuth app is registered for {provider.name}"
        )
    client = ClientCredentials(app.client_id, app.client_secret, provider.oauth2.client_auth)
    scopes = list(app.scopes if app.scopes is not None else provider.oauth2.scopes)
    try:
        tokens = await parts.tokens.exchange_code(
            provider.oauth2,
            endpoints,
            client,
            code=code,
            redirect_uri=tx.redirect_uri,
            code_verifier=tx.code_verifier,
            requested_scopes=scopes,
        )
    except TokenEndpointError as exc:
        code_ = exc.code if exc.transient else "token_exchange_failed"
        return land_error(token, code_, str(exc))
    creds = Credentials(
        values=oauth_credential_values(tokens.access_token, tokens.refresh_token, tokens.token_type),
        expires_at=tokens.expires_at,
        scopes=tokens.scopes,
        metadata=tokens.metadata,
    )
    account = await save_connection(parts, token, provider, tx.connection_settings, creds)
    return land_success(token, account)


def check_issuer_of(tx: OAuthTransaction, iss: str | None) -> str | None:
    """The issuer recorded when the flow started is the one the response must name."""
    expected = Endpoints(
        authorize_url="",
        token_url="",
        refresh_url="",
        revocation_url=None,
        issuer=tx.issuer,
        require_iss=tx.require_iss,
    )
    return check_issuer(expected, iss)


def oauth_credential_values(access: str, refresh: str | None, token_type: str) -> dict[str, str]:
    values = {"oauth_access_token": access, "oauth_token_type": token_type}
    if refresh:
        values["oauth_refresh_token"] = refresh
    return values


async def save_connection(
    parts: Components, token: ConnectToken, provider: Provider, settings: dict[str, str], creds: Credentials
) -> Account:
    """A new account, or for a reconnect new credentials on the same account id; either way its next
    refresh is planned."""
    creds = parts.refresher.planned(creds, provider)
    if token.account_id is not None:
        for _ in range(5):
            existing = await parts.accounts.get(token.workspace_id, token.account_id)
            if existing is None:
                break  # deleted meanwhile: connect it as a new account
            updated = await parts.accounts.replace_credentials(existing, creds)
            if updated is not None:
                await parts.refresher.plan(updated)
                return updated
    new = NewAccount(
        workspace_id=token.workspace_id,
        provider=provider.name,
        auth_type=provider.auth_type,
        name=provider.display_name,
        owner_id=token.owner_id,
        external_user_id=token.external_user_id,
        connection_settings=settings,
    )
    account = await parts.accounts.create(new, creds)
    await parts.refresher.plan(account)
    return account


@routes.get("/connect")
async def choose_provider(request: web.Request) -> web.StreamResponse:
    """A connect token issued without a provider: let the user pick one."""
    parts: Components = request.app[COMPONENTS]
    secret = request.query.get("token", "")
    token = await parts.sessions.peek_connect_token(secret) if secret else None
    if token is None:
        return invalid_link()
    providers = [p for name in parts.catalog.names() if (p := parts.catalog.get(name)) is not None]
    return pages.provider_list(providers, secret)


@routes.get("/landing/success")
async def landing_success(request: web.Request) -> web.Response:
    """A hosted landing page for products that have none of their own (and for the local demo)."""
    account_id = request.query.get("account_id", "")
    if not is_id(ACCOUNT_PREFIX, account_id):
        return pages.error_page("invalid_account_id", "No account id was given.")
    return pages.landing_success(account_id, request.app[SETTINGS].public_url)


@routes.get("/landing/error")
async def landing_error(request: web.Request) -> web.Response:
    code = request.query.get("error", "unknown_error")[:64]
    return pages.error_page(code, request.query.get("error_description", "The connection failed.")[:300])
