"""The workspace itself, its members and their API keys."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from service.access import AUTHENTICATOR, Principal, authenticate, require_admin
from service.components import COMPONENTS, Components
from service.http.errors import ApiError
from service.http.validation import json_body
from service.ids import is_id
from service.store.tenancy import ROLES, SCOPES, ApiKey, Member

routes = web.RouteTableDef()

WORKSPACE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {
        "no_store_default": {"type": "boolean"},
        "allowed_redirect_uris": {
            "type": "array",
            "items": {"type": "string", "pattern": "^https?://", "maxLength": 2048},
            "maxItems": 100,
        },
    },
}
MEMBER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "role"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "role": {"enum": list(ROLES)},
    },
}
KEY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["scopes"],
    "properties": {
        "member_id": {"type": "string", "pattern": "^mem_[0-9a-z]{26}$"},
        "name": {"type": "string", "maxLength": 200},
        "scopes": {"type": "array", "items": {"enum": list(SCOPES)}, "minItems": 1, "uniqueItems": True},
        "expires_in": {"type": "integer", "minimum": 60, "maximum": 3 * 365 * 86400},
    },
}


def _iso(value: dt.datetime | None) -> str | None:
    return (
        None
        if value is None
        else value.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


def member_view(member: Member) -> dict[str, Any]:
    return {"id": member.id, "name": member.name, "role": member.role}


def key_view(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "member_id": key.member_id,
        "name": key.name,
        "scopes": sorted(key.scopes),
        "created_at": _iso(key.created_at),
        "expires_at": _iso(key.expires_at),
        "revoked_at": _iso(key.revoked_at),
    }


async def _workspace_response(parts: Components, principal: Principal) -> web.Response:
    workspace = await parts.tenancy.workspace(principal.workspace_id)
    assert workspace is not None
    return web.json_response(
        {
            "data": {
                "id": workspace.id,
                "name": workspace.name,
                "no_store_default": workspace.no_store_default,
                "allowed_redirect_uris": list(workspace.allowed_redirect_uris),
                "you": {
                    "member_id": principal.member_id,
                    "role": principal.role,
                    "scopes": sorted(principal.scopes),
                },
            }
        }
    )


@routes.get("/v1/workspace")
async def get_workspace(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    return await _workspace_response(request.app[COMPONENTS], principal)


@routes.patch("/v1/workspace")
async def update_workspace(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    require_admin(principal)
    body = await json_body(request, WORKSPACE_SCHEMA)
    parts: Components = request.app[COMPONENTS]
    await parts.tenancy.update_workspace(principal.workspace_id, body)
    request.app[AUTHENTICATOR].forget()  # no_store_default travels with cached principals
    return await _workspace_response(parts, principal)


@routes.get("/v1/members")
async def list_members(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    parts: Components = request.app[COMPONENTS]
    return web.json_response(
        {"data": [member_view(m) for m in await parts.tenancy.list_members(principal.workspace_id)]}
    )


@routes.post("/v1/members")
async def add_member(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    require_admin(principal)
    body = await json_body(request, MEMBER_SCHEMA)
    if body["role"] == "owner" and principal.role != "owner":
        raise ApiError(403, "forbidden", "only an owner may add owners")
    parts: Components = request.app[COMPONENTS]
    member = await parts.tenancy.add_member(principal.workspace_id, body["name"], body["role"])
    return web.json_response({"data": member_view(member)}, status=201)


@routes.delete("/v1/members/{member_id}")
async def remove_member(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    require_admin(principal)
    member_id = request.match_info["member_id"]
    if member_id == principal.member_id:
        raise ApiError(409, "cannot_remove_self", "a member cannot remove themselves")
    parts: Components = request.app[COMPONENTS]
    target = (
        await parts.tenancy.member(principal.workspace_id, member_id) if is_id("mem", member_id) else None
    )
    if target is None:
        raise ApiError(404, "member_not_found", f"no member {member_id!r}")
    if target.role == "owner" and principal.role != "owner":
        raise ApiError(403, "forbidden", "only an owner may remove an owner")
    await parts.tenancy.remove_member(principal.workspace_id, member_id)
    request.app[AUTHENTICATOR].forget()
    return web.json_response({"data": {"id": member_id, "removed": True}})


async def _key_owner(request: web.Request, principal: Principal, member_id: str | None) -> Member:
    parts: Components = request.app[COMPONENTS]
    if member_id is None or member_id == principal.member_id:
        member = await parts.tenancy.member(principal.workspace_id, principal.member_id)
    else:
        require_admin(principal)
        member = await parts.tenancy.member(principal.workspace_id, member_id)
    if member is None:
        raise ApiError(404, "member_not_found", f"no member {member_id!r}")
    return member


@routes.post("/v1/api-keys")
async def create_key(request: web.Request) -> web.Response:
    """A new key, shown once. A member may give their new key at most the scopes of the key they call
    with; owners and admins may create keys for other members."""
    principal = await authenticate(request)
    body = await json_body(request, KEY_SCHEMA)
    member = await _key_owner(request, principal, body.get("member_id"))
    scopes = frozenset(body["scopes"])
    if not scopes <= principal.scopes:
        missing = sorted(scopes - principal.scopes)
        raise ApiError(403, "insufficient_scope", f"you cannot grant scopes you do not hold: {missing}")
    if "admin" in scopes and member.role == "member":
        raise ApiError(400, "invalid_field", "the admin scope is for owners and admins", field="scopes")
    expires_at = None
    if "expires_in" in body:
        expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=body["expires_in"])
    parts: Components = request.app[COMPONENTS]
    key, secret = await parts.tenancy.issue_key(
        member, scopes, name=body.get("name", ""), expires_at=expires_at
    )
    return web.json_response(
        {"data": {**key_view(key), "key": secret}}, status=201, headers={"Cache-Control": "no-store"}
    )


@routes.get("/v1/api-keys")
async def list_keys(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    parts: Components = request.app[COMPONENTS]
    member_id = None if principal.is_admin and "admin" in principal.scopes else principal.member_id
    keys = await parts.tenancy.list_keys(principal.workspace_id, member_id)
    return web.json_response({"data": [key_view(k) for k in keys]})


@routes.delete("/v1/api-keys/{key_id}")
async def revoke_key(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    parts: Components = request.app[COMPONENTS]
    key_id = request.match_info["key_id"]
    key = await parts.tenancy.key(principal.workspace_id, key_id) if is_id("key", key_id) else None
    if key is None:
        raise ApiError(404, "api_key_not_found", f"no API key {key_id!r}")
    if key.member_id != principal.member_id:
        require_admin(principal)
    await parts.tenancy.revoke_key(principal.workspace_id, key_id)
    request.app[AUTHENTICATOR].forget(key_id)
    return web.json_response({"data": {**key_view(key), "revoked": True}})
