"""`python -m service keys rotate`: re-encrypts every secret under the newest key.

Resumable by construction: it only touches blobs whose key id is not the primary one, and each rewrite is
a compare-and-swap on the old blob, so a concurrent credential refresh always wins and is never undone."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from pymongo.asynchronous.collection import AsyncCollection

from service.store.accounts import credentials_aad
from service.store.keyring import Keyring, KeyringError
from service.store.oauth_apps import secret_aad
from service.store.write_guard import NO_GUARD, AccountWriteGuard

BATCH = 200


async def _rotate_collection(
    collection: AsyncCollection[dict[str, Any]],
    keyring: Keyring,
    field: str,
    aad_for: Any,
    out: TextIO,
    guard: AccountWriteGuard = NO_GUARD,
) -> tuple[int, int]:
    query = {field: {"$exists": True}, f"{field}.kid": {"$ne": keyring.primary_kid}}
    total = await collection.count_documents(query)
    done = failed = 0
    print(f"{collection.name}: {total} to re-encrypt under key {keyring.primary_kid!r}", file=out)
    last_id: Any = None
    while True:
        page_query = dict(query) if last_id is None else {**query, "_id": {"$gt": last_id}}
        batch = (
            await collection.find(page_query, projection={field: 1, "workspace_id": 1, "provider": 1})
            .sort("_id", 1)
            .limit(BATCH)
            .to_list(None)
        )
        if not batch:
            break
        for doc in batch:
            last_id = doc["_id"]
            old = doc[field]
            try:
                plaintext = keyring.decrypt(old, aad_for(doc))
            except KeyringError as exc:
                failed += 1
                print(f"  {doc['_id']}: cannot decrypt ({exc})", file=out)
                continue
            new = keyring.encrypt(plaintext, aad_for(doc))
            # compare-and-swap on the exact old blob: a refresh that rewrote it meanwhile wins
            async with guard.hold(doc["_id"]):
                await collection.update_one(
                    {"_id": doc["_id"], f"{field}.n": old["n"]}, {"$set": {field: new}}
                )
            done += 1
        print(f"  {done}/{total} re-encrypted", file=out)
    return done, failed


async def rotate(
    db: Any, keyring: Keyring, out: TextIO = sys.stdout, guard: AccountWriteGuard = NO_GUARD
) -> int:
    a_done, a_failed = await _rotate_collection(
        db["accounts"], keyring, "credentials", lambda d: credentials_aad(d["_id"]), out, guard
    )
    o_done, o_failed = await _rotate_collection(
        db["oauth_apps"],
        keyring,
        "client_secret",
        lambda d: secret_aad(d["workspace_id"], d["provider"]),
        out,
    )
    print(f"done: {a_done + o_done} re-encrypted, {a_failed + o_failed} could not be decrypted", file=out)
    return 1 if a_failed + o_failed else 0
