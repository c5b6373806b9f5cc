"""The access tables enforced over HTTP with real member keys, plus scopes, key life cycle and
workspace isolation."""

from __future__ import annotations

from typing import Any

import pytest

from service.access import Operation
from tests.support.harness import ERROR_URI, SUCCESS_URI, BrokerHarness
from tests.unit.test_access import PRIVATE_TABLE, SHARED_TABLE


async def _request(broker: BrokerHarness, key: str, operation: Operation, account_id: str) -> int:
    """Performs the broker operation that stands for one row of the seed's table; returns the status."""
    path = f"/v1/accounts/{account_id}"
    calls: dict[Operation, tuple[str, str, Any]] = {
        Operation.VIEW: ("GET", path, None),
        Operation.USE_CREDENTIALS: ("GET", path + "?include_credentials=1", None),
        Operation.MODIFY: ("PATCH", path, {"name": "renamed"}),
        Operation.TEST: ("POST", path + "/test", None),
        Operation.MANAGE_ACCESS: ("GET", "", None),  # replaced below: needs the current sharing
        Operation.RECONNECT: (
            "POST",
            path + "/reconnect",
            {"success_redirect_uri": SUCCESS_URI, "error_redirect_uri": ERROR_URI},
        ),
        Operation.DELETE: ("DELETE", path, None),
    }
    method, url, body = calls[operation]
    if operation == Operation.MANAGE_ACCESS:
        current = (await broker.account(account_id))["sharing"]
        method, url = "PUT", path + "/access"
        body = {"sharing": current if isinstance(current, str) else {"members": current}}
    reply = (
        await broker.call(method, url, api_key=key, json=body)
        if body is not None
        else await broker.call(method, url, api_key=key)
    )
    return reply.status


async def _setup(broker: BrokerHarness) -> dict[str, tuple[str, str]]:
    return {
        "connector": await broker.member_key("member"),
        "admin": await broker.member_key("admin"),
        "member": await broker.member_key("member"),
    }


async def _account_of(broker: BrokerHarness, key: str, sharing: Any) -> str:
    reply = await broker.call(
        "POST",
        "/v1/accounts",
        api_key=key,
        json={"provider": "fakekeys", "credentials": {"api_key": "key-123"}},
    )
    assert reply.status == 201, reply.body
    account_id: str = reply.body["data"]["id"]
    if sharing != "private":
        shared = await broker.call(
            "PUT", f"/v1/accounts/{account_id}/access", api_key=key, json={"sharing": sharing}
        )
        assert shared.status == 200, shared.body
    return account_id


@pytest.mark.parametrize(("operation", "admins", "members"), PRIVATE_TABLE)
async def test_private_accounts_follow_the_seed_table(
    broker: BrokerHarness, operation: Operation, admins: bool, members: bool
) -> None:
    people = await _setup(broker)
    for who, allowed in (("admin", admins), ("member", members)):
        account_id = await _account_of(broker, people["connector"][1], "private")
        status = await _request(broker, people[who][1], operation, account_id)
        if allowed:
            assert status in (200, 201), (who, operation, status)
        else:
            hidden = who == "member"  # a member cannot even see a private account: it does not exist for them
            assert status == (404 if hidden else 403), (who, operation, status)
    # the member who connected it may do it
    account_id = await _account_of(broker, people["connector"][1], "private")
    assert await _request(broker, people["connector"][1], operation, account_id) in (200, 201)


@pytest.mark.parametrize(("operation", "admins", "members"), SHARED_TABLE)
@pytest.mark.parametrize("how", ["workspace", "named"])
async def test_shared_accounts_follow_the_seed_table(
    broker: BrokerHarness, operation: Operation, admins: bool, members: bool, how: str
) -> None:
    people = await _setup(broker)
    sharing: Any = "workspace" if how == "workspace" else {"members": [people["member"][0]]}
    for who, allowed in (("admin", admins), ("member", members)):
        account_id = await _account_of(broker, people["connector"][1], sharing)
        status = await _request(broker, people[who][1], operation, account_id)
        assert (status in (200, 201)) is allowed, (who, operation, status)
        if not allowed:
            assert status == 403


async def test_lists_show_only_what_a_member_may_view(broker: BrokerHarness) -> None:
    people = await _setup(broker)
    private = await _account_of(broker, people["connector"][1], "private")
    shared = await _account_of(broker, people["connector"][1], "workspace")
    named = await _account_of(broker, people["connector"][1], {"members": [people["member"][0]]})
    ids = lambda reply: {a["id"] for a in reply.body["data"]}  # noqa: E731
    assert ids(await broker.call("GET", "/v1/accounts?limit=200", api_key=people["member"][1])) == {
        shared,
        named,
    }
    assert {private, shared, named} <= ids(
        await broker.call("GET", "/v1/accounts?limit=200", api_key=people["admin"][1])
    )
    third = await broker.member_key("member")
    assert ids(await broker.call("GET", "/v1/accounts?limit=200", api_key=third[1])) == {shared}


async def test_new_accounts_are_private_and_owned_by_who_connected_them(broker: BrokerHarness) -> None:
    member_id, key = await broker.member_key("member")
    token = await broker.call(
        "POST",
        "/v1/connect/tokens",
        api_key=key,
        json={
            "provider": "fake",
            "success_redirect_uri": SUCCESS_URI,
            "error_redirect_uri": ERROR_URI,
        },
    )
    response = await broker.follow(token.body["connect_url"])
    account_id = response.headers["Location"].split("account_id=")[1]
    account = await broker.account(account_id)
    assert account["owner_id"] == member_id
    assert account["sharing"] == "private"


