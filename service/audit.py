"""Who used which credential, when. Every credential read and proxy call appends an audit record and
bumps a per-(account, key) usage summary, which `GET /v1/accounts/{id}/usage` serves. Audit records are
kept even for requests sent with X-No-Store (which only keeps headers and bodies out of logs)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Coroutine
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from service.access import Principal

Document = dict[str, Any]
OPERATIONS = ("read_credentials", "proxy", "test")


class AuditLog:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._audit: AsyncCollection[Document] = db["audit"]
        self._usage: AsyncCollection[Document] = db["usage"]

    async def ensure_indexes(self) -> None:
        await self._audit.create_index(
            [("workspace_id", ASCENDING), ("account_id", ASCENDING), ("at", DESCENDING)]
        )
        await self._usage.create_index([("account_id", ASCENDING)])

    async def record(
        self, principal: Principal, account_id: str | None, operation: str, **detail: Any
    ) -> None:
        assert operation in OPERATIONS, operation
        now = dt.datetime.now(dt.UTC)
        entry = {
            "workspace_id": principal.workspace_id,
            "account_id": account_id,
            "member_id": principal.member_id,
            "api_key_id": principal.api_key_id,
            "operation": operation,
            "at": now,
            **detail,
        }
        writes: list[Coroutine[Any, Any, object]] = [self._audit.insert_one(entry)]
        if account_id is not None:
            writes.append(self._bump_usage(principal, account_id, operation, now))
        await asyncio.gather(*writes)

    async def _bump_usage(
        self, principal: Principal, account_id: str, operation: str, now: dt.datetime
    ) -> None:
        for attempt in range(2):
            try:
                await self._usage.update_one(
                    {"_id": f"{account_id}:{principal.api_key_id}"},
                    {
                        "$inc": {f"counts.{operation}": 1},
                        "$set": {"last_used_at": now, "last_operation": operation},
                        "$setOnInsert": {
                            "account_id": account_id,
                            "workspace_id": principal.workspace_id,
                            "member_id": principal.member_id,
                            "api_key_id": principal.api_key_id,
                            "first_used_at": now,
                        },
                    },
                    upsert=True,
                )
                return
            except DuplicateKeyError:
                # two first uses at once: one upsert inserted, the other retries as an update
                if attempt:
                    raise

    async def usage(self, workspace_id: str, account_id: str) -> list[Document]:
        cursor = self._usage.find({"account_id": account_id, "workspace_id": workspace_id}).sort(
            "last_used_at", DESCENDING
        )
        return [doc async for doc in cursor]

    async def entries(self, workspace_id: str, account_id: str, limit: int = 100) -> list[Document]:
        cursor = self._audit.find({"workspace_id": workspace_id, "account_id": account_id}).sort(
            "at", DESCENDING
        )
        return [doc async for doc in cursor.limit(limit)]
