"""Who used which credential, when. Every credential read and proxy call appends an audit record and
bumps a per-(account, key) usage summary, which `GET /v1/accounts/{id}/usage` serves. Audit records are
kept even for requests sent with X-No-Store (which only keeps headers and bodies out of logs).

Records are buffered in memory and written off the request path: the audit entries with one
`insert_many`, and the usage summaries folded per (account, key) into one update each, every
`flush_interval` seconds or sooner when `batch_size` entries wait. A credential read thus costs one database
round trip (the account) instead of three, and a hot account's usage one write per flush instead of one per
read. The buffer is bounded: past `max_buffered` entries a request writes the buffer itself before it
answers, so a database outage turns into 503s rather than unbounded memory. Reads of the audit trail and
of usage flush this process's buffer first; another process's buffer shows within one flush interval.

What a crash can cost: the entries of the last flush interval of the process that died (SIGKILL, OOM).
A write whose reply was lost is retried: audit entries carry their `_id`, so a retry never duplicates one;
a usage counter may count such a batch twice."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from service.access import Principal
from service.metrics import AUDIT_BUFFERED, AUDIT_FLUSH_FAILURES

Document = dict[str, Any]
OPERATIONS = ("read_credentials", "proxy", "test")
DUPLICATE_KEY = 11000
KNOWN_USAGE_LIMIT = 100_000
# Updates per `update` command. FerretDB 1.24 never answers an `update` of 100 statements or more, and
# stalls every other client while it hangs (measured: 99 statements take 0.19 s, 100 time out).
UPDATE_CHUNK = 50
log = logging.getLogger("broker")


@dataclass
class UsageDelta:
    """What one (account, key) pair gained since the last flush."""

    account_id: str
    workspace_id: str
    member_id: str | None
    api_key_id: str | None
    first_used_at: dt.datetime
    last_used_at: dt.datetime
    last_operation: str
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, operation: str, at: dt.datetime) -> None:
        self._fold({operation: 1}, at, at, operation)

    def merge(self, later: UsageDelta) -> None:
        """Fold `later` (recorded after this one) into this delta."""
        self._fold(later.counts, later.first_used_at, later.last_used_at, later.last_operation)

    def _fold(
        self, counts: dict[str, int], first: dt.datetime, last: dt.datetime, last_operation: str
    ) -> None:
        for operation, count in counts.items():
            self.counts[operation] = self.counts.get(operation, 0) + count
        if last >= self.last_used_at:
            self.last_used_at, self.last_operation = last, last_operation
        self.first_used_at = min(self.first_used_at, first)

    def skeleton(self, usage_id: str) -> Document:
        """The summary's document before its first count (inserted once; a duplicate is ignored)."""
        return {
            "_id": usage_id,
            "account_id": self.account_id,
            "workspace_id": self.workspace_id,
            "member_id": self.member_id,
            "api_key_id": self.api_key_id,
            "first_used_at": self.first_used_at,
            "counts": {},
        }

    def update(self, usage_id: str) -> UpdateOne:
        return UpdateOne(
            {"_id": usage_id},
            {
                "$inc": {f"counts.{operation}": n for operation, n in self.counts.items()},
                "$max": {"last_used_at": self.last_used_at},
                "$set": {"last_operation": self.last_operation},
            },
        )


