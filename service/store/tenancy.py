"""Workspaces, their members, and members' API keys. A key is shown once; only a hash of its secret
is stored, and it is checked in constant time."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from service.ids import is_id, new_id

Document = dict[str, Any]
ROLES = ("owner", "admin", "member")
SCOPES = ("accounts:read", "credentials:read", "accounts:write", "connect", "admin")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Workspace:
    id: str
    name: str
    no_store_default: bool = False
    allowed_redirect_uris: tuple[str, ...] = ()


@dataclass(frozen=True)
class Member:
    id: str
    workspace_id: str
    name: str
    role: str


@dataclass(frozen=True)
class ApiKey:
    id: str
    workspace_id: str
    member_id: str
    scopes: frozenset[str]
    name: str
    created_at: dt.datetime
    expires_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None
    hash: str = field(default="", repr=False)

    def usable(self, now: dt.datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    @classmethod
    def from_document(cls, doc: Document) -> ApiKey:
        return cls(
            id=doc["_id"],
            workspace_id=doc["workspace_id"],
            member_id=doc["member_id"],
            scopes=frozenset(doc["scopes"]),
            name=doc.get("name", ""),
            created_at=doc["created_at"],
            expires_at=doc.get("expires_at"),
            revoked_at=doc.get("revoked_at"),
            hash=doc["hash"],
        )


def split_key(presented: str) -> tuple[str, str] | None:
    """`key_<id>.<secret>` -> (id, secret)."""
    key_id, sep, secret = presented.partition(".")
    if not sep or not is_id("key", key_id) or not 20 <= len(secret) <= 128:
        return None
    return key_id, secret


class TenancyStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.workspaces: AsyncCollection[Document] = db["workspaces"]
        self.members: AsyncCollection[Document] = db["members"]
        self.keys: AsyncCollection[Document] = db["api_keys"]

    async def ensure_indexes(self) -> None:
        await self.members.create_index([("workspace_id", ASCENDING)])
        await self.keys.create_index([("workspace_id", ASCENDING), ("member_id", ASCENDING)])

    # ------------------------------------------------------------ workspaces and members

    async def create_workspace(self, name: str, owner_name: str) -> tuple[Workspace, Member]:
        workspace = Workspace(id=new_id("ws"), name=name)
        await self.workspaces.insert_one(
            {
                "_id": workspace.id,
                "name": name,
                "no_store_default": False,
                "allowed_redirect_uris": [],
                "created_at": utcnow(),
            }
        )
        owner = await self.add_member(workspace.id, owner_name, "owner")
        return workspace, owner

    async def workspace(self, workspace_id: str) -> Workspace | None:
        doc = await self.workspaces.find_one({"_id": workspace_id})
        if doc is None:
            return None
        return Workspace(
            id=doc["_id"],
            name=doc["name"],
            no_store_default=bool(doc.get("no_store_default")),
            allowed_redirect_uris=tuple(doc.get("allowed_redirect_uris") or ()),
        )

    async def update_workspace(self, workspace_id: str, changes: dict[str, Any]) -> Workspace | None:
        await self.workspaces.update_one({"_id": workspace_id}, {"$set": changes})
        return await self.workspace(workspace_id)

    async def add_member(self, workspace_id: str, name: str, role: str) -> Member:
        assert role in ROLES
        member = Member(id=new_id("mem"), workspace_id=workspace_id, name=name, role=role)
        await self.members.insert_one(
            {
                "_id": member.id,
                "workspace_id": workspace_id,
                "name": name,
                "role": role,
                "created_at": utcnow(),
            }
        )
        return member

    async def member(self, workspace_id: str, member_id: str) -> Member | None:
        doc = await self.members.find_one({"_id": member_id, "workspace_id": workspace_id})
        return None if doc is None else Member(doc["_id"], doc["workspace_id"], doc["name"], doc["role"])

    async def list_members(self, workspace_id: str) -> list[Member]:
        cursor = self.members.find({"workspace_id": workspace_id}).sort("_id", ASCENDING)
        return [Member(d["_id"], d["workspace_id"], d["name"], d["role"]) async for d in cursor]

    async def remove_member(self, workspace_id: str, member_id: str) -> bool:
        result = await self.members.delete_one({"_id": member_id, "workspace_id": workspace_id})
        if result.deleted_count:
            await self.keys.update_many(
                {"workspace_id": workspace_id, "member_id": member_id, "revoked_at": None},
                {"$set": {"revoked_at": utcnow()}},
            )
        return result.deleted_count == 1

    # ------------------------------------------------------------ API keys

    async def issue_key(
        self, member: Member, scopes: frozenset[str], *, name: str = "", expires_at: dt.datetime | None = None
    ) -> tuple[ApiKey, str]:
        """Returns the key and its full secret, which is never stored nor shown again."""
        key_id = new_id("key")
        secret = secrets.token_urlsafe(32)
        key = ApiKey(
            id=key_id,
            workspace_id=member.workspace_id,
            member_id=member.id,
            scopes=scopes,
            name=name,
            created_at=utcnow(),
            expires_at=expires_at,
            hash=_hash(secret),
        )
        await self.keys.insert_one(
            {
                "_id": key.id,
                "workspace_id": key.workspace_id,
                "member_id": key.member_id,
                "scopes": sorted(scopes),
                "name": name,
                "created_at": key.created_at,
                "expires_at": expires_at,
                "revoked_at": None,
                "hash": key.hash,
            }
        )
        return key, f"{key_id}.{secret}"

    async def verify(self, presented: str) -> ApiKey | None:
        parts = split_key(presented)
        if parts is None:
            return None
        key_id, secret = parts
        doc = await self.keys.find_one({"_id": key_id})
        if doc is None:
            hmac.compare_digest(_hash(secret), _hash("timing-equaliser"))
            return None
        key = ApiKey.from_document(doc)
        if not hmac.compare_digest(_hash(secret), key.hash):
            return None
        return key if key.usable(utcnow()) else None

    async def list_keys(self, workspace_id: str, member_id: str | None = None) -> list[ApiKey]:
        query: Document = {"workspace_id": workspace_id}
        if member_id is not None:
            query["member_id"] = member_id
        return [ApiKey.from_document(d) async for d in self.keys.find(query).sort("_id", ASCENDING)]

    async def key(self, workspace_id: str, key_id: str) -> ApiKey | None:
        doc = await self.keys.find_one({"_id": key_id, "workspace_id": workspace_id})
        return None if doc is None else ApiKey.from_document(doc)

    async def revoke_key(self, workspace_id: str, key_id: str) -> bool:
        result = await self.keys.update_one(
            {"_id": key_id, "workspace_id": workspace_id, "revoked_at": None},
            {"$set": {"revoked_at": utcnow()}},
        )
        return result.modified_count == 1
