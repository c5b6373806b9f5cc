"""The accounts API: list, get (with credentials on request), import, rename, delete (revoking at the
provider), reconnect and test. Shapes follow the credentials API of seed 004 (`data`, `expires_at`)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from service.access import (
    SCOPE_OF,
    Operation,
    Principal,
    authenticate,
    authorize,
    require_scope,
    visible_filter,
)
from service.components import COMPONENTS, Components
from service.connections import CONNECTIONS
from service.http.connect import (
    issue_connect_token,
    key_field_problem,
    oauth_credential_values,
)
from service.http.errors import DEPENDENCY_ERRORS, ApiError
from service.http.validation import json_body, query_flag
from service.ids import is_id
from service.oauth.protocol import ClientCredentials
from service.provider_api import ProviderApiError, run_test_request
from service.providers import Provider, ProviderInputError
from service.store.accounts import ACCOUNT_PREFIX, STATUSES, Account, Credentials, NewAccount
from service.store.keyring import KeyringError

log = logging.getLogger("broker.accounts")
routes = web.RouteTableDef()

DEFAULT_PAGE = 50
MAX_PAGE = 200

IMPORT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["provider", "credentials"],
    "properties": {
        "provider": {"type": "string", "pattern": "^[a-z][a-z0-9_-]{1,63}$"},
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "external_user_id": {"type": "string", "minLength": 1, "maxLength": 256},
        "connection_settings": {
            "type": "object",
            "additionalProperties": {"type": "string", "maxLength": 512},
        },
        "credentials": {
            "type": "object",
            "additionalProperties": {"type": "string", "minLength": 1, "maxLength": 8192},
            "minProperties": 1,
            "maxProperties": 16,
        },
        "expires_at": {"type": ["string", "null"], "format": "date-time", "maxLength": 64},
        "expires_in": {"type": "integer", "minimum": 1, "maximum": 10 * 365 * 86400},
        "scopes": {"type": "array", "items": {"type": "string", "maxLength": 256}, "maxItems": 200},
        "metadata": {
            "type": "object",
            "maxProperties": 32,
            "propertyNames": {"pattern": "^[A-Za-z][A-Za-z0-9_-]{0,63}$"},
            "additionalProperties": {"type": ["string", "number", "boolean", "null"], "maxLength": 2048},
        },
        "verify": {"type": "boolean"},
    },
}
RENAME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 200}},
}
RECONNECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["success_redirect_uri", "error_redirect_uri"],
    "properties": {
        "success_redirect_uri": {"type": "string", "minLength": 1, "maxLength": 2048},
        "error_redirect_uri": {"type": "string", "minLength": 1, "maxLength": 2048},
        "popup": {"type": "boolean"},
        "expires_in": {"type": "integer", "minimum": 60, "maximum": 4 * 3600},
    },
}


def iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def account_view(account: Account, provider: Provider | None) -> dict[str, Any]:
    return {
        "id": account.id,
        "name": account.name,
        "provider": account.provider,
        "app": {
            "name_slug": account.provider,
            "name": provider.display_name if provider else account.provider,
            "auth_type": account.auth_type,
        },
        "auth_type": account.auth_type,
        "external_user_id": account.external_user_id,
        "owner_id": account.owner_id,
        "sharing": account.sharing,
        "status": account.status,
        "healthy": account.status == "active",
        "scopes": list(account.scopes),
        "metadata": dict(account.metadata),
        "connection_settings": dict(account.connection_settings),
        "expires_at": iso(account.expires_at),
        "last_refreshed_at": iso(account.last_refreshed_at),
        "last_error": account.last_error,
        "version": account.version,
        "created_at": iso(account.created_at),
        "updated_at": iso(account.updated_at),
    }


def one_account(parts: Components, account_id: str, account: Account | None) -> web.Response:
    """The response for an account just changed; it may have been deleted meanwhile."""
    if account is None:
        raise ApiError(404, "account_not_found", f"no account {account_id!r}")
    return web.json_response({"data": account_view(account, parts.catalog.get(account.provider))})


def credentials_view(values: Mapping[str, str], *, include_refresh_token: bool) -> dict[str, str]:
    return {k: v for k, v in values.items() if include_refresh_token or k != "oauth_refresh_token"}


async def load_account(request: web.Request, principal: Principal, operation: Operation) -> Account:
    """The account named in the path, if the principal may perform `operation` on it (404 when it is in
    another workspace or hidden from them, 403 when visible but not allowed)."""
    account_id = request.match_info["account_id"]
    parts: Components = request.app[COMPONENTS]
    account = None
    if is_id(ACCOUNT_PREFIX, account_id):
        account = await parts.accounts.get(principal.workspace_id, account_id)
    if account is None:
        require_scope(principal, SCOPE_OF[operation])
        raise ApiError(404, "account_not_found", f"no account {account_id!r}")
    authorize(principal, account.owner_id, account.sharing, account.id, operation)
    return account


def decrypt_or_error(parts: Components, account: Account) -> dict[str, str]:
    try:
        return parts.accounts.decrypt(account)
    except KeyringError as exc:
        log.error("credential does not decrypt", extra={"account_id": account.id, "reason": str(exc)})
        raise ApiError(
            500,
            "credentials_undecryptable",
            "the stored credential cannot be decrypted with the configured keys",
        ) from None


@routes.get("/v1/accounts")
async def list_accounts(request: web.Request) -> web.Response:
    principal = await authenticate(request, "accounts:read")
    parts: Components = request.app[COMPONENTS]
    filters: dict[str, Any] = dict(visible_filter(principal))
    for name in ("provider", "external_user_id", "status"):
        if name in request.query:
            filters[name] = request.query[name][:256]
    if "status" in filters and filters["status"] not in STATUSES:
        raise ApiError(
            400, "invalid_parameter", f"status must be one of {', '.join(STATUSES)}", parameter="status"
        )
    try:
        limit = int(request.query.get("limit", DEFAULT_PAGE))
    except ValueError:
        raise ApiError(400, "invalid_parameter", "limit must be an integer", parameter="limit") from None
    if not 1 <= limit <= MAX_PAGE:
        raise ApiError(400, "invalid_parameter", f"limit must be 1..{MAX_PAGE}", parameter="limit")
    cursor = request.query.get("cursor")
    if cursor is not None and not is_id(ACCOUNT_PREFIX, cursor):
        raise ApiError(400, "invalid_cursor", "cursor is not one this API returned", parameter="cursor")
    accounts = await parts.accounts.find_page(
        principal.workspace_id, filters=filters, limit=limit + 1, after=cursor
    )
    page, more = accounts[:limit], len(accounts) > limit
    return web.json_response(
        {
            "data": [account_view(a, parts.catalog.get(a.provider)) for a in page],
            "page_info": {"count": len(page), "next_cursor": page[-1].id if more else None},
        }
    )


@routes.get("/v1/accounts/{account_id}")
async def get_account(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    include = query_flag(request, "include_credentials")
    include_refresh = query_flag(request, "include_refresh_token")
    parts: Components = request.app[COMPONENTS]
    account = await load_account(request, principal, Operation.USE_CREDENTIALS if include else Operation.VIEW)
    if include:
        try:
            account = await parts.refresher.ensure_fresh(account)
        except DEPENDENCY_ERRORS:
            # the refresh could not run (Redis or MongoDB down): a token that is still valid still serves
            if account.expires_at is None or account.expires_at <= dt.datetime.now(dt.UTC):
                raise
        if account.expires_at is not None and account.expires_at <= dt.datetime.now(dt.UTC):
            # never hand out a token known to be expired
            if account.status == "reauthorization_required":
                raise ApiError(
                    409, "reauthorization_required", "the account must be reconnected", account_id=account.id
                )
            raise ApiError(
                503,
                "credential_expired",
                "the token expired and could not be refreshed yet",
                account_id=account.id,
            )
    view = account_view(account, parts.catalog.get(account.provider))
    if include:
        values = decrypt_or_error(parts, account)
        view["credentials"] = credentials_view(values, include_refresh_token=include_refresh)
        await parts.audit.record(principal, account.id, "read_credentials")
    return web.json_response({"data": view}, headers={"Cache-Control": "no-store"})


@routes.patch("/v1/accounts/{account_id}")
async def rename_account(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    body = await json_body(request, RENAME_SCHEMA)
    parts: Components = request.app[COMPONENTS]
    account = await load_account(request, principal, Operation.MODIFY)
    renamed = await parts.accounts.rename(account, body["name"].strip() or account.name)
    return one_account(parts, account.id, renamed)


@routes.delete("/v1/accounts/{account_id}")
async def delete_account(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    parts: Components = request.app[COMPONENTS]
    account = await load_account(request, principal, Operation.DELETE)
    revocation = await revoke_and_delete(parts, account)
    return web.json_response({"data": {"id": account.id, "deleted": True, "revocation": revocation}})


async def revoke_and_delete(parts: Components, account: Account) -> dict[str, Any]:
    """Revokes at the provider when it can, then deletes whatever the revocation's outcome."""
    revocation = await revoke_at_provider(parts, account)
    await parts.accounts.delete(account, revoked=revocation["status"] == "revoked")
    await parts.schedule.unschedule(account.id)
    return revocation