class AuditLog:
    def __init__(
        self,
        db: AsyncDatabase[Document],
        *,
        flush_interval: float = 0.25,
        batch_size: int = 500,
        max_buffered: int = 20_000,
    ) -> None:
        self._audit: AsyncCollection[Document] = db["audit"]
        self._usage: AsyncCollection[Document] = db["usage"]
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.max_buffered = max_buffered
        self._entries: list[Document] = []
        self._usage_deltas: dict[str, UsageDelta] = {}
        self._known_usage: set[str] = set()  # summaries this process knows exist
        self._flush_lock = asyncio.Lock()
        self._wake = asyncio.Event()

    async def ensure_indexes(self) -> None:
        await self._audit.create_index(
            [("workspace_id", ASCENDING), ("account_id", ASCENDING), ("at", DESCENDING)]
        )
        await self._usage.create_index([("account_id", ASCENDING)])

    @property
    def buffered(self) -> int:
        return len(self._entries)

    async def record(
        self, principal: Principal, account_id: str | None, operation: str, **detail: Any
    ) -> None:
        assert operation in OPERATIONS, operation
        now = dt.datetime.now(dt.UTC)
        self._entries.append(
            {
                "_id": ObjectId(),
                "workspace_id": principal.workspace_id,
                "account_id": account_id,
                "member_id": principal.member_id,
                "api_key_id": principal.api_key_id,
                "operation": operation,
                "at": now,
                **detail,
            }
        )
        if account_id is not None:
            usage_id = f"{account_id}:{principal.api_key_id}"
            delta = self._usage_deltas.get(usage_id)
            if delta is None:
                delta = self._usage_deltas[usage_id] = UsageDelta(
                    account_id=account_id,
                    workspace_id=principal.workspace_id,
                    member_id=principal.member_id,
                    api_key_id=principal.api_key_id,
                    first_used_at=now,
                    last_used_at=now,
                    last_operation=operation,
                )
            delta.add(operation, now)
        AUDIT_BUFFERED.set(len(self._entries))
        if len(self._entries) >= self.max_buffered:
            await self.flush()  # the database is behind: this request waits (or fails) for it
        elif len(self._entries) >= self.batch_size:
            self._wake.set()

    async def flush(self) -> None:
        """Write everything buffered so far. On failure what was not written stays buffered (ahead of
        anything recorded meanwhile) and the error propagates."""
        async with self._flush_lock:
            entries, self._entries = self._entries, []
            deltas, self._usage_deltas = self._usage_deltas, {}
            try:
                await _insert_new(self._audit, entries)  # a retried batch: stored entries are skipped
                entries = []
                await self._write_usage(deltas)
            except BaseException:
                AUDIT_FLUSH_FAILURES.inc()
                self._entries[:0] = entries
                for usage_id, later in self._usage_deltas.items():
                    if usage_id in deltas:
                        deltas[usage_id].merge(later)
                    else:
                        deltas[usage_id] = later
                self._usage_deltas = deltas
                raise
            finally:
                AUDIT_BUFFERED.set(len(self._entries))

    async def _write_usage(self, deltas: dict[str, UsageDelta]) -> None:
        """Add every delta to its summary; on failure `deltas` keeps only those that may not have been
        written. Summaries are created by a plain insert first rather than by an upsert: two processes
        counting the same first use would race in an upsert, and FerretDB's reply to that race is not one
        PyMongo can read."""
        ids = list(deltas)
        if not ids:
            return
        unseen = [i for i in ids if i not in self._known_usage]
        if unseen:
            await _insert_new(self._usage, [deltas[i].skeleton(i) for i in unseen])
            if len(self._known_usage) + len(unseen) > KNOWN_USAGE_LIMIT:
                self._known_usage.clear()
            self._known_usage.update(unseen)
        for start in range(0, len(ids), UPDATE_CHUNK):
            chunk = ids[start : start + UPDATE_CHUNK]
            try:
                await self._usage.bulk_write([deltas[i].update(i) for i in chunk], ordered=False)
            except BulkWriteError as exc:
                failed = {chunk[e["index"]] for e in exc.details.get("writeErrors", [])}
                for usage_id in chunk:
                    if usage_id not in failed:
                        del deltas[usage_id]
                raise
            for usage_id in chunk:
                del deltas[usage_id]

    def wake(self) -> None:
        """Make the flusher write now instead of at the end of its interval."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Flush every `flush_interval` (sooner when a batch is full) until `stop`, then once more."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:
                log.warning(
                    "audit flush failed; entries stay buffered",
                    extra={"error": type(exc).__name__, "buffered": self.buffered},
                )
                await asyncio.sleep(min(5.0, self.flush_interval * 4))
        await self.flush()

    async def usage(self, workspace_id: str, account_id: str) -> list[Document]:
        await self.flush()
        cursor = self._usage.find({"account_id": account_id, "workspace_id": workspace_id}).sort(
            "last_used_at", DESCENDING
        )
        return [doc async for doc in cursor]


async def _insert_new(collection: AsyncCollection[Document], documents: list[Document]) -> None:
    """Insert what is not stored yet: documents whose `_id` exists already are skipped."""
    if not documents:
        return
    try:
        await collection.insert_many(documents, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if exc.details.get("writeConcernErrors") or any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
