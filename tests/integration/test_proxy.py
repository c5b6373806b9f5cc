"""The proxy over real HTTP: the broker in front of the fake provider's APIs, with the real MongoDB, Redis
and Kafka behind it. The provider sees the account's credential applied its own way and never the caller's
broker key; answers come back as sent (redirects included, never followed); the caller can never move the
request to another host."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from service.connections import open_mongo
from tests.fakes.oauth_provider import TokenFailure, big_body_slice
from tests.support import canary
from tests.support.harness import ADMIN, BrokerHarness, Reply

MIB = 1024 * 1024


# ---------------------------------------------------------------- helpers


async def send(
    broker: BrokerHarness,
    method: str,
    path: str,
    *,
    api_key: str | None = ADMIN,
    base: str | None = None,
    **kwargs: Any,
) -> Reply:
    """One request with the path sent byte for byte (no client-side normalisation of `..` or `%2e`)."""
    headers = CIMultiDict(kwargs.pop("headers", None) or {})
    if api_key is not None:
        headers.setdefault("Authorization", f"Bearer {broker.admin_key if api_key == ADMIN else api_key}")
    url = URL((base or broker.url) + path, encoded=True)
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, headers=headers, allow_redirects=False, **kwargs) as response,
    ):
        raw = await response.read()
        body: Any = raw.decode("utf-8", "replace")
        if response.content_type == "application/json" and raw:
            body = json.loads(raw)
        return Reply(response.status, response.content_type, CIMultiDict(response.headers), body)


async def oauth_account(broker: BrokerHarness) -> tuple[str, dict[str, Any]]:
    """An OAuth account of the fake provider with a live token and a refresh token: (id, token set)."""
    tokens = broker.fake.issue_grant(scopes=("read",))
    account = await broker.import_account(
        provider="fake",
        credentials={
            "oauth_access_token": tokens["access_token"],
            "oauth_refresh_token": tokens["refresh_token"],
        },
        expires_in=3600,
    )
    return account["id"], tokens


async def key_account(broker: BrokerHarness, provider: str = "fakekeys", **credentials: str) -> str:
    account = await broker.import_account(
        provider=provider, credentials=credentials or {"api_key": "key-123"}
    )
    return str(account["id"])


async def audit_entries(broker: BrokerHarness, **query: Any) -> list[dict[str, Any]]:
    await broker.flush_audit()
    client = open_mongo(broker.settings)
    try:
        cursor = client[broker.settings.mongo_db]["audit"].find({"operation": "proxy", **query})
        return [dict(doc) async for doc in cursor]
    finally:
        await client.close()


def presented_secrets(broker: BrokerHarness, headers: CIMultiDict[str]) -> list[str]:
    """Header values the provider received that carry the caller's broker key."""
    return [f"{k}: {v}" for k, v in headers.items() if broker.admin_key in v or "key_" in v]


