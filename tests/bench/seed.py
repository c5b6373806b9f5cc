"""Test data at benchmark sizes: a database of the run's own, a workspace made by the real CLI, a provider
definition in an extra folder, and account documents built exactly like AccountStore.create builds them
(same keyring encryption, same fields), inserted with insert_many in batches."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from service.config import Settings
from service.connections import open_mongo
from service.ids import new_id
from service.store.accounts import ACCOUNT_PREFIX, AccountStore, Credentials, NewAccount
from service.store.keyring import Keyring
from tests.bench.common import RUN_DIR, run_command
from tests.support.workers import settings_env

PROVIDER = "benchoauth"
CLIENT_ID = "bench-client"
CLIENT_SECRET = "bench secret/with:reserved&chars"
SEED_REFRESH_PREFIX = "rt0_"


def bench_settings(tag: str, **overrides: Any) -> Settings:
    """The environment's settings (BROKER_* from the Makefile) with a database, a key and a Kafka topic of
    this run's own."""
    base = Settings.from_env()
    return dataclasses.replace(
        base,
        mongo_db=f"bench_{tag}",
        encryption_keys=f"bench:{Keyring.generate_key()}",
        kafka_topic=f"bench.account-events.{tag}",
        log_level="INFO",
        **overrides,
    )


def env_of(settings: Settings) -> dict[str, str]:
    return settings_env(settings)


def write_provider(folder: Path, token_base_url: str) -> Path:
    """An OAuth provider whose token endpoint is `token_base_url`/token, in an extra providers folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{PROVIDER}.yaml").write_text(
        f"""
name: {PROVIDER}
display_name: Bench OAuth
auth_type: oauth2
oauth2:
  authorize_url: {token_base_url}/authorize
  token_url: {token_base_url}/token
  scopes: [read]
  client_auth: client_secret_basic
  refresh_lead_seconds: 300
  rotates_refresh_token: true
api:
  base_url: {token_base_url}/api
  auth: {{style: bearer}}
"""
    )
    return folder


async def create_workspace(settings: Settings) -> tuple[str, str, str]:
    """`python -m service admin create-workspace bench`: (API key, workspace id, owner id)."""
    out, err = await run_command(
        [sys.executable, "-m", "service", "admin", "create-workspace", "bench", "--owner", "bench-owner"],
        env_of(settings),
        timeout=60,
    )
    match = re.search(r"workspace (\S+) \(bench\), owner (\S+) ", err)
    if match is None or not out.strip():
        raise RuntimeError(f"unexpected create-workspace output: {err!r}")
    return out.strip().splitlines()[-1], match.group(1), match.group(2)


def account_document(
    store: AccountStore,
    *,
    workspace_id: str,
    owner_id: str,
    creds: Credentials,
    with_outbox: bool = True,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """What AccountStore.create inserts (AccountStore.new_document). Without outbox: the `connected`
    event is taken as published long ago, as for accounts connected before the run."""
    account_id = new_id(ACCOUNT_PREFIX)
    new = NewAccount(workspace_id, PROVIDER, "oauth2", f"bench {account_id[-6:]}", owner_id)
    doc: dict[str, Any] = store.new_document(new, creds, account_id, now or dt.datetime.now(dt.UTC))
    if not with_outbox:
        doc["outbox"] = []
        doc["has_outbox"] = False
    return doc


def oauth_credentials(refresh_token: str, expires_at: dt.datetime, refresh_at: dt.datetime) -> Credentials:
    return Credentials(
        values={
            "oauth_access_token": "at0_" + secrets.token_urlsafe(30),
            "oauth_token_type": "Bearer",
            "oauth_refresh_token": refresh_token,
        },
        expires_at=expires_at,
        scopes=("read",),
        refresh_at=refresh_at,
    )


@dataclasses.dataclass
class SeedResult:
    ids: list[str]
    seconds: float
    build_seconds: float
    insert_seconds: float

    @property
    def per_second(self) -> float:
        return len(self.ids) / self.seconds if self.seconds else 0.0


async def insert_in_batches(
    db: AsyncDatabase[dict[str, Any]],
    documents: Iterator[dict[str, Any]],
    total: int,
    batch: int = 1000,
) -> SeedResult:
    collection = db["accounts"]
    ids: list[str] = []
    build = insert = 0.0
    started = time.perf_counter()
    while len(ids) < total:
        t0 = time.perf_counter()
        chunk = [next(documents) for _ in range(min(batch, total - len(ids)))]
        t1 = time.perf_counter()
        await collection.insert_many(chunk, ordered=False)
        t2 = time.perf_counter()
        build += t1 - t0
        insert += t2 - t1
        ids.extend(doc["_id"] for doc in chunk)
    return SeedResult(ids, time.perf_counter() - started, build, insert)


async def create_concurrently(
    store: AccountStore,
    workspace_id: str,
    owner_id: str,
    make_creds: Callable[[int], Credentials],
    count: int,
    concurrency: int = 32,
) -> SeedResult:
    """AccountStore.create (one insert_one each), `concurrency` at a time: the API's own write path."""
    ids: list[str] = []
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            new = NewAccount(workspace_id, PROVIDER, "oauth2", f"bench c{i}", owner_id)
            account = await store.create(new, make_creds(i))
            ids.append(account.id)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    elapsed = time.perf_counter() - started
    return SeedResult(ids, elapsed, 0.0, elapsed)


async def drop_database(settings: Settings) -> None:
    client = open_mongo(dataclasses.replace(settings, dependency_timeout=30.0))
    try:
        await client.drop_database(settings.mongo_db)
    finally:
        await client.close()


def run_folder(tag: str) -> Path:
    folder = RUN_DIR / tag
    folder.mkdir(parents=True, exist_ok=True)
    return folder