async def revoke_at_provider(parts: Components, account: Account) -> dict[str, Any]:
    """Revokes the grant (the refresh token when there is one, RFC 7009 §2.1) and reports the outcome;
    a failure never keeps the account."""
    provider = parts.catalog.get(account.provider)
    if provider is None or provider.oauth2 is None:
        return {"status": "not_supported"}
    app = await parts.oauth_apps.get(account.workspace_id, provider.name)
    if app is None:
        return {"status": "failed", "detail": "no OAuth app registered to authenticate the revocation"}
    try:
        values = parts.accounts.decrypt(account)
        endpoints = await parts.discovery.endpoints(provider, account.connection_settings)
    except Exception as exc:
        return {"status": "failed", "detail": type(exc).__name__}
    refresh = values.get("oauth_refresh_token")
    token, hint = (
        (refresh, "refresh_token") if refresh else (values.get("oauth_access_token", ""), "access_token")
    )
    client = ClientCredentials(app.client_id, app.client_secret, provider.oauth2.client_auth)
    result = await parts.tokens.revoke(provider.oauth2, endpoints, client, token=token, hint=hint)
    return {"status": result.status, **({"detail": result.detail} if result.detail else {})}


@routes.post("/v1/accounts")
async def import_account(request: web.Request) -> web.Response:
    """Imports a credential held elsewhere (Vault, a database): OAuth tokens with their expiry, or keys."""
    principal = await authenticate(request, "accounts:write")
    body = await json_body(request, IMPORT_SCHEMA)
    parts: Components = request.app[COMPONENTS]
    provider = parts.catalog.get(body["provider"])
    if provider is None:
        raise ApiError(404, "unknown_provider", f"no provider named {body['provider']!r}")
    try:
        settings = provider.resolve_settings(body.get("connection_settings"))
    except ProviderInputError as exc:
        raise ApiError(400, "invalid_connection_settings", str(exc), field=exc.setting) from None
    given: dict[str, str] = body["credentials"]
    expires_at = _import_expiry(body)
    if provider.is_oauth:
        unknown = set(given) - {"oauth_access_token", "oauth_refresh_token", "oauth_token_type"}
        if unknown or "oauth_access_token" not in given:
            raise ApiError(
                400,
                "invalid_credentials",
                "OAuth credentials are oauth_access_token, optional oauth_refresh_token and oauth_token_type",
                field="credentials",
            )
        values = oauth_credential_values(
            given["oauth_access_token"],
            given.get("oauth_refresh_token"),
            given.get("oauth_token_type", "Bearer"),
        )
    else:
        expected = {f.name for f in provider.credential_fields}
        if set(given) != expected:
            raise ApiError(
                400,
                "invalid_credentials",
                f"{provider.name} credentials are: {', '.join(sorted(expected))}",
                field="credentials",
            )
        problem = key_field_problem(provider, given)
        if problem:
            raise ApiError(400, "invalid_credentials", problem, field="credentials")
        values = dict(given)
    metadata = body.get("metadata", {})
    if body.get("verify", False):
        await _verify_or_422(request, provider, settings, metadata, values)
    new = NewAccount(
        workspace_id=principal.workspace_id,
        provider=provider.name,
        auth_type=provider.auth_type,
        name=body.get("name", provider.display_name),
        owner_id=principal.member_id,
        external_user_id=body.get("external_user_id"),
        connection_settings=settings,
    )
    creds = Credentials(
        values=values, expires_at=expires_at, scopes=tuple(body.get("scopes", ())), metadata=metadata
    )
    account = await parts.accounts.create(new, parts.refresher.planned(creds, provider))
    await parts.refresher.plan(account)
    return web.json_response({"data": account_view(account, provider)}, status=201)