class Sink:
    """A second host (127.0.0.2) that records every request reaching it: it must get none."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _any(self, request: web.Request) -> web.Response:
        self.hits.append(request.raw_path)
        return web.Response(text="sink")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._any)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.2", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest_asyncio.fixture
async def sink() -> AsyncIterator[Sink]:
    server = Sink()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


# ---------------------------------------------------------------- how the credential is applied


async def test_bearer_account_reaches_the_api_with_its_token_and_never_the_broker_key(
    broker: BrokerHarness,
) -> None:
    account_id, tokens = await oauth_account(broker)
    reply = await send(broker, "GET", f"/v1/proxy/{account_id}/me")
    assert reply.status == 200, reply.body
    assert reply.body["id"] == "user-1"
    seen = broker.fake.last_api_call
    assert seen.path == "/api/me"
    assert seen.headers.getall("Authorization") == [f"Bearer {tokens['access_token']}"]
    assert presented_secrets(broker, seen.headers) == []


async def test_header_style_provider_gets_its_key_header_and_no_authorization(broker: BrokerHarness) -> None:
    account_id = await key_account(broker)
    reply = await send(broker, "GET", f"/v1/proxy/{account_id}/me")
    assert reply.status == 200, reply.body
    assert reply.body == {"id": "key-user", "name": "Key User"}
    seen = broker.fake.last_api_call
    assert seen.path == "/keyed/me"
    assert seen.headers.getall("X-Api-Key") == ["key-123"]
    assert "Authorization" not in seen.headers
    assert presented_secrets(broker, seen.headers) == []


async def test_basic_style_provider_gets_http_basic_and_its_fixed_headers(broker: BrokerHarness) -> None:
    account_id = await key_account(broker, "fakebasic", api_key="key-123", secret="s3cret:with-colon")
    reply = await send(broker, "GET", f"/v1/proxy/{account_id}/me")
    assert reply.status == 200, reply.body
    seen = broker.fake.last_api_call
    expected = base64.b64encode(b"key-123:s3cret:with-colon").decode()
    assert seen.headers.getall("Authorization") == [f"Basic {expected}"]
    assert seen.headers["X-Fake-Version"] == "2024-01"
    assert presented_secrets(broker, seen.headers) == []


async def test_query_style_provider_gets_the_key_as_a_parameter_the_caller_cannot_override(
    broker: BrokerHarness,
) -> None:
    account_id = await key_account(broker, "fakequery", api_key="key-123")
    reply = await send(broker, "GET", f"/v1/proxy/{account_id}/me?x=1&api_key=key-evil&y=a%20b")
    assert reply.status == 200, reply.body
    seen = broker.fake.last_api_call
    assert seen.query == "x=1&y=a%20b&api_key=key-123"
    assert "Authorization" not in seen.headers
    assert "X-Api-Key" not in seen.headers


async def test_post_with_json_body_and_query_string_passes_through_unchanged(broker: BrokerHarness) -> None:
    account_id = await key_account(broker)
    payload = {"name": "Zoë", "items": [1, 2, 3], "nested": {"ok": True}}
    raw = json.dumps(payload).encode()
    reply = await send(
        broker,
        "POST",
        f"/v1/proxy/{account_id}/echo?b=2&a=1&a=%20x&empty=",
        data=raw,
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert reply.status == 201, reply.body
    assert reply.body["method"] == "POST"
    assert reply.body["path"] == "/keyed/echo"
    assert reply.body["query"] == "b=2&a=1&a=%20x&empty="
    assert reply.body["content_type"] == "application/json; charset=utf-8"
    assert json.loads(reply.body["body"]) == payload
    assert broker.fake.last_api_call.body == raw


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
async def test_every_api_method_is_proxied(broker: BrokerHarness, method: str) -> None:
    account_id = await key_account(broker)
    reply = await send(broker, method, f"/v1/proxy/{account_id}/echo", data=b"x=1")
    assert reply.status == 200, reply.body
    assert reply.body["method"] == method
    assert reply.body["body"] == "x=1"


async def test_head_returns_the_providers_headers_without_a_body(broker: BrokerHarness) -> None:
    account_id = await key_account(broker)
    reply = await send(broker, "HEAD", f"/v1/proxy/{account_id}/echo")
    assert reply.status == 200
    assert reply.body == ""
    assert reply.headers["X-Fake-Kept"] == "yes"
    assert broker.fake.last_api_call.method == "HEAD"


async def test_percent_encoded_bytes_reach_the_provider_exactly_as_sent(broker: BrokerHarness) -> None:
    account_id = await key_account(broker)
    reply = await send(broker, "GET", f"/v1/proxy/{account_id}/echo/x%2Fy/caf%C3%A9/%ff;v=1:ok?a=%2F&b")
    assert reply.status == 200, reply.body
    assert reply.body["path"] == "/keyed/echo/x%2Fy/caf%C3%A9/%ff;v=1:ok"
    assert reply.body["query"] == "a=%2F&b"


# ---------------------------------------------------------------- 401: one refresh, one retry


async def test_a_provider_401_refreshes_once_and_retries_once_with_the_body_again(
    broker: BrokerHarness,
) -> None:
    account_id, tokens = await oauth_account(broker)
    before = await broker.account(account_id)
    broker.fake.expire_access_token(tokens["access_token"])  # the broker still believes it is good
    calls_before = len(broker.fake.api_calls)
    reply = await send(
        broker,
        "POST",
        f"/v1/proxy/{account_id}/echo?q=1",
        json={"hello": "world"},
    )
    assert reply.status == 201, reply.body
    assert json.loads(reply.body["body"]) == {"hello": "world"}
    assert len(broker.fake.refresh_calls) == 1
    first, second = broker.fake.api_calls[calls_before:]
    assert first.headers["Authorization"] == f"Bearer {tokens['access_token']}"
    assert second.headers["Authorization"] != first.headers["Authorization"]
    assert first.body == second.body == b'{"hello": "world"}'
    assert second.query == "q=1"
    after = await broker.account(account_id)
    assert after["version"] == before["version"] + 1
    entries = await audit_entries(broker, account_id=account_id)
    assert [(e["method"], e["status"]) for e in entries] == [("POST", 201)]


async def test_a_401_when_the_refresh_fails_is_passed_back_after_one_refresh(broker: BrokerHarness) -> None:
    account_id, tokens = await oauth_account(broker)
    broker.fake.expire_access_token(tokens["access_token"])
    broker.fake.fail_next_token(TokenFailure.INVALID_GRANT)
    calls_before = len(broker.fake.api_calls)
    reply = await send(broker, "GET", f"/v1/proxy/{account_id}/me")
    assert reply.status == 401
    assert reply.body["error"] == "invalid_token"  # the provider's own answer, not a broker error
    assert reply.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert len(broker.fake.refresh_calls) == 1
    assert len(broker.fake.api_calls) == calls_before + 1
    assert (await broker.account(account_id))["status"] == "reauthorization_required"


async def test_a_401_for_an_account_without_refresh_token_is_passed_back_without_refresh(
    broker: BrokerHarness,
) -> None:
    tokens = broker.fake.issue_grant()
    account = await broker.import_account(
        provider="fake", credentials={"oauth_access_token": tokens["access_token"]}
    )
    broker.fake.expire_access_token(tokens["access_token"])
    reply = await send(broker, "GET", f"/v1/proxy/{account['id']}/me")
    assert reply.status == 401
    assert broker.fake.refresh_calls == []


async def test_a_key_account_401_is_passed_back_as_is(broker: BrokerHarness) -> None:
    account_id = await key_account(broker, api_key="key-revoked")
    reply = await send(broker, "GET", f"/v1/proxy/{account_id}/me")
    assert reply.status == 401
    assert reply.body == {"error": "invalid_api_key"}
    assert broker.fake.refresh_calls == []


# ---------------------------------------------------------------- the answer


async def test_a_large_streamed_answer_arrives_intact(broker: BrokerHarness) -> None:
    account_id = await key_account(broker)
    size = 3 * MIB + 12_345
    url = URL(f"{broker.url}/v1/proxy/{account_id}/big?size={size}", encoded=True)
    chunks = 0
    received = bytearray()
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {broker.admin_key}"}) as session,
        session.get(url) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/octet-stream"
        async for chunk in response.content.iter_any():
            chunks += 1
            received += chunk
    assert len(received) == size
    assert bytes(received) == big_body_slice(0, size)
    assert chunks > 1


async def test_hop_by_hop_cookie_and_broker_headers_are_dropped_both_ways(broker: BrokerHarness) -> None:
    account_id = await key_account(broker)
    reply = await send(
        broker,
        "GET",
        f"/v1/proxy/{account_id}/echo",
        headers={
            "Connection": "keep-alive, X-Caller-Hop",
            "X-Caller-Hop": "named in Connection",
            "Keep-Alive": "timeout=30",
            "TE": "trailers",
            "Trailer": "X-Checksum",
            "Proxy-Authorization": "Basic cHJveHk6cHJveHk=",
            "Cookie": "broker_session=abc",
            "X-No-Store": "1",
            "X-Broker-Anything": "internal",
            "X-Request-Id": "req-proxy-123",
            "X-Caller-Kept": "yes",
            "Accept": "application/json",
        },
    )
    assert reply.status == 200, reply.body
    seen = broker.fake.last_api_call.headers
    for name in (
        "X-Caller-Hop",
        "Keep-Alive",
        "TE",
        "Trailer",
        "Proxy-Authorization",
        "Cookie",
        "X-No-Store",
        "X-Broker-Anything",
        "Authorization",
    ):
        assert name not in seen, name
    assert "x-caller-hop" not in seen.get("Connection", "").lower()
    assert seen["X-Caller-Kept"] == "yes"
    assert seen["Accept"] == "application/json"
    assert seen["X-Request-Id"] == "req-proxy-123"
    for name in ("Set-Cookie", "X-Hop-Named", "Keep-Alive", "Proxy-Authenticate"):
        assert name not in reply.headers, name
    assert "x-hop-named" not in reply.headers.get("Connection", "").lower()
    assert reply.headers["X-Fake-Kept"] == "yes"
    assert reply.headers["X-Request-Id"] == "req-proxy-123"


async def test_a_body_over_8_mib_is_refused_with_413_before_reaching_the_provider(
    broker: BrokerHarness,
) -> None:
    account_id = await key_account(broker)
    calls_before = len(broker.fake.api_calls)
    declared = await send(broker, "POST", f"/v1/proxy/{account_id}/echo", data=b"x" * (8 * MIB + 1))
    assert declared.status == 413
    assert declared.error_code == "request_too_large"

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(9):
            yield b"y" * MIB

    streamed = await send(broker, "POST", f"/v1/proxy/{account_id}/echo", data=chunked())
    assert streamed.status == 413
    assert streamed.error_code == "request_too_large"
    assert len(broker.fake.api_calls) == calls_before
    exactly = await send(broker, "POST", f"/v1/proxy/{account_id}/echo", data=b"z" * (8 * MIB))
    assert exactly.status == 201
    assert len(broker.fake.last_api_call.body) == 8 * MIB


async def test_an_unreachable_provider_is_502_and_a_hanging_one_504(broker: BrokerHarness) -> None:
    account_id = await key_account(broker)
    broker.fake.timeout_delay = 5.0
    async with broker.another_instance(http_client_timeout=0.5) as other:
        slow = await send(broker, "GET", f"/v1/proxy/{account_id}/slow", base=other)
    assert slow.status == 504
    assert slow.error_code == "upstream_timeout"
    await broker.fake.stop()
    down = await send(broker, "GET", f"/v1/proxy/{account_id}/me")
    assert down.status == 502
    assert down.error_code == "upstream_unavailable"
    entries = await audit_entries(broker, account_id=account_id)
    assert sorted(e["status"] for e in entries) == [502, 504]


# ---------------------------------------------------------------- external credentials


async def test_external_credentials_reach_the_provider_and_are_stored_nowhere(broker: BrokerHarness) -> None:
    key = f"key-{secrets.token_hex(8)}"
    canary.register(key)
    broker.fake.valid_api_keys.add(key)
    accounts_before = await broker.raw_count("accounts", {})
    reply = await send(
        broker,
        "GET",
        "/v1/proxy/external/fakekeys/me?x=1",
        headers={"X-Broker-Credential-api_key": key},
    )
    assert reply.status == 200, reply.body
    seen = broker.fake.last_api_call
    assert seen.headers.getall("X-Api-Key") == [key]
    assert seen.query == "x=1"
    assert not any(name.lower().startswith("x-broker-") for name in seen.headers)
    assert await broker.raw_count("accounts", {}) == accounts_before
    entries = await audit_entries(broker, provider="fakekeys", account_id=None)
    assert len(entries) == 1
    assert entries[0]["method"] == "GET"
    assert entries[0]["status"] == 200
    assert entries[0]["member_id"] == broker.owner.id
    assert key not in repr(entries[0])
    assert await broker.raw_count("usage", {"account_id": None}) == 0


async def test_external_oauth_token_and_connection_setting_are_used(broker: BrokerHarness) -> None:
    tokens = broker.fake.issue_grant()
    reply = await send(
        broker,
        "GET",
        "/v1/proxy/external/fakeshop/me",
        headers={
            "X-Broker-Credential-oauth_access_token": tokens["access_token"],
            "X-Broker-Setting-shop": "my-shop",
        },
    )
    assert reply.status == 200, reply.body
    assert broker.fake.last_api_call.headers["Authorization"] == f"Bearer {tokens['access_token']}"


@pytest.mark.parametrize(
    ("provider", "headers", "code"),
    [
        ("fakekeys", {}, "invalid_credentials"),
        ("fakekeys", {"X-Broker-Credential-api_key": "not-a-key!"}, "invalid_credentials"),
        (
            "fakekeys",
            {"X-Broker-Credential-api_key": "key-123", "X-Broker-Credential-other": "x"},
            "invalid_credentials",
        ),
        ("fakebasic", {"X-Broker-Credential-api_key": "key-123"}, "invalid_credentials"),
        ("fake", {"X-Broker-Credential-api_key": "key-123"}, "invalid_credentials"),
        ("fakeshop", {"X-Broker-Credential-oauth_access_token": "at-x"}, "invalid_connection_settings"),
        (
            "fakeshop",
            {"X-Broker-Credential-oauth_access_token": "at-x", "X-Broker-Setting-shop": "Bad Shop!"},
            "invalid_connection_settings",
        ),
        (
            "fakekeys",
            {"X-Broker-Credential-api_key": "key-123", "X-Broker-Setting-region": "eu"},
            "invalid_connection_settings",
        ),
    ],
)
async def test_missing_or_malformed_external_credentials_are_400(
    broker: BrokerHarness, provider: str, headers: dict[str, str], code: str
) -> None:
    calls_before = len(broker.fake.api_calls)
    reply = await send(broker, "GET", f"/v1/proxy/external/{provider}/me", headers=headers)
    assert reply.status == 400, reply.body
    assert reply.error_code == code
    assert len(broker.fake.api_calls) == calls_before


async def test_external_proxy_for_an_unknown_provider_is_404(broker: BrokerHarness) -> None:
    reply = await send(broker, "GET", "/v1/proxy/external/nosuch/me")
    assert reply.status == 404
    assert reply.error_code == "unknown_provider"


async def test_external_proxy_needs_the_credentials_read_scope(broker: BrokerHarness) -> None:
    _, key = await broker.member_key("admin", scopes=frozenset({"accounts:read", "accounts:write"}))
    reply = await send(
        broker,
        "GET",
        "/v1/proxy/external/fakekeys/me",
        api_key=key,
        headers={"X-Broker-Credential-api_key": "key-123"},
    )
    assert reply.status == 403
    assert reply.error_code == "insufficient_scope"


# ---------------------------------------------------------------- the host is never the caller's


SSRF_PATHS = [
    "http://127.0.0.2:{port}/x",
    "http:%2F%2F127.0.0.2:{port}/x",
    "https:/127.0.0.2:{port}/x",
    "../token",
    "../../../../token",
    "me/../../token",
    "%2e%2e/token",
    "%2E%2E%2Ftoken",
    ".%2e/.%2e/token",
    "./me",
    "a@127.0.0.2:{port}/x",
    "%40127.0.0.2:{port}/x",
    "/127.0.0.2:{port}/x",
    "%2F127.0.0.2:{port}/x",
    "me//x",
    "a\\127.0.0.2",
    "a%5C127.0.0.2",
    "me%20x",
    "me%09x",
    "me%0d%0aHost:%20127.0.0.2",
    "me%00",
]


@pytest.mark.parametrize("route", ["account", "external"])
async def test_paths_that_could_leave_the_provider_api_are_400(
    broker: BrokerHarness, sink: Sink, route: str
) -> None:
    account_id = await key_account(broker)
    prefix = f"/v1/proxy/{account_id}/" if route == "account" else "/v1/proxy/external/fakekeys/"
    headers = {"X-Broker-Credential-api_key": "key-123"} if route == "external" else {}
    calls_before = len(broker.fake.api_calls)
    for template in SSRF_PATHS:
        path = template.format(port=sink.port)
        reply = await send(broker, "GET", prefix + path, headers=headers)
        assert reply.status == 400, (path, reply.status, reply.body)
        assert reply.error_code == "invalid_proxy_path", path
    assert len(broker.fake.api_calls) == calls_before
    assert sink.hits == []
    assert await audit_entries(broker) == []


async def test_a_provider_redirect_to_another_host_is_passed_back_and_not_followed(
    broker: BrokerHarness, sink: Sink
) -> None:
    account_id = await key_account(broker)
    broker.fake.redirect_target = f"http://127.0.0.2:{sink.port}/x"
    reply = await send(broker, "GET", f"/v1/proxy/{account_id}/redirect")
    assert reply.status == 302
    assert reply.headers["Location"] == f"http://127.0.0.2:{sink.port}/x"
    external = await send(
        broker,
        "GET",
        "/v1/proxy/external/fakekeys/redirect",
        headers={"X-Broker-Credential-api_key": "key-123"},
    )
    assert external.status == 302
    assert sink.hits == []


async def test_an_empty_path_goes_to_the_base_url_itself(broker: BrokerHarness) -> None:
    account_id = await key_account(broker)
    reply = await send(broker, "GET", f"/v1/proxy/{account_id}/")
    assert reply.status == 404  # the fake has nothing at /keyed/: its own plain-text answer, passed on
    assert reply.content_type == "text/plain"


# ---------------------------------------------------------------- access and usage


async def test_a_member_cannot_proxy_through_the_owners_private_account(broker: BrokerHarness) -> None:
    account_id = await key_account(broker)
    _, member = await broker.member_key("member")
    calls_before = len(broker.fake.api_calls)
    reply = await send(broker, "GET", f"/v1/proxy/{account_id}/me", api_key=member)
    assert reply.status == 404
    assert reply.error_code == "account_not_found"
    assert len(broker.fake.api_calls) == calls_before


async def test_a_key_without_credentials_read_gets_403_insufficient_scope(broker: BrokerHarness) -> None:
    account_id = await key_account(broker)
    _, key = await broker.member_key("admin", scopes=frozenset({"accounts:read", "accounts:write"}))
    reply = await send(broker, "GET", f"/v1/proxy/{account_id}/me", api_key=key)
    assert reply.status == 403
    assert reply.error_code == "insufficient_scope"


async def test_an_admin_may_not_proxy_through_a_members_private_account(broker: BrokerHarness) -> None:
    """Seed 002: owners and admins see a member's private account but may not use its credential."""
    _, member = await broker.member_key("member")
    created = await send(
        broker,
        "POST",
        "/v1/accounts",
        api_key=member,
        json={"provider": "fakekeys", "credentials": {"api_key": "key-123"}},
    )
    assert created.status == 201, created.body
    reply = await send(broker, "GET", f"/v1/proxy/{created.body['data']['id']}/me")
    assert reply.status == 403
    assert reply.error_code == "forbidden"


