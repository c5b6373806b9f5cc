"""Who is calling, and what they may do.

Callers present a member's API key (`Authorization: Bearer key_<id>.<secret>`). The key's scopes bound
what the call may touch at all; the access table of seed 002 decides, per account, what the member may
do with it (docs/access.md maps its words to the broker's operations):

                              private account          shared account
  operation                   owner/admin   member     owner/admin   member
  view (list, get)                 yes        no           yes        yes
  use credentials (+proxy)         no         no           yes        yes
  modify (rename)                  no         no           yes        yes
  test                             yes        yes          yes        yes
  manage access                    yes        no           yes        no
  reconnect                        yes        no           yes        no
  delete                           yes        no           yes        no

The member who connected an account (its owner) may always do everything with it."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from aiohttp import web

from service.http.errors import ApiError
from service.logs import no_store_var
from service.store.tenancy import TenancyStore

CACHE_SECONDS = 5.0  # a revoked key stops working here at once, on other instances within this time


class Operation(StrEnum):
    VIEW = "view"
    USE_CREDENTIALS = "use_credentials"
    MODIFY = "modify"
    TEST = "test"
    MANAGE_ACCESS = "manage_access"
    RECONNECT = "reconnect"
    DELETE = "delete"


SCOPE_OF = {
    Operation.VIEW: "accounts:read",
    Operation.TEST: "accounts:read",
    Operation.USE_CREDENTIALS: "credentials:read",
    Operation.MODIFY: "accounts:write",
    Operation.MANAGE_ACCESS: "accounts:write",
    Operation.RECONNECT: "accounts:write",
    Operation.DELETE: "accounts:write",
}

# (workspace owner or admin, other member), from seed 002's two tables.
PRIVATE = {
    Operation.VIEW: (True, False),
    Operation.USE_CREDENTIALS: (False, False),
    Operation.MODIFY: (False, False),
    Operation.TEST: (True, True),
    Operation.MANAGE_ACCESS: (True, False),
    Operation.RECONNECT: (True, False),
    Operation.DELETE: (True, False),
}
SHARED = {
    Operation.VIEW: (True, True),
    Operation.USE_CREDENTIALS: (True, True),
    Operation.MODIFY: (True, True),
    Operation.TEST: (True, True),
    Operation.MANAGE_ACCESS: (True, False),
    Operation.RECONNECT: (True, False),
    Operation.DELETE: (True, False),
}


@dataclass(frozen=True)
class Principal:
    workspace_id: str
    member_id: str
    role: str
    scopes: frozenset[str]
    api_key_id: str
    no_store_default: bool = False

    @property
    def is_admin(self) -> bool:
        return self.role in ("owner", "admin")


def shared_with(sharing: Any, member_id: str, *, as_admin: bool) -> bool:
    if sharing == "workspace":
        return True
    if isinstance(sharing, list):
        return (as_admin and bool(sharing)) or member_id in sharing
    return False


def can(principal: Principal, owner_id: str, sharing: Any, operation: Operation) -> bool:
    """The access table: pure, so every cell is tested directly."""
    if owner_id == principal.member_id:
        return True
    table = SHARED if shared_with(sharing, principal.member_id, as_admin=principal.is_admin) else PRIVATE
    admins, members = table[operation]
    return admins if principal.is_admin else members


def visible_filter(principal: Principal) -> dict[str, Any]:
    """The MongoDB filter for the accounts a principal may view."""
    if principal.is_admin:
        return {}
    me = principal.member_id
    return {"$or": [{"owner_id": me}, {"sharing": "workspace"}, {"sharing": me}]}


def require_scope(principal: Principal, scope: str) -> None:
    if scope not in principal.scopes:
        raise ApiError(403, "insufficient_scope", f"this API key lacks the {scope!r} scope", scope=scope)


def require_admin(principal: Principal) -> None:
    require_scope(principal, "admin")
    if not principal.is_admin:
        raise ApiError(403, "forbidden", "only workspace owners and admins may do this")


def authorize(
    principal: Principal, owner_id: str, sharing: Any, account_id: str, operation: Operation
) -> None:
    """Raises unless the principal may perform the operation. An account they may not even view is
    reported as not found, so ids do not leak."""
    require_scope(principal, SCOPE_OF[operation])
    if can(principal, owner_id, sharing, operation):
        return
    if not can(principal, owner_id, sharing, Operation.VIEW):
        raise ApiError(404, "account_not_found", f"no account {account_id!r}")
    raise ApiError(403, "forbidden", f"you may not {operation.value.replace('_', ' ')} this account")


class Authenticator:
    def __init__(self, tenancy: TenancyStore, cache_seconds: float = CACHE_SECONDS) -> None:
        self._tenancy = tenancy
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Principal]] = {}

    async def principal(self, presented: str) -> Principal | None:
        fingerprint = hashlib.sha256(presented.encode()).hexdigest()
        cached = self._cache.get(fingerprint)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        key = await self._tenancy.verify(presented)
        if key is None:
            return None
        member = await self._tenancy.member(key.workspace_id, key.member_id)
        workspace = await self._tenancy.workspace(key.workspace_id)
        if member is None or workspace is None:
            return None
        principal = Principal(
            workspace_id=key.workspace_id,
            member_id=member.id,
            role=member.role,
            scopes=key.scopes,
            api_key_id=key.id,
            no_store_default=workspace.no_store_default,
        )
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[fingerprint] = (now + self._cache_seconds, principal)
        return principal

    def forget(self, key_id: str | None = None) -> None:
        """Drops cached principals (all, or those of one key) after a revocation or a role change."""
        if key_id is None:
            self._cache.clear()
            return
        for fingerprint, (_, principal) in list(self._cache.items()):
            if principal.api_key_id == key_id:
                del self._cache[fingerprint]


AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
PRINCIPAL = web.RequestKey("principal", Principal)


async def authenticate(request: web.Request, scope: str | None = None) -> Principal:
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise ApiError(401, "unauthorized", "an API key is required: Authorization: Bearer <key>")
    principal = await request.app[AUTHENTICATOR].principal(presented.strip())
    if principal is None:
        raise ApiError(401, "unauthorized", "the API key is not valid, has expired or was revoked")
    request[PRINCIPAL] = principal
    if principal.no_store_default:
        no_store_var.set(True)
    if scope is not None:
        require_scope(principal, scope)
    return principal