def _import_expiry(body: Mapping[str, Any]) -> dt.datetime | None:
    if "expires_at" in body and "expires_in" in body:
        raise ApiError(400, "invalid_field", "give expires_at or expires_in, not both", field="expires_at")
    if "expires_in" in body:
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=body["expires_in"])
    raw = body.get("expires_at")
    if raw is None:
        return None
    try:
        value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(
            400, "invalid_field", "expires_at must be an ISO-8601 date-time", field="expires_at"
        ) from None
    if value.tzinfo is None:
        raise ApiError(400, "invalid_field", "expires_at needs a time zone (e.g. Z)", field="expires_at")
    return value.astimezone(dt.UTC)


async def _verify_or_422(
    request: web.Request,
    provider: Provider,
    settings: Mapping[str, str],
    metadata: Mapping[str, Any],
    values: Mapping[str, str],
) -> None:
    try:
        outcome = await run_test_request(
            request.app[CONNECTIONS].http, provider, settings=settings, metadata=metadata, credentials=values
        )
    except ProviderApiError as exc:
        raise ApiError(422, "verification_failed", str(exc)) from None
    if outcome is not None and not outcome.ok:
        raise ApiError(
            422,
            "verification_failed",
            f"{provider.display_name} answered {outcome.status} to the test request",
        )