async def test_scopes_bound_every_call(broker: BrokerHarness) -> None:
    _, read_only = await broker.member_key("member", frozenset({"accounts:read"}))
    account_id = await _account_of(broker, broker.admin_key, "workspace")
    assert (await broker.call("GET", f"/v1/accounts/{account_id}", api_key=read_only)).status == 200
    for method, path, body in (
        ("GET", f"/v1/accounts/{account_id}?include_credentials=1", None),
        ("PATCH", f"/v1/accounts/{account_id}", {"name": "x"}),
        ("POST", "/v1/accounts", {"provider": "fakekeys", "credentials": {"api_key": "key-123"}}),
        (
            "POST",
            "/v1/connect/tokens",
            {"success_redirect_uri": SUCCESS_URI, "error_redirect_uri": ERROR_URI},
        ),
        ("PUT", "/v1/oauth-apps/fake", {"client_id": "a", "client_secret": "b"}),
    ):
        reply = await broker.call(method, path, api_key=read_only, json=body)
        assert reply.status == 403, (method, path, reply.body)
        assert reply.error_code in ("insufficient_scope", "forbidden")


async def test_api_keys_are_shown_once_hashed_and_can_expire_and_be_revoked(broker: BrokerHarness) -> None:
    created = await broker.call("POST", "/v1/api-keys", json={"scopes": ["accounts:read"], "name": "ci"})
    assert created.status == 201
    key = created.body["data"]["key"]
    key_id = created.body["data"]["id"]
    assert (await broker.call("GET", "/v1/accounts", api_key=key)).status == 200
    listed = await broker.call("GET", "/v1/api-keys")
    assert all("key" not in k for k in listed.body["data"])
    revoked = await broker.call("DELETE", f"/v1/api-keys/{key_id}")
    assert revoked.status == 200
    reply = await broker.call("GET", "/v1/accounts", api_key=key)
    assert reply.status == 401
    assert reply.error_code == "unauthorized"
    # a key cannot grant more than it holds
    weak = await broker.call("POST", "/v1/api-keys", json={"scopes": ["accounts:read"]})
    stronger = await broker.call(
        "POST",
        "/v1/api-keys",
        api_key=weak.body["data"]["key"],
        json={"scopes": ["accounts:read", "credentials:read"]},
    )
    assert stronger.status == 403
    # wrong secret for a real key id, malformed keys
    for bad in (key_id + ".AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "nope", "key_x.y", ""):
        assert (await broker.call("GET", "/v1/accounts", api_key=bad or None)).status == 401


async def test_an_expired_key_is_refused(broker: BrokerHarness) -> None:
    import datetime as dt

    member_id, _ = await broker.member_key("member")
    member = await broker.tenancy_member(member_id)
    _, expired = await broker.tenancy.issue_key(
        member, frozenset({"accounts:read"}), expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    )
    reply = await broker.call("GET", "/v1/accounts", api_key=expired)
    assert reply.status == 401


async def test_stored_keys_are_only_hashes(broker: BrokerHarness) -> None:
    created = await broker.call("POST", "/v1/api-keys", json={"scopes": ["accounts:read"]})
    secret = created.body["data"]["key"].split(".", 1)[1]
    stored = await broker.raw_document("api_keys", created.body["data"]["id"])
    assert secret not in str(stored)
    assert len(stored["hash"]) == 64


async def test_members_cannot_manage_members_or_other_peoples_keys(broker: BrokerHarness) -> None:
    _, member = await broker.member_key("member")
    assert (
        await broker.call("POST", "/v1/members", api_key=member, json={"name": "x", "role": "member"})
    ).status == 403
    created = await broker.call("POST", "/v1/members", json={"name": "new admin", "role": "admin"})
    assert created.status == 201
    owner_keys = await broker.call("GET", "/v1/api-keys")
    owner_key_id = owner_keys.body["data"][0]["id"]
    assert (await broker.call("DELETE", f"/v1/api-keys/{owner_key_id}", api_key=member)).status == 403


async def test_deleting_an_end_user_deletes_and_revokes_all_their_accounts(broker: BrokerHarness) -> None:
    user = "end-user-7"
    ids = []
    for _ in range(2):
        token = await broker.connect_token(provider="fake", external_user_id=user)
        response = await broker.follow(token["connect_url"])
        ids.append(response.headers["Location"].split("account_id=")[1])
    other = await broker.connect_token(provider="fake", external_user_id="someone-else")
    kept = (await broker.follow(other["connect_url"])).headers["Location"].split("account_id=")[1]
    reply = await broker.call("DELETE", f"/v1/users/{user}")
    assert reply.status == 200
    assert sorted(d["id"] for d in reply.body["data"]["deleted"]) == sorted(ids)
    assert all(d["revocation"]["status"] == "revoked" for d in reply.body["data"]["deleted"])
    assert (await broker.call("GET", f"/v1/accounts?external_user_id={user}")).body["data"] == []
    assert (await broker.call("GET", f"/v1/accounts/{kept}")).status == 200
    assert len(broker.fake.revoke_calls) == 2


async def test_usage_shows_who_read_the_credential_and_when(broker: BrokerHarness) -> None:
    member_id, key = await broker.member_key("member")
    account_id = await _account_of(broker, broker.admin_key, "workspace")
    for _ in range(3):
        assert (
            await broker.call("GET", f"/v1/accounts/{account_id}?include_credentials=1", api_key=key)
        ).status == 200
    await broker.call("GET", f"/v1/accounts/{account_id}?include_credentials=1")
    usage = await broker.call("GET", f"/v1/accounts/{account_id}/usage")
    rows = {row["member_id"]: row for row in usage.body["data"]}
    assert rows[member_id]["counts"] == {"read_credentials": 3}
    assert rows[member_id]["last_used_at"].endswith("Z")
    assert rows[broker.owner.id]["counts"] == {"read_credentials": 1}
