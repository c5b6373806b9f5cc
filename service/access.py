"""Who is calling the internal API. For now one admin API key from settings acts in one workspace;
workspaces, members and scoped keys replace it later."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from aiohttp import web

from service.connections import SETTINGS
from service.http.errors import ApiError


@dataclass(frozen=True)
class Principal:
    workspace_id: str
    member_id: str


def authenticate(request: web.Request) -> Principal:
    settings = request.app[SETTINGS]
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise ApiError(401, "unauthorized", "an API key is required: Authorization: Bearer <key>")
    expected = settings.admin_api_key
    if not expected or not hmac.compare_digest(presented.strip().encode(), expected.encode()):
        raise ApiError(401, "unauthorized", "the API key is not valid")
    return Principal(workspace_id=settings.workspace_id, member_id="admin")