@routes.post("/v1/accounts/{account_id}/reconnect")
async def reconnect_account(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    body = await json_body(request, RECONNECT_SCHEMA)
    account = await load_account(request, principal, Operation.RECONNECT)
    return await issue_connect_token(
        request, workspace_id=principal.workspace_id, owner_id=account.owner_id, body=body, account=account
    )


@routes.post("/v1/accounts/{account_id}/test")
async def test_account(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    parts: Components = request.app[COMPONENTS]
    account = await load_account(request, principal, Operation.TEST)
    provider = parts.catalog.get(account.provider)
    if provider is None:
        raise ApiError(409, "unknown_provider", f"provider {account.provider!r} is no longer configured")
    values = decrypt_or_error(parts, account)
    try:
        outcome = await run_test_request(
            request.app[CONNECTIONS].http,
            provider,
            settings=account.connection_settings,
            metadata=account.metadata,
            credentials=values,
        )
    except ProviderApiError as exc:
        raise ApiError(409, "test_request_unavailable", str(exc)) from None
    if outcome is None:
        raise ApiError(409, "no_test_request", f"{provider.name} defines no test request")
    await parts.audit.record(principal, account.id, "test", ok=outcome.ok)
    return web.json_response(
        {
            "data": {
                "ok": outcome.ok,
                "status": outcome.status,
                "expected_status": outcome.expected_status,
                "detail": outcome.detail,
            }
        }
    )


ACCESS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["sharing"],
    "properties": {
        "sharing": {
            "oneOf": [
                {"enum": ["private", "workspace"]},
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["members"],
                    "properties": {
                        "members": {
                            "type": "array",
                            "items": {"type": "string", "pattern": "^mem_[0-9a-z]{26}$"},
                            "minItems": 1,
                            "maxItems": 500,
                            "uniqueItems": True,
                        }
                    },
                },
            ]
        }
    },
}


@routes.put("/v1/accounts/{account_id}/access")
async def set_access(request: web.Request) -> web.Response:
    """Private (the default), the whole workspace, or named members."""
    principal = await authenticate(request)
    body = await json_body(request, ACCESS_SCHEMA)
    parts: Components = request.app[COMPONENTS]
    account = await load_account(request, principal, Operation.MANAGE_ACCESS)
    sharing: Any = body["sharing"]
    if isinstance(sharing, dict):
        members = sharing["members"]
        for member_id in members:
            if await parts.tenancy.member(principal.workspace_id, member_id) is None:
                raise ApiError(
                    400, "unknown_member", f"no member {member_id!r} in this workspace", field="sharing"
                )
        sharing = members
    return one_account(parts, account.id, await parts.accounts.set_sharing(account, sharing))


@routes.get("/v1/accounts/{account_id}/usage")
async def account_usage(request: web.Request) -> web.Response:
    """Which members and keys used the account's credential, how often and when last."""
    principal = await authenticate(request)
    parts: Components = request.app[COMPONENTS]
    account = await load_account(request, principal, Operation.VIEW)
    rows = await parts.audit.usage(principal.workspace_id, account.id)
    return web.json_response(
        {
            "data": [
                {
                    "member_id": row["member_id"],
                    "api_key_id": row["api_key_id"],
                    "counts": row.get("counts", {}),
                    "first_used_at": iso(row.get("first_used_at")),
                    "last_used_at": iso(row.get("last_used_at")),
                    "last_operation": row.get("last_operation"),
                }
                for row in rows
            ]
        }
    )


@routes.delete("/v1/users/{external_user_id}")
async def delete_external_user(request: web.Request) -> web.Response:
    """Deletes (revoking at the provider) every account of one end user. All or nothing on access:
    when any of them may not be deleted by the caller, none is."""
    principal = await authenticate(request, "accounts:write")
    parts: Components = request.app[COMPONENTS]
    external_user_id = request.match_info["external_user_id"]
    if not 1 <= len(external_user_id) <= 256:
        raise ApiError(400, "invalid_parameter", "external_user_id must be 1..256 characters")
    accounts: list[Account] = []
    after: str | None = None
    while True:
        page = await parts.accounts.find_page(
            principal.workspace_id,
            filters={**visible_filter(principal), "external_user_id": external_user_id},
            limit=MAX_PAGE,
            after=after,
        )
        accounts += page
        if len(page) < MAX_PAGE:
            break
        after = page[-1].id
    for account in accounts:
        authorize(principal, account.owner_id, account.sharing, account.id, Operation.DELETE)
    results = []
    for account in accounts:
        results.append({"id": account.id, "revocation": await revoke_and_delete(parts, account)})
    return web.json_response({"data": {"external_user_id": external_user_id, "deleted": results}})
