"""OAuth clients registered per workspace and provider; the client secret is encrypted."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from service.store.keyring import Keyring

Document = dict[str, Any]


def _app_id(workspace_id: str, provider: str) -> str:
    return f"{workspace_id}:{provider}"


def secret_aad(workspace_id: str, provider: str) -> str:
    return f"oauth_app:{_app_id(workspace_id, provider)}:client_secret"


@dataclass(frozen=True)
class OAuthApp:
    workspace_id: str
    provider: str
    client_id: str
    client_secret: str
    redirect_uri: str
    scopes: tuple[str, ...] | None
    created_at: dt.datetime
    updated_at: dt.datetime


class OAuthAppStore:
    def __init__(self, db: AsyncDatabase[Document], keyring: Keyring) -> None:
        self._collection: AsyncCollection[Document] = db["oauth_apps"]
        self.keyring = keyring

    @property
    def collection(self) -> AsyncCollection[Document]:
        return self._collection

    async def ensure_indexes(self) -> None:
        await self._collection.create_index([("workspace_id", ASCENDING), ("provider", ASCENDING)])

    async def put(
        self,
        workspace_id: str,
        provider: str,
        *,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        scopes: list[str] | None,
    ) -> OAuthApp:
        now = dt.datetime.now(dt.UTC)
        doc = await self._collection.find_one_and_update(
            {"_id": _app_id(workspace_id, provider)},
            {
                "$set": {
                    "workspace_id": workspace_id,
                    "provider": provider,
                    "client_id": client_id,
                    "client_secret": self.keyring.encrypt(
                        client_secret.encode(), secret_aad(workspace_id, provider)
                    ),
                    "redirect_uri": redirect_uri,
                    "scopes": scopes,
                    "updated_at": now,
                },
                "$setOnInsert": {"created_at": now},
            },
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        assert doc is not None
        return self._from_document(doc)

    async def get(self, workspace_id: str, provider: str) -> OAuthApp | None:
        doc = await self._collection.find_one({"_id": _app_id(workspace_id, provider)})
        return None if doc is None else self._from_document(doc)

    async def list(self, workspace_id: str) -> list[OAuthApp]:
        cursor = self._collection.find({"workspace_id": workspace_id}).sort("provider", ASCENDING)
        return [self._from_document(doc) async for doc in cursor]

    async def delete(self, workspace_id: str, provider: str) -> bool:
        result = await self._collection.delete_one({"_id": _app_id(workspace_id, provider)})
        return result.deleted_count == 1

    def _from_document(self, doc: Document) -> OAuthApp:
        secret = self.keyring.decrypt(doc["client_secret"], secret_aad(doc["workspace_id"], doc["provider"]))
        scopes = doc.get("scopes")
        return OAuthApp(
            workspace_id=doc["workspace_id"],
            provider=doc["provider"],
            client_id=doc["client_id"],
            client_secret=secret.decode(),
            redirect_uri=doc["redirect_uri"],
            scopes=None if scopes is None else tuple(scopes),
            created_at=doc["created_at"],
            updated_at=doc["updated_at"],
        )
