"""The accounts collection: one document per connected account, its credentials encrypted.

Every credential change is a single-document update guarded by `version` (compare-and-swap): a writer
that lost a race changes nothing and learns it from the result."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from service.events import schema as events
from service.ids import new_id
from service.store.keyring import Keyring
from service.store.write_guard import NO_GUARD, AccountWriteGuard

Document = dict[str, Any]
ACCOUNT_PREFIX = "apn"
STATUSES = ("active", "refreshing_failed", "reauthorization_required", "revoked")
DELETED = "deleted"  # internal: the account is gone for the API; the document waits for its last events
LIVE = {"status": {"$ne": DELETED}}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def credentials_aad(account_id: str) -> str:
    return f"account:{account_id}:credentials"


@dataclass(frozen=True)
class Credentials:
    """A credential in clear, only ever in memory. OAuth: access/refresh token; key-based: named fields."""

    values: Mapping[str, str]
    expires_at: dt.datetime | None = None
    scopes: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    refresh_at: dt.datetime | None = None  # when the schedule should refresh it (None: never)


@dataclass(frozen=True)
class Account:
    id: str
    workspace_id: str
    provider: str
    auth_type: str
    name: str
    owner_id: str
    status: str
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime
    sharing: Any = "private"
    external_user_id: str | None = None
    connection_settings: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    scopes: tuple[str, ...] = ()
    expires_at: dt.datetime | None = None
    last_refreshed_at: dt.datetime | None = None
    next_refresh_at: dt.datetime | None = None
    last_error: Mapping[str, Any] | None = None
    refresh_attempts: int = 0
    credentials_blob: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def event(
        self,
        kind: str,
        *,
        status: str | None = None,
        version: int | None = None,
        expires_at: dt.datetime | Literal["same"] | None = "same",
        **extra: str | int | None,
    ) -> dict[str, Any]:
        return events.account_event(
            kind,
            account_id=self.id,
            workspace_id=self.workspace_id,
            provider=self.provider,
            status=status or self.status,
            expires_at=self.expires_at if expires_at == "same" else expires_at,
            version=self.version if version is None else version,
            **extra,
        )

    @classmethod
    def from_document(cls, doc: Document) -> Account:
        return cls(
            id=doc["_id"],
            workspace_id=doc["workspace_id"],
            provider=doc["provider"],
            auth_type=doc["auth_type"],
            name=doc["name"],
            owner_id=doc["owner_id"],
            status=doc["status"],
            version=doc["version"],
            created_at=doc["created_at"],
            updated_at=doc["updated_at"],
            sharing=doc.get("sharing", "private"),
            external_user_id=doc.get("external_user_id"),
            connection_settings=doc.get("connection_settings") or {},
            metadata=doc.get("metadata") or {},
            scopes=tuple(doc.get("scopes") or ()),
            expires_at=doc.get("expires_at"),
            last_refreshed_at=doc.get("last_refreshed_at"),
            last_error=doc.get("last_error"),
            refresh_attempts=doc.get("refresh_attempts", 0),
            next_refresh_at=doc.get("next_refresh_at"),
            credentials_blob=doc.get("credentials") or {},
        )


@dataclass(frozen=True)
class NewAccount:
    workspace_id: str
    provider: str
    auth_type: str
    name: str
    owner_id: str
    external_user_id: str | None = None
    connection_settings: Mapping[str, str] = field(default_factory=dict)


class AccountStore:
    def __init__(
        self, db: AsyncDatabase[Document], keyring: Keyring, guard: AccountWriteGuard = NO_GUARD
    ) -> None:
        self._collection: AsyncCollection[Document] = db["accounts"]
        self.keyring = keyring
        self.guard = guard

    @property
    def collection(self) -> AsyncCollection[Document]:
        return self._collection

    async def ensure_indexes(self) -> None:
        await self._collection.create_index([("workspace_id", ASCENDING), ("_id", ASCENDING)])
        await self._collection.create_index(
            [("workspace_id", ASCENDING), ("external_user_id", ASCENDING), ("_id", ASCENDING)]
        )
        await self._collection.create_index([("workspace_id", ASCENDING), ("provider", ASCENDING)])
        await self._collection.create_index([("refreshable", ASCENDING), ("status", ASCENDING)])
        await self._collection.create_index([("has_outbox", ASCENDING)])

    def _credential_fields(self, account_id: str, creds: Credentials) -> Document:
        return {
            "credentials": self.keyring.encrypt_json(dict(creds.values), credentials_aad(account_id)),
            "expires_at": creds.expires_at,
            "scopes": list(creds.scopes),
            "metadata": dict(creds.metadata),
            "refreshable": creds.refresh_at is not None and bool(creds.values.get("oauth_refresh_token")),
            "next_refresh_at": creds.refresh_at,
        }

    def new_document(
        self,
        new: NewAccount,
        creds: Credentials,
        account_id: str | None = None,
        now: dt.datetime | None = None,
    ) -> Document:
        """The document of a newly connected account, credential encrypted, `connected` event queued."""
        account_id = account_id or new_id(ACCOUNT_PREFIX)
        now = now or utcnow()
        doc: Document = {
            "_id": account_id,
            "workspace_id": new.workspace_id,
            "provider": new.provider,
            "auth_type": new.auth_type,
            "name": new.name,
            "owner_id": new.owner_id,
            "sharing": "private",
            "external_user_id": new.external_user_id,
            "connection_settings": dict(new.connection_settings),
            "status": "active",
            "version": 1,
            "created_at": now,
            "updated_at": now,
            "last_refreshed_at": None,
            "last_error": None,
            "refresh_attempts": 0,
            **self._credential_fields(account_id, creds),
        }
        doc["outbox"] = [Account.from_document(doc).event(events.CONNECTED)]
        doc["has_outbox"] = True
        return doc

    async def create(self, new: NewAccount, creds: Credentials, account_id: str | None = None) -> Account:
        doc = self.new_document(new, creds, account_id)
        await self._collection.insert_one(doc)
        return Account.from_document(doc)

    async def get(self, workspace_id: str, account_id: str) -> Account | None:
        account = await self.get_by_id(account_id)
        return account if account is not None and account.workspace_id == workspace_id else None

    async def get_by_id(self, account_id: str) -> Account | None:
        """For the refresh engine, which works across workspaces. The filter is the id alone, checked
        for liveness here: FerretDB uses its primary key only for a bare `{_id: ...}` filter (any other
        field makes it scan the collection); MongoDB answers both the same."""
        doc = await self._collection.find_one({"_id": account_id}, projection={"outbox": 0})
        if doc is None or doc.get("status") == DELETED:
            return None
        return Account.from_document(doc)

    def decrypt(self, account: Account) -> dict[str, str]:
        values = self.keyring.decrypt_json(account.credentials_blob, credentials_aad(account.id))
        return {str(k): str(v) for k, v in values.items()}

    async def find_page(
        self,
        workspace_id: str,
        *,
        filters: Mapping[str, str],
        limit: int,
        after: str | None = None,
    ) -> list[Account]:
        query: Document = {"workspace_id": workspace_id, **LIVE, **filters}
        if after is not None:
            query["_id"] = {"$gt": after}
        cursor = self._collection.find(query, projection={"outbox": 0}).sort("_id", ASCENDING).limit(limit)
        return [Account.from_document(doc) async for doc in cursor]

    async def replace_credentials(
        self,
        account: Account,
        creds: Credentials,
        *,
        kind: str = events.ROTATED,
        refreshed: bool = False,
    ) -> Account | None:
        """Writes a new credential if nobody else changed the account since `account` was read, and
        queues its event in the same update. Returns the updated account, or None when the
        compare-and-swap lost."""
        now = utcnow()
        fields = self._credential_fields(account.id, creds)
        event = account.event(kind, status="active", version=account.version + 1, expires_at=creds.expires_at)
        update: Document = {
            "$set": {
                **fields,
                "status": "active",
                "last_error": None,
                "refresh_attempts": 0,
                "updated_at": now,
                "has_outbox": True,
                **({"last_refreshed_at": now} if refreshed else {}),
            },
            "$inc": {"version": 1},
            "$push": {"outbox": event},
        }
        async with self.guard.hold(account.id):
            doc = await self._collection.find_one_and_update(
                {"_id": account.id, "version": account.version, **LIVE},
                update,
                return_document=ReturnDocument.AFTER,
            )
        return None if doc is None else Account.from_document(doc)

    async def record_failure(
        self, account: Account, *, status: str, error: Mapping[str, Any], kind: str, attempt: int
    ) -> Account | None:
        """Records a failed refresh (status, error, attempt) with its event; compare-and-swap on version.
        The credential itself is left as it is."""
        event = account.event(
            kind, status=status, version=account.version + 1, attempt=attempt, error=str(error.get("code"))
        )
        async with self.guard.hold(account.id):
            doc = await self._collection.find_one_and_update(
                {"_id": account.id, "version": account.version, **LIVE},
                {
                    "$set": {
                        "status": status,
                        "last_error": dict(error),
                        "refresh_attempts": attempt,
                        "updated_at": utcnow(),
                        "has_outbox": True,
                    },
                    "$inc": {"version": 1},
                    "$push": {"outbox": event},
                },
                return_document=ReturnDocument.AFTER,
            )
        return None if doc is None else Account.from_document(doc)

    async def refreshable_ids(self, after: str | None, limit: int) -> list[tuple[str, dt.datetime]]:
        """(id, next_refresh_at) of accounts the refresh schedule should hold, in id order."""
        query: Document = {"refreshable": True, "status": {"$in": ["active", "refreshing_failed"]}}
        if after is not None:
            query["_id"] = {"$gt": after}
        cursor = self._collection.find(query, projection={"next_refresh_at": 1}).sort("_id", 1)
        return [(d["_id"], d["next_refresh_at"]) async for d in cursor.limit(limit)]

    async def set_sharing(self, account: Account, sharing: Any) -> Account | None:
        return await self._set_fields(account, {"sharing": sharing})

    async def rename(self, account: Account, name: str) -> Account | None:
        return await self._set_fields(account, {"name": name})

    async def _set_fields(self, account: Account, fields: Mapping[str, Any]) -> Account | None:
        """Changes that are not a credential: no version bump, no event. None when the account is gone."""
        async with self.guard.hold(account.id):
            doc = await self._collection.find_one_and_update(
                {"_id": account.id, **LIVE},
                {"$set": {**fields, "updated_at": utcnow()}},
                return_document=ReturnDocument.AFTER,
            )
        return None if doc is None else Account.from_document(doc)

    async def delete(self, account: Account, *, revoked: bool) -> bool:
        """Marks the account deleted and drops its credential at once; the outbox relay publishes the
        last events (revoked, deleted) and then removes the document, so no event is lost."""
        final = [account.event(events.REVOKED, status="revoked")] if revoked else []
        final.append(account.event(events.DELETED, status=DELETED))
        async with self.guard.hold(account.id):
            result = await self._collection.update_one(
                {"_id": account.id, "workspace_id": account.workspace_id, **LIVE},
                {
                    "$set": {
                        "status": DELETED,
                        "updated_at": utcnow(),
                        "refreshable": False,
                        "has_outbox": True,
                    },
                    "$unset": {"credentials": ""},
                    "$inc": {"version": 1},
                    "$push": {"outbox": {"$each": final}},
                },
            )
        return result.modified_count == 1
