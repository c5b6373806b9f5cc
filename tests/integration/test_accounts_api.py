"""The accounts API over real HTTP, with the real MongoDB (FerretDB), Redis and Kafka behind the broker and
the fake provider answering test requests and revocations."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from typing import Any

import pytest

from tests.support.harness import ERROR_URI, SUCCESS_URI, BrokerHarness

ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def unique(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def parse_iso(value: str) -> dt.datetime:
    assert ISO_Z.match(value), value
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


async def connected_account(h: BrokerHarness, **token_body: Any) -> str:
    landed = await h.connect("fake", **token_body)
    assert landed["_target"] == [SUCCESS_URI], landed
    return landed["account_id"][0]


# ---------------------------------------------------------------- listing


async def test_list_filters_by_provider_external_user_and_status(broker: BrokerHarness) -> None:
    user, other = unique(), unique()
    keyed = await broker.import_account(
        provider="fakekeys", external_user_id=user, credentials={"api_key": "key-123"}
    )
    oauth = await broker.import_account(
        provider="fake", external_user_id=user, credentials={"oauth_access_token": "at-imported"}
    )
    await broker.import_account(
        provider="fake", external_user_id=other, credentials={"oauth_access_token": "x"}
    )

    async def ids(**params: str) -> list[str]:
        body = await broker.api("GET", "/v1/accounts", params=params, expect=200)
        assert body["page_info"]["count"] == len(body["data"])
        return [a["id"] for a in body["data"]]

    assert sorted(await ids(external_user_id=user)) == sorted([keyed["id"], oauth["id"]])
    assert await ids(external_user_id=user, provider="fake") == [oauth["id"]]
    assert await ids(external_user_id=user, provider="fakekeys") == [keyed["id"]]
    assert sorted(await ids(external_user_id=user, status="active")) == sorted([keyed["id"], oauth["id"]])
    assert await ids(external_user_id=user, status="revoked") == []
    assert await ids(external_user_id=user, provider="fakepost") == []
    assert await ids(external_user_id=unique("nobody")) == []

    listed = (await broker.api("GET", "/v1/accounts", params={"external_user_id": user}, expect=200))["data"]
    for account in listed:
        assert "credentials" not in account
        assert account["status"] == "active"
        assert account["healthy"] is True


async def test_cursor_pagination_walks_every_account_exactly_once(broker: BrokerHarness) -> None:
    user = unique("paged")
    made = [
        (
            await broker.import_account(
                provider="fakekeys", external_user_id=user, credentials={"api_key": "key-1"}
            )
        )["id"]
        for _ in range(7)
    ]
    seen: list[str] = []
    sizes: list[int] = []
    cursor: str | None = None
    for _ in range(5):
        params = {"external_user_id": user, "limit": "3", **({"cursor": cursor} if cursor else {})}
        body = await broker.api("GET", "/v1/accounts", params=params, expect=200)
        sizes.append(len(body["data"]))
        assert body["page_info"]["count"] == len(body["data"])
        seen += [a["id"] for a in body["data"]]
        cursor = body["page_info"]["next_cursor"]
        if cursor is None:
            break
        assert cursor == seen[-1]
    assert sizes == [3, 3, 1]
    assert cursor is None
    assert len(seen) == len(set(seen)) == 7
    assert sorted(seen) == sorted(made)
    assert seen == sorted(seen)  # ids sort by creation: a stable order for cursors


async def test_page_of_exactly_limit_items_has_no_next_cursor(broker: BrokerHarness) -> None:
    user = unique("exact")
    for _ in range(3):
        await broker.import_account(
            provider="fakekeys", external_user_id=user, credentials={"api_key": "key-1"}
        )
    body = await broker.api(
        "GET", "/v1/accounts", params={"external_user_id": user, "limit": "3"}, expect=200
    )
    assert len(body["data"]) == 3
    assert body["page_info"]["next_cursor"] is None


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("limit=0", "invalid_parameter"),
        ("limit=201", "invalid_parameter"),
        ("limit=abc", "invalid_parameter"),
        ("limit=", "invalid_parameter"),
        ("limit=-1", "invalid_parameter"),
        ("cursor=not-a-cursor", "invalid_cursor"),
        ("cursor=apn_ABC", "invalid_cursor"),
        ("status=deleted", "invalid_parameter"),
        ("status=", "invalid_parameter"),
    ],
)
async def test_bad_list_parameters_are_400(broker: BrokerHarness, query: str, code: str) -> None:
    reply = await broker.call("GET", f"/v1/accounts?{query}")
    assert reply.status == 400
    assert reply.error_code == code
    assert reply.body["error"]["details"]["parameter"] == query.split("=")[0]


# ---------------------------------------------------------------- reading one account


async def test_get_without_include_credentials_has_no_credentials(broker: BrokerHarness) -> None:
    account_id = await connected_account(broker)
    for query in ("", "?include_credentials=0", "?include_credentials=false", "?include_refresh_token=1"):
        reply = await broker.call("GET", f"/v1/accounts/{account_id}{query}")
        assert reply.status == 200
        assert "credentials" not in reply.body["data"], query
        assert reply.body["data"]["id"] == account_id


async def test_get_with_credentials_gives_access_token_and_expiry_but_not_the_refresh_token(
    broker: BrokerHarness,
) -> None:
    account_id = await connected_account(broker)
    for flag in ("1", "true", "yes", "TRUE"):
        reply = await broker.call("GET", f"/v1/accounts/{account_id}?include_credentials={flag}")
        assert reply.status == 200
        assert reply.headers["Cache-Control"] == "no-store"
        data = reply.body["data"]
        creds = data["credentials"]
        assert broker.fake.is_access_token_valid(creds["oauth_access_token"])
        assert creds["oauth_token_type"] == "Bearer"
        assert "oauth_refresh_token" not in creds
        expires = parse_iso(data["expires_at"])
        remaining = (expires - dt.datetime.now(dt.UTC)).total_seconds()
        assert 3500 < remaining <= 3601
        assert parse_iso(data["created_at"]) <= dt.datetime.now(dt.UTC)


async def test_refresh_token_is_served_only_when_asked_for(broker: BrokerHarness) -> None:
    account_id = await connected_account(broker)
    data = await broker.account(account_id, query="?include_credentials=1&include_refresh_token=1")
    refresh = data["credentials"]["oauth_refresh_token"]
    assert refresh in broker.fake.refresh_tokens
    assert broker.fake.refresh_tokens[refresh].active


async def test_bad_boolean_query_flag_is_400(broker: BrokerHarness) -> None:
    account_id = await connected_account(broker)
    for query in ("include_credentials=maybe", "include_credentials=1&include_refresh_token=2"):
        reply = await broker.call("GET", f"/v1/accounts/{account_id}?{query}")
        assert reply.status == 400
        assert reply.error_code == "invalid_parameter"


async def test_imported_token_without_expiry_has_null_expires_at(broker: BrokerHarness) -> None:
    account = await broker.import_account(
        provider="fake", credentials={"oauth_access_token": "at-forever", "oauth_refresh_token": "rt-forever"}
    )
    assert account["expires_at"] is None
    data = await broker.account(account["id"], query="?include_credentials=1")
    assert data["expires_at"] is None
    assert data["credentials"] == {"oauth_access_token": "at-forever", "oauth_token_type": "Bearer"}
    full = await broker.account(account["id"], query="?include_credentials=1&include_refresh_token=1")
    assert full["credentials"]["oauth_refresh_token"] == "rt-forever"


@pytest.mark.parametrize(
    "account_id",
    ["apn_0000000000000000000000000a", "apn_00000000000000000000000000", "nope", "apn_", "acc_1234"],
)
async def test_unknown_or_malformed_account_id_is_404_on_every_route(
    broker: BrokerHarness, account_id: str
) -> None:
    routes: list[tuple[str, str, Any]] = [
        ("GET", f"/v1/accounts/{account_id}", None),
        ("GET", f"/v1/accounts/{account_id}?include_credentials=1", None),
        ("PATCH", f"/v1/accounts/{account_id}", {"name": "x"}),
        ("DELETE", f"/v1/accounts/{account_id}", None),
        ("POST", f"/v1/accounts/{account_id}/test", None),
        (
            "POST",
            f"/v1/accounts/{account_id}/reconnect",
            {"success_redirect_uri": SUCCESS_URI, "error_redirect_uri": ERROR_URI},
        ),
    ]
    for method, path, body in routes:
        reply = await broker.call(method, path, json=body) if body else await broker.call(method, path)
        assert reply.status == 404, (method, path, reply.body)
        assert reply.error_code == "account_not_found"


# ---------------------------------------------------------------- authentication


@pytest.mark.parametrize("api_key", [None, "wrong-key", ""])
async def test_accounts_api_needs_the_api_key(broker: BrokerHarness, api_key: str | None) -> None:
    account = await broker.import_account(provider="fakekeys", credentials={"api_key": "key-123"})
    routes: list[tuple[str, str, Any]] = [
        ("GET", "/v1/accounts", None),
        ("GET", f"/v1/accounts/{account['id']}?include_credentials=1", None),
        ("PATCH", f"/v1/accounts/{account['id']}", {"name": "stolen"}),
        ("DELETE", f"/v1/accounts/{account['id']}", None),
        ("POST", f"/v1/accounts/{account['id']}/test", None),
        ("POST", "/v1/accounts", {"provider": "fakekeys", "credentials": {"api_key": "key-1"}}),
    ]
    for method, path, body in routes:
        kwargs: dict[str, Any] = {"json": body} if body else {}
        reply = await broker.call(method, path, api_key=api_key, **kwargs)
        assert reply.status == 401, (method, path)
        assert reply.error_code == "unauthorized"
        assert "stolen" not in json.dumps(reply.body)
    basic = await broker.call("GET", "/v1/accounts", api_key=None, headers={"Authorization": "Basic eDp5"})
    assert basic.status == 401
    data = await broker.account(account["id"])
    assert data["name"] == "Fake key-based API"  # nothing changed


# ---------------------------------------------------------------- rename


async def test_rename_changes_only_the_name(broker: BrokerHarness) -> None:
    account = await broker.import_account(provider="fakekeys", credentials={"api_key": "key-123"})
    reply = await broker.call("PATCH", f"/v1/accounts/{account['id']}", json={"name": "  Billing key  "})
    assert reply.status == 200
    renamed = reply.body["data"]
    assert renamed["name"] == "Billing key"
    assert renamed["id"] == account["id"]
    assert renamed["version"] == account["version"]
    assert "credentials" not in renamed
    data = await broker.account(account["id"], query="?include_credentials=1")
    assert data["name"] == "Billing key"
    assert data["credentials"] == {"api_key": "key-123"}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"name": "x", "provider": "fake"}, "unknown_field"),
        ({"name": 42}, "invalid_field"),
        ({"name": ""}, "invalid_field"),
        ({"name": "x" * 201}, "invalid_field"),
        ({}, "invalid_field"),
        (["name"], "invalid_field"),
    ],
)
async def test_rename_with_a_bad_body_is_400(broker: BrokerHarness, body: Any, code: str) -> None:
    account = await broker.import_account(provider="fakekeys", credentials={"api_key": "key-123"})
    reply = await broker.call("PATCH", f"/v1/accounts/{account['id']}", json=body)
    assert reply.status == 400
    assert reply.error_code == code
    assert (await broker.account(account["id"]))["name"] == account["name"]


# ---------------------------------------------------------------- delete


async def test_delete_revokes_the_refresh_token_at_the_provider(broker: BrokerHarness) -> None:
    account_id = await connected_account(broker)
    creds = (await broker.account(account_id, query="?include_credentials=1&include_refresh_token=1"))[
        "credentials"
    ]
    before = await broker.count_accounts()

    reply = await broker.call("DELETE", f"/v1/accounts/{account_id}")
    assert reply.status == 200
    assert reply.body["data"] == {"id": account_id, "deleted": True, "revocation": {"status": "revoked"}}

    call = broker.fake.revoke_calls[-1]
    assert call.outcome == "ok"
    assert call.token == creds["oauth_refresh_token"]
    assert call.token_type_hint == "refresh_token"
    assert call.client_auth_used == "client_secret_basic"
    assert not broker.fake.is_access_token_valid(creds["oauth_access_token"])  # the grant went with it

    assert await broker.count_accounts() == before - 1
    gone = await broker.call("GET", f"/v1/accounts/{account_id}")
    assert gone.status == 404
    assert gone.error_code == "account_not_found"
    again = await broker.call("DELETE", f"/v1/accounts/{account_id}")
    assert again.status == 404


async def test_delete_without_refresh_token_revokes_the_access_token(broker: BrokerHarness) -> None:
    issued = broker.fake.issue_grant(["read"])
    account = await broker.import_account(
        provider="fake", credentials={"oauth_access_token": issued["access_token"]}
    )
    reply = await broker.call("DELETE", f"/v1/accounts/{account['id']}")
    assert reply.body["data"]["revocation"] == {"status": "revoked"}
    call = broker.fake.revoke_calls[-1]
    assert call.token == issued["access_token"]
    assert call.token_type_hint == "access_token"
    assert not broker.fake.is_access_token_valid(issued["access_token"])


async def test_delete_still_deletes_when_the_revocation_endpoint_is_down(broker: BrokerHarness) -> None:
    account_id = await connected_account(broker)
    await broker.fake.stop()
    reply = await broker.call("DELETE", f"/v1/accounts/{account_id}")
    assert reply.status == 200
    data = reply.body["data"]
    assert data["deleted"] is True
    assert data["revocation"]["status"] == "failed"
    assert data["revocation"]["detail"]
    assert (await broker.call("GET", f"/v1/accounts/{account_id}")).status == 404


async def test_delete_still_deletes_when_the_provider_refuses_the_revocation(broker: BrokerHarness) -> None:
    account_id = await connected_account(broker)
    broker.fake.client_secret = "rotated-at-the-provider"
    reply = await broker.call("DELETE", f"/v1/accounts/{account_id}")
    assert reply.status == 200
    assert reply.body["data"]["revocation"] == {
        "status": "failed",
        "detail": "revocation endpoint answered 401",
    }
    assert broker.fake.revoke_calls[-1].outcome == "invalid_client"
    assert (await broker.call("GET", f"/v1/accounts/{account_id}")).status == 404


async def test_delete_of_a_key_account_reports_revocation_not_supported(broker: BrokerHarness) -> None:
    account = await broker.import_account(provider="fakekeys", credentials={"api_key": "key-123"})
    reply = await broker.call("DELETE", f"/v1/accounts/{account['id']}")
    assert reply.body["data"]["revocation"] == {"status": "not_supported"}
    assert broker.fake.revoke_calls == []


async def test_delete_of_an_account_whose_provider_has_no_revocation_endpoint(broker: BrokerHarness) -> None:
    account = await broker.import_account(provider="fakepost", credentials={"oauth_access_token": "at-1"})
    reply = await broker.call("DELETE", f"/v1/accounts/{account['id']}")
    assert reply.body["data"]["revocation"] == {"status": "not_supported"}
    assert broker.fake.revoke_calls == []


# ---------------------------------------------------------------- import


async def test_import_oauth_tokens_with_expires_in(broker: BrokerHarness) -> None:
    issued = broker.fake.issue_grant(["read", "profile"])
    user = unique()
    account = await broker.import_account(
        provider="fake",
        name="Imported from Vault",
        external_user_id=user,
        credentials={
            "oauth_access_token": issued["access_token"],
            "oauth_refresh_token": issued["refresh_token"],
        },
        expires_in=1800,
        scopes=["read", "profile"],
        metadata={"source": "vault", "tenant": 7},
    )
    assert account["id"].startswith("apn_")
    assert account["name"] == "Imported from Vault"
    assert account["provider"] == "fake"
    assert account["auth_type"] == "oauth2"
    assert account["external_user_id"] == user
    assert account["owner_id"] == broker.owner.id
    assert account["status"] == "active"
    assert account["version"] == 1
    assert account["scopes"] == ["read", "profile"]
    assert account["metadata"] == {"source": "vault", "tenant": 7}
    assert "credentials" not in account
    remaining = (parse_iso(account["expires_at"]) - dt.datetime.now(dt.UTC)).total_seconds()
    assert 1790 < remaining <= 1801

    data = await broker.account(account["id"], query="?include_credentials=1&include_refresh_token=1")
    assert data["credentials"] == {
        "oauth_access_token": issued["access_token"],
        "oauth_refresh_token": issued["refresh_token"],
        "oauth_token_type": "Bearer",
    }
    assert data["expires_at"] == account["expires_at"]


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("2031-05-06T07:08:09Z", "2031-05-06T07:08:09Z"),
        ("2031-05-06T09:08:09+02:00", "2031-05-06T07:08:09Z"),
        ("2031-05-06T07:08:09.750Z", "2031-05-06T07:08:09Z"),
    ],
)
async def test_import_oauth_tokens_with_expires_at(broker: BrokerHarness, given: str, stored: str) -> None:
    account = await broker.import_account(
        provider="fake",
        credentials={"oauth_access_token": "at-dated", "oauth_token_type": "bearer"},
        expires_at=given,
    )
    assert account["expires_at"] == stored
    data = await broker.account(account["id"], query="?include_credentials=1")
    assert data["expires_at"] == stored
    assert data["credentials"] == {"oauth_access_token": "at-dated", "oauth_token_type": "bearer"}


async def test_import_key_based_credentials_with_verification(broker: BrokerHarness) -> None:
    account = await broker.import_account(
        provider="fakekeys", credentials={"api_key": "key-123"}, verify=True, external_user_id=unique()
    )
    assert account["auth_type"] == "api_key"
    assert account["expires_at"] is None
    data = await broker.account(account["id"], query="?include_credentials=1")
    assert data["credentials"] == {"api_key": "key-123"}


async def test_import_with_templated_connection_settings(broker: BrokerHarness) -> None:
    account = await broker.import_account(
        provider="fakeshop",
        credentials={"oauth_access_token": "at-shop"},
        connection_settings={"shop": "imported-shop"},
    )
    assert account["connection_settings"] == {"shop": "imported-shop"}
    reply = await broker.call(
        "POST",
        "/v1/accounts",
        json={
            "provider": "fakeshop",
            "credentials": {"oauth_access_token": "at-shop"},
            "connection_settings": {"shop": "Bad Shop"},
        },
    )
    assert reply.status == 400
    assert reply.error_code == "invalid_connection_settings"
    missing = await broker.call(
        "POST", "/v1/accounts", json={"provider": "fakeshop", "credentials": {"oauth_access_token": "a"}}
    )
    assert missing.status == 400
    assert missing.error_code == "invalid_connection_settings"


async def test_import_with_verify_and_a_working_oauth_token(broker: BrokerHarness) -> None:
    issued = broker.fake.issue_grant(["read"])
    account = await broker.import_account(
        provider="fake", credentials={"oauth_access_token": issued["access_token"]}, verify=True
    )
    assert account["provider"] == "fake"


@pytest.mark.parametrize(
    ("provider", "credentials"),
    [
        ("fakekeys", {"api_key": "key-999"}),
        ("fake", {"oauth_access_token": "at-unknown-to-the-provider"}),
    ],
)
async def test_import_with_verify_and_a_rejected_credential_is_422_and_stores_nothing(
    broker: BrokerHarness, provider: str, credentials: dict[str, str]
) -> None:
    before = await broker.count_accounts()
    reply = await broker.call(
        "POST", "/v1/accounts", json={"provider": provider, "credentials": credentials, "verify": True}
    )
    assert reply.status == 422
    assert reply.error_code == "verification_failed"
    assert "401" in reply.body["error"]["message"]
    assert await broker.count_accounts() == before


async def test_import_with_verify_when_the_provider_is_down_is_422(broker: BrokerHarness) -> None:
    await broker.fake.stop()
    reply = await broker.call(
        "POST",
        "/v1/accounts",
        json={"provider": "fakekeys", "credentials": {"api_key": "key-123"}, "verify": True},
    )
    assert reply.status == 422
    assert reply.error_code == "verification_failed"


@pytest.mark.parametrize(
    ("provider", "credentials"),
    [
        ("fakekeys", {"token": "key-123"}),
        ("fakekeys", {"api_key": "key-123", "extra": "x"}),
        ("fakekeys", {"api_key": "not-a-key!"}),
        ("fake", {"api_key": "key-123"}),
        ("fake", {"oauth_refresh_token": "rt-only"}),
        ("fake", {"oauth_access_token": "at", "password": "x"}),
    ],
)
async def test_import_with_the_wrong_credential_fields_is_400(
    broker: BrokerHarness, provider: str, credentials: dict[str, str]
) -> None:
    before = await broker.count_accounts()
    reply = await broker.call("POST", "/v1/accounts", json={"provider": provider, "credentials": credentials})
    assert reply.status == 400
    assert reply.error_code == "invalid_credentials"
    assert reply.body["error"]["details"] == {"field": "credentials"}
    assert await broker.count_accounts() == before


async def test_import_for_an_unknown_provider_is_404(broker: BrokerHarness) -> None:
    reply = await broker.call(
        "POST", "/v1/accounts", json={"provider": "no-such-provider", "credentials": {"api_key": "x"}}
    )
    assert reply.status == 404
    assert reply.error_code == "unknown_provider"


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ({"expires_at": "2031-05-06T07:08:09"}, "invalid_field"),  # no time zone
        ({"expires_at": "next tuesday"}, "invalid_field"),
        ({"expires_at": "2031-05-06T07:08:09Z", "expires_in": 60}, "invalid_field"),
        ({"expires_in": 0}, "invalid_field"),
        ({"expires_in": "3600"}, "invalid_field"),
        ({"scopes": "read"}, "invalid_field"),
        ({"verify": "yes"}, "invalid_field"),
        ({"owner_id": "someone-else"}, "unknown_field"),
        ({"status": "revoked"}, "unknown_field"),
    ],
)
async def test_import_with_a_bad_field_is_400(
    broker: BrokerHarness, extra: dict[str, Any], code: str
) -> None:
    before = await broker.count_accounts()
    body = {"provider": "fake", "credentials": {"oauth_access_token": "at"}, **extra}
    reply = await broker.call("POST", "/v1/accounts", json=body)
    assert reply.status == 400, reply.body
    assert reply.error_code == code
    assert await broker.count_accounts() == before


@pytest.mark.parametrize("metadata", [{"$where": "1"}, {"team.id": "T1"}, {"x": {"$gt": 1}}])
async def test_import_with_metadata_keys_the_database_cannot_store_is_400(
    broker: BrokerHarness, metadata: dict[str, Any]
) -> None:
    before = await broker.count_accounts()
    body = {"provider": "fakekeys", "credentials": {"api_key": "key-1"}, "metadata": metadata}
    reply = await broker.call("POST", "/v1/accounts", json=body)
    assert reply.status == 400, reply.body
    assert reply.error_code == "invalid_field"
    assert await broker.count_accounts() == before


# ---------------------------------------------------------------- request bodies


async def test_body_that_is_not_json_is_400_invalid_json(broker: BrokerHarness) -> None:
    for raw in (b"{not json", b"", b"\xff\xfe"):
        reply = await broker.call(
            "POST", "/v1/accounts", data=raw, headers={"Content-Type": "application/json"}
        )
        assert reply.status == 400
        assert reply.error_code == "invalid_json"


async def test_json_that_is_not_an_object_is_400(broker: BrokerHarness) -> None:
    for document in ([], "x", 5, None):
        reply = await broker.call(
            "POST", "/v1/accounts", data=json.dumps(document), headers={"Content-Type": "application/json"}
        )
        assert reply.status == 400
        assert reply.error_code == "invalid_field"


async def test_body_with_another_content_type_is_415(broker: BrokerHarness) -> None:
    account = await broker.import_account(provider="fakekeys", credentials={"api_key": "key-123"})
    body = json.dumps({"provider": "fakekeys", "credentials": {"api_key": "key-1"}})
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        reply = await broker.call("POST", "/v1/accounts", data=body, headers={"Content-Type": content_type})
        assert reply.status == 415
        assert reply.error_code == "unsupported_media_type"
    patch = await broker.call("PATCH", f"/v1/accounts/{account['id']}", data="name=x")
    assert patch.status == 415
    assert patch.error_code == "unsupported_media_type"


async def test_body_over_256_kib_is_413_json(broker: BrokerHarness) -> None:
    before = await broker.count_accounts()
    big = {"provider": "fakekeys", "credentials": {"api_key": "key-1"}, "name": "x" * (257 * 1024)}
    reply = await broker.call("POST", "/v1/accounts", json=big)
    assert reply.status == 413
    assert reply.content_type == "application/json"
    assert reply.error_code == "request_entity_too_large"
    assert await broker.count_accounts() == before


# ---------------------------------------------------------------- test request


async def test_test_request_reports_ok_then_not_ok_after_the_token_expires(broker: BrokerHarness) -> None:
    account_id = await connected_account(broker)
    token = (await broker.account(account_id, query="?include_credentials=1"))["credentials"][
        "oauth_access_token"
    ]
    reply = await broker.call("POST", f"/v1/accounts/{account_id}/test")
    assert reply.status == 200
    assert reply.body["data"] == {"ok": True, "status": 200, "expected_status": 200, "detail": None}

    broker.fake.expire_access_token(token)
    reply = await broker.call("POST", f"/v1/accounts/{account_id}/test")
    assert reply.status == 200
    assert reply.body["data"]["ok"] is False
    assert reply.body["data"]["status"] == 401


async def test_test_request_uses_the_key_the_provider_expects(broker: BrokerHarness) -> None:
    good = await broker.import_account(provider="fakekeys", credentials={"api_key": "key-123"})
    bad = await broker.import_account(provider="fakekeys", credentials={"api_key": "key-000"})
    assert (await broker.api("POST", f"/v1/accounts/{good['id']}/test", expect=200))["data"]["ok"] is True
    result = (await broker.api("POST", f"/v1/accounts/{bad['id']}/test", expect=200))["data"]
    assert result["ok"] is False
    assert result["status"] == 401


async def test_test_request_when_the_provider_is_down_reports_not_ok(broker: BrokerHarness) -> None:
    account = await broker.import_account(provider="fakekeys", credentials={"api_key": "key-123"})
    await broker.fake.stop()
    result = (await broker.api("POST", f"/v1/accounts/{account['id']}/test", expect=200))["data"]
    assert result["ok"] is False
    assert result["status"] is None
    assert "unreachable" in result["detail"]


async def test_test_request_for_a_provider_without_one_is_409(broker: BrokerHarness) -> None:
    account = await broker.import_account(provider="fakepost", credentials={"oauth_access_token": "at-1"})
    reply = await broker.call("POST", f"/v1/accounts/{account['id']}/test")
    assert reply.status == 409
    assert reply.error_code == "no_test_request"


# ---------------------------------------------------------------- reconnect and workspaces


async def test_reconnect_with_a_bad_body_is_400(broker: BrokerHarness) -> None:
    account = await broker.import_account(provider="fake", credentials={"oauth_access_token": "at-1"})
    for body, code in (
        ({"success_redirect_uri": SUCCESS_URI}, "invalid_field"),
        (
            {"success_redirect_uri": SUCCESS_URI, "error_redirect_uri": ERROR_URI, "provider": "fakepost"},
            "unknown_field",
        ),
        (
            {"success_redirect_uri": SUCCESS_URI, "error_redirect_uri": ERROR_URI, "expires_in": 5},
            "invalid_field",
        ),
    ):
        reply = await broker.call("POST", f"/v1/accounts/{account['id']}/reconnect", json=body)
        assert reply.status == 400
        assert reply.error_code == code


async def test_accounts_of_another_workspace_are_invisible(broker: BrokerHarness) -> None:
    user = unique("isolated")
    account = await broker.import_account(
        provider="fakekeys", external_user_id=user, credentials={"api_key": "key-123"}
    )
    _, other_owner = await broker.tenancy_of_new_workspace()
    listed = await broker.call("GET", f"/v1/accounts?external_user_id={user}", api_key=other_owner)
    assert listed.status == 200
    assert listed.body["data"] == []
    for method, path in (
        ("GET", f"/v1/accounts/{account['id']}?include_credentials=1"),
        ("DELETE", f"/v1/accounts/{account['id']}"),
        ("POST", f"/v1/accounts/{account['id']}/test"),
    ):
        reply = await broker.call(method, path, api_key=other_owner)
        assert reply.status == 404, (method, path)
        assert reply.error_code == "account_not_found"
    assert (await broker.account(account["id"]))["id"] == account["id"]