async def test_unknown_and_malformed_account_ids_are_404(broker: BrokerHarness) -> None:
    for account_id in ("apn_00000000000000000000000000", "not-an-id", "external"):
        reply = await send(broker, "GET", f"/v1/proxy/{account_id}/me")
        assert reply.status == 404, account_id
        assert reply.error_code == "account_not_found"
    unauthenticated = await send(broker, "GET", "/v1/proxy/apn_00000000000000000000000000/me", api_key=None)
    assert unauthenticated.status == 401


async def test_a_member_proxies_through_a_shared_account_and_usage_shows_it(broker: BrokerHarness) -> None:
    account_id = await key_account(broker)
    member_id, member = await broker.member_key("member")
    shared = await send(broker, "PUT", f"/v1/accounts/{account_id}/access", json={"sharing": "workspace"})
    assert shared.status == 200, shared.body
    for _ in range(2):
        reply = await send(broker, "GET", f"/v1/proxy/{account_id}/me", api_key=member)
        assert reply.status == 200, reply.body
    assert presented_secrets(broker, broker.fake.last_api_call.headers) == []
    assert member not in repr(broker.fake.last_api_call.headers)
    usage = await send(broker, "GET", f"/v1/accounts/{account_id}/usage")
    assert usage.status == 200
    rows = [row for row in usage.body["data"] if row["member_id"] == member_id]
    assert len(rows) == 1
    assert rows[0]["counts"] == {"proxy": 2}
    assert rows[0]["last_operation"] == "proxy"


async def test_the_audit_entry_names_method_and_status_but_never_path_or_query(
    broker: BrokerHarness,
) -> None:
    account_id = await key_account(broker)
    reply = await send(
        broker, "POST", f"/v1/proxy/{account_id}/echo?ssn=123-45-6789", data=b"card=4111111111111111"
    )
    assert reply.status == 201
    (entry,) = await audit_entries(broker, account_id=account_id)
    assert (entry["method"], entry["status"]) == ("POST", 201)
    flat = repr(entry)
    for secret in ("echo", "ssn", "123-45-6789", "4111111111111111"):
        assert secret not in flat
