"""Credentials at rest: nothing readable in MongoDB, key rotation keeps every account readable, and a
wrong key is a clear error rather than garbage."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import sys
from pathlib import Path

import bson

from service.config import Settings
from service.connections import open_mongo
from service.store.accounts import AccountStore, Credentials, NewAccount
from service.store.keyring import Keyring
from service.store.oauth_apps import OAuthAppStore
from tests.conftest import TEST_KEYS
from tests.support.harness import BrokerHarness

ROOT = Path(__file__).resolve().parents[2]
CANARY = "canary-9f1c2e7a-do-not-leak"


async def test_raw_documents_contain_no_plaintext_secret(broker: BrokerHarness) -> None:
    created = await broker.api(
        "POST",
        "/v1/accounts",
        expect=201,
        json={
            "provider": "fake",
            "credentials": {"oauth_access_token": CANARY, "oauth_refresh_token": CANARY + "-rt"},
            "expires_in": 3600,
        },
    )
    await broker.api(
        "PUT",
        "/v1/oauth-apps/fake",
        expect=200,
        json={"client_id": "cid", "client_secret": CANARY + "-client-secret"},
    )
    client = open_mongo(broker.settings)
    try:
        raw_db = client[broker.settings.mongo_db]
        for collection in ("accounts", "oauth_apps"):
            async for doc in raw_db[collection].find({}):
                encoded = bson.encode(doc)
                assert CANARY.encode() not in encoded, f"plaintext secret in {collection}"
        account = await raw_db["accounts"].find_one({"_id": created["data"]["id"]})
    finally:
        await client.close()
    assert account is not None
    assert set(account["credentials"]) == {"v", "kid", "n", "ct"}
    assert account["credentials"]["kid"] == TEST_KEYS[0].split(":")[0]
    read = await broker.api("GET", f"/v1/accounts/{created['data']['id']}?include_credentials=1", expect=200)
    assert read["data"]["credentials"]["oauth_access_token"] == CANARY


def _env(settings: Settings, keys: str) -> dict[str, str]:
    return {
        **os.environ,
        "BROKER_MONGO_URL": settings.mongo_url,
        "BROKER_MONGO_DB": settings.mongo_db,
        "BROKER_ENCRYPTION_KEYS": keys,
    }


async def _run_rotate(settings: Settings, keys: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        "keys",
        "rotate",
        cwd=ROOT,
        env=_env(settings, keys),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode()


async def test_key_rotation_reencrypts_everything_is_resumable_and_keeps_accounts_readable(
    settings: Settings,
) -> None:
    settings = dataclasses.replace(settings, mongo_db=settings.mongo_db + "_rot")
    old_key = base64.b64encode(os.urandom(32)).decode()
    new_key = base64.b64encode(os.urandom(32)).decode()
    old = Keyring.from_setting(f"old:{old_key}")
    both = Keyring.from_setting(f"new:{new_key},old:{old_key}")
    client = open_mongo(settings)
    try:
        db = client[settings.mongo_db]
        store = AccountStore(db, old)
        accounts = [
            await store.create(
                NewAccount(
                    workspace_id="ws", provider="github", auth_type="oauth2", name=f"a{i}", owner_id="m"
                ),
                Credentials(values={"oauth_access_token": f"token-{i}"}),
            )
            for i in range(6)
        ]
        await OAuthAppStore(db, old).put(
            "ws", "github", client_id="c", client_secret="s3cret", redirect_uri="https://b/cb", scopes=None
        )
        # An interrupted earlier run: two accounts already moved to the new key.
        new_store = AccountStore(db, both)
        for account in accounts[:2]:
            await new_store.replace_credentials(account, Credentials(values=new_store.decrypt(account)))

        code, out = await _run_rotate(settings, f"new:{new_key},old:{old_key}")
        assert code == 0, out
        assert "accounts: 4 to re-encrypt under key 'new'" in out
        assert "oauth_apps: 1 to re-encrypt" in out
        assert "4/4 re-encrypted" in out

        code, out = await _run_rotate(settings, f"new:{new_key},old:{old_key}")
        assert code == 0
        assert "accounts: 0 to re-encrypt" in out

        only_new = Keyring.from_setting(f"new:{new_key}")  # the old key can now be dropped
        for account in accounts:
            fresh = await AccountStore(db, only_new).get("ws", account.id)
            assert fresh is not None
            assert fresh.credentials_blob["kid"] == "new"
            assert AccountStore(db, only_new).decrypt(fresh)["oauth_access_token"].startswith("token-")
        app = await OAuthAppStore(db, only_new).get("ws", "github")
        assert app is not None
        assert app.client_secret == "s3cret"
    finally:
        await client.drop_database(settings.mongo_db)
        await client.close()


async def test_a_wrong_key_is_a_clear_error_not_garbage(settings: Settings, tmp_path: Path) -> None:
    first = BrokerHarness(settings, tmp_path, database=settings.mongo_db + "_wrongkey")
    await first.start()
    try:
        created = await first.api(
            "POST",
            "/v1/accounts",
            expect=201,
            json={"provider": "fake", "credentials": {"oauth_access_token": "tok"}},
        )
    finally:
        await first.stop()
    wrong = ",".join(f"{key.split(':')[0]}:{base64.b64encode(os.urandom(32)).decode()}" for key in TEST_KEYS)
    second = BrokerHarness(
        dataclasses.replace(settings, encryption_keys=wrong),
        tmp_path,
        database=settings.mongo_db + "_wrongkey",
        admin_key=first.admin_key,
    )
    await second.start()
    try:
        body = await second.api(
            "GET", f"/v1/accounts/{created['data']['id']}?include_credentials=1", expect=500
        )
        assert body["error"]["code"] == "credentials_undecryptable"
        listed = await second.api("GET", f"/v1/accounts/{created['data']['id']}", expect=200)
        assert "credentials" not in listed["data"]
    finally:
        await second.stop()


def test_the_broker_refuses_to_start_without_a_key(tmp_path: Path) -> None:
    import subprocess

    result = subprocess.run(
        [sys.executable, "-m", "service", "serve"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "BROKER_ENCRYPTION_KEYS": "", "BROKER_HTTP_PORT": "0"},
    )
    assert result.returncode == 2
    assert "no encryption key configured" in result.stderr


def test_a_bad_provider_file_stops_start_up_naming_file_and_field(tmp_path: Path) -> None:
    import subprocess

    (tmp_path / "broken.yaml").write_text(
        "name: broken\ndisplay_name: x\nauth_type: oauth2\n"
        "oauth2: {authorize_url: 'https://a/x', token_url: 'https://a/t', client_auth: magic}\n"
        "api: {base_url: 'https://a', auth: {style: bearer}}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "service", "serve"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={
            **os.environ,
            "BROKER_ENCRYPTION_KEYS": TEST_KEYS[0],
            "BROKER_EXTRA_PROVIDERS_DIR": str(tmp_path),
        },
    )
    assert result.returncode == 2
    assert "broken.yaml: oauth2.client_auth:" in result.stderr
