"""The fake OAuth provider behaves like the RFCs say, over real HTTP on loopback.

These tests pin the fake down so that broker tests built on it test the broker, not the fake.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote_plus, urlsplit

import aiohttp
import pytest
import pytest_asyncio

from tests.fakes.oauth_provider import FakeOAuthProvider, TokenFailure

pytestmark = pytest.mark.asyncio

CLIENT_ID = "demo-client"
CLIENT_SECRET = "demo-secret"
REDIRECT_URI = "http://127.0.0.1:8080/oauth/callback"

MakeFake = Callable[..., Awaitable[FakeOAuthProvider]]


@dataclass
class Flow:
    """A finished authorization step: the code to exchange and what it was bound to."""

    code: str
    verifier: str
    redirect_params: dict[str, str]


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def basic(client_id: str = CLIENT_ID, secret: str = CLIENT_SECRET) -> dict[str, str]:
    # RFC 6749 2.3.1: form-urlencode each part before Base64.
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


@pytest_asyncio.fixture
async def make_fake() -> AsyncIterator[MakeFake]:
    started: list[FakeOAuthProvider] = []

    async def factory(**options: Any) -> FakeOAuthProvider:
        options.setdefault("client_id", CLIENT_ID)
        options.setdefault("client_secret", CLIENT_SECRET)
        options.setdefault("redirect_uris", [REDIRECT_URI])
        provider = FakeOAuthProvider(**options)
        await provider.start(host="127.0.0.1", port=0)
        started.append(provider)
        return provider

    yield factory
    for provider in started:
        await provider.stop()


@pytest_asyncio.fixture
async def fake(make_fake: MakeFake) -> FakeOAuthProvider:
    return await make_fake()


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def authorize(
    http: aiohttp.ClientSession, fake: FakeOAuthProvider, **overrides: str | None
) -> aiohttp.ClientResponse:
    """GET /authorize with sane defaults; a None override drops that parameter."""
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "state": "st-1",
        "scope": "read write",
        "code_challenge_method": "S256",
        **overrides,
    }
    sent = {k: v for k, v in params.items() if v is not None}
    async with http.get(f"{fake.issuer}/authorize", params=sent, allow_redirects=False) as resp:
        await resp.read()
        return resp


async def get_code(http: aiohttp.ClientSession, fake: FakeOAuthProvider, **overrides: str | None) -> Flow:
    verifier, challenge = pkce_pair()
    resp = await authorize(http, fake, code_challenge=challenge, **overrides)
    assert resp.status == 302, resp.status
    params = query_of(resp.headers["Location"])
    return Flow(code=params["code"], verifier=verifier, redirect_params=params)


async def post_token(
    http: aiohttp.ClientSession,
    fake: FakeOAuthProvider,
    data: Mapping[str, str],
    headers: Mapping[str, str] | None = None,
    as_json: bool = False,
) -> tuple[int, Any, aiohttp.ClientResponse]:
    """POST /token (Basic auth unless headers are given); returns status, decoded JSON (or text), response."""
    kwargs: dict[str, Any] = {"json": dict(data)} if as_json else {"data": dict(data)}
    sent_headers = basic() if headers is None else dict(headers)
    async with http.post(
        f"{fake.issuer}/token", headers=sent_headers, allow_redirects=False, **kwargs
    ) as resp:
        text = await resp.text()
        body: Any = await resp.json() if resp.content_type == "application/json" else text
        return resp.status, body, resp


async def exchange(http: aiohttp.ClientSession, fake: FakeOAuthProvider, flow: Flow) -> tuple[int, Any]:
    data = {
        "grant_type": "authorization_code",
        "code": flow.code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": flow.verifier,
    }
    status, body, _ = await post_token(http, fake, data)
    return status, body


async def refresh(
    http: aiohttp.ClientSession, fake: FakeOAuthProvider, token: str, **extra: str
) -> tuple[int, Any]:
    status, body, _ = await post_token(
        http, fake, {"grant_type": "refresh_token", "refresh_token": token, **extra}
    )
    return status, body


async def api_me(http: aiohttp.ClientSession, fake: FakeOAuthProvider, token: str) -> aiohttp.ClientResponse:
    async with http.get(f"{fake.issuer}/api/me", headers={"Authorization": f"Bearer {token}"}) as resp:
        await resp.read()
        return resp


async def tokens(http: aiohttp.ClientSession, fake: FakeOAuthProvider) -> dict[str, Any]:
    status, body = await exchange(http, fake, await get_code(http, fake))
    assert status == 200, body
    assert isinstance(body, dict)
    return body


# --------------------------------------------------------------------------- code flow


async def test_full_code_flow_with_pkce(fake: FakeOAuthProvider, http: aiohttp.ClientSession) -> None:
    state = "a b&c=d/é"
    flow = await get_code(http, fake, state=state, access_type="offline")
    assert flow.redirect_params["state"] == state
    assert flow.redirect_params["iss"] == fake.issuer
    assert fake.last_authorize_params["access_type"] == "offline"

    status, body, resp = await post_token(
        http,
        fake,
        {
            "grant_type": "authorization_code",
            "code": flow.code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": flow.verifier,
        },
    )
    assert status == 200, body
    assert resp.headers["Cache-Control"] == "no-store"
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "read write"
    assert body["refresh_token"]

    me = await api_me(http, fake, body["access_token"])
    assert me.status == 200
    assert (await me.json()) == {"id": "user-1", "name": "Demo User", "scopes": ["read", "write"]}

    call = fake.token_calls[-1]
    assert (call.grant_type, call.outcome, call.client_auth_used) == (
        "authorization_code",
        "ok",
        "client_secret_basic",
    )
    assert fake.access_tokens[body["access_token"]].scopes == ["read", "write"]


async def test_wrong_or_missing_verifier_is_invalid_grant(
    fake: FakeOAuthProvider, http: aiohttp.ClientSession
) -> None:
    flow = await get_code(http, fake)
    flow.verifier = pkce_pair()[0]
    status, body = await exchange(http, fake, flow)
    assert (status, body["error"]) == (400, "invalid_grant")

    flow = await get_code(http, fake)
    data = {"grant_type": "authorization_code", "code": flow.code, "redirect_uri": REDIRECT_URI}
    status, body, _ = await post_token(http, fake, data)
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_pkce_required_and_plain_rejected(fake: FakeOAuthProvider, http: aiohttp.ClientSession) -> None:
    resp = await authorize(http, fake, code_challenge=None)
    assert resp.status == 302
    assert query_of(resp.headers["Location"])["error"] == "invalid_request"

    verifier = pkce_pair()[0]
    resp = await authorize(http, fake, code_challenge=verifier, code_challenge_method="plain")
    params = query_of(resp.headers["Location"])
    assert (params["error"], params["state"], params["iss"]) == ("invalid_request", "st-1", fake.issuer)


async def test_pkce_downgrade_rejected_when_not_required(
    make_fake: MakeFake, http: aiohttp.ClientSession
) -> None:
    fake = await make_fake(require_pkce=False)
    resp = await authorize(http, fake, code_challenge_method=None)
    code = query_of(resp.headers["Location"])["code"]
    # RFC 9700 2.1.1: a verifier for a code that had no challenge is refused.
    status, body = await exchange(http, fake, Flow(code=code, verifier=pkce_pair()[0], redirect_params={}))
    assert body["error"] == "invalid_grant"
    resp = await authorize(http, fake, code_challenge_method=None)
    code = query_of(resp.headers["Location"])["code"]
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI}
    status, body, _ = await post_token(http, fake, data)
    assert status == 200, body


@pytest.mark.parametrize(
    "overrides",
    [
        {"redirect_uri": REDIRECT_URI + "/"},
        {"redirect_uri": REDIRECT_URI + "/extra"},
        {"redirect_uri": "http://127.0.0.1:8080/oauth"},
        {"redirect_uri": None},
        {"client_id": "someone-else"},
    ],
)
async def test_bad_client_or_redirect_uri_is_400_without_redirect(
    fake: FakeOAuthProvider, http: aiohttp.ClientSession, overrides: dict[str, str | None]
) -> None:
    resp = await authorize(http, fake, code_challenge=pkce_pair()[1], **overrides)
    assert resp.status == 400
    assert "Location" not in resp.headers
    assert resp.content_type == "text/html"


async def test_redirect_uris_can_be_changed_later(
    fake: FakeOAuthProvider, http: aiohttp.ClientSession
) -> None:
    other = "http://127.0.0.1:9999/cb?tenant=x"
    fake.redirect_uris = [other]
    resp = await authorize(http, fake, redirect_uri=other, code_challenge=pkce_pair()[1])
    assert resp.status == 302
    assert resp.headers["Location"].startswith(other + "&code=")
    assert (await authorize(http, fake, code_challenge=pkce_pair()[1])).status == 400


async def test_token_redirect_uri_must_match_authorize(
    fake: FakeOAuthProvider, http: aiohttp.ClientSession
) -> None:
    flow = await get_code(http, fake)
    data = {
        "grant_type": "authorization_code",
        "code": flow.code,
        "redirect_uri": REDIRECT_URI + "/",
        "code_verifier": flow.verifier,
    }
    status, body, _ = await post_token(http, fake, data)
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_code_reuse_is_invalid_grant_and_revokes_tokens(
    fake: FakeOAuthProvider, http: aiohttp.ClientSession
) -> None:
    flow = await get_code(http, fake)
    status, first = await exchange(http, fake, flow)
    assert status == 200
    status, body = await exchange(http, fake, flow)
    assert (status, body["error"]) == (400, "invalid_grant")
    assert not fake.is_access_token_valid(first["access_token"])
    assert (await refresh(http, fake, first["refresh_token"]))[1]["error"] == "invalid_grant"


async def test_unsupported_grant_type(fake: FakeOAuthProvider, http: aiohttp.ClientSession) -> None:
    status, body, _ = await post_token(
        http, fake, {"grant_type": "password", "username": "u", "password": "p"}
    )
    assert (status, body["error"]) == (400, "unsupported_grant_type")


async def test_json_token_requests(make_fake: MakeFake, http: aiohttp.ClientSession) -> None:
    fake = await make_fake()
    grant = fake.issue_grant(["read"])
    status, body, _ = await post_token(
        http, fake, {"grant_type": "refresh_token", "refresh_token": grant["refresh_token"]}, as_json=True
    )
    assert status == 200, body
    assert fake.token_calls[-1].content_type == "application/json"

    strict = await make_fake(json_token_requests=False)
    grant = strict.issue_grant(["read"])
    status, body, _ = await post_token(
        http, strict, {"grant_type": "refresh_token", "refresh_token": grant["refresh_token"]}, as_json=True
    )
    assert (status, body["error"]) == (400, "invalid_request")


# ------------------------------------------------------------------------ refresh tokens


async def test_refresh_rotation_and_reuse_revokes_grant(
    fake: FakeOAuthProvider, http: aiohttp.ClientSession
) -> None:
    first = await tokens(http, fake)
    status, second = await refresh(http, fake, first["refresh_token"])
    assert status == 200
    assert second["refresh_token"] != first["refresh_token"]
    assert fake.is_access_token_valid(second["access_token"])

    status, body = await refresh(http, fake, first["refresh_token"])
    assert (status, body["error"]) == (400, "invalid_grant")
    assert fake.reuse_detected == 1
    # RFC 9700 4.14.2: the whole grant dies, including the tokens the legitimate client holds.
    assert not fake.is_access_token_valid(second["access_token"])
    assert (await api_me(http, fake, second["access_token"])).status == 401
    assert (await refresh(http, fake, second["refresh_token"]))[1]["error"] == "invalid_grant"

    assert [c.outcome for c in fake.refresh_calls] == ["ok", "invalid_grant", "invalid_grant"]
    assert fake.refresh_calls[0].refresh_token == first["refresh_token"]


async def test_concurrent_refresh_with_one_token_wins_once(
    fake: FakeOAuthProvider, http: aiohttp.ClientSession
) -> None:
    first = await tokens(http, fake)
    results = await asyncio.gather(*(refresh(http, fake, first["refresh_token"]) for _ in range(2)))
    assert sorted(status for status, _ in results) == [200, 400]
    assert fake.reuse_detected == 1


async def test_reuse_without_grant_revocation(make_fake: MakeFake, http: aiohttp.ClientSession) -> None:
    fake = await make_fake(revoke_grant_on_reuse=False)
    first = await tokens(http, fake)
    _, second = await refresh(http, fake, first["refresh_token"])
    assert (await refresh(http, fake, first["refresh_token"]))[1]["error"] == "invalid_grant"
    assert fake.reuse_detected == 1
    assert fake.is_access_token_valid(second["access_token"])
    assert (await refresh(http, fake, second["refresh_token"]))[0] == 200


async def test_refresh_without_rotation_and_scope_narrowing(
    make_fake: MakeFake, http: aiohttp.ClientSession
) -> None:
    fake = await make_fake(rotate_refresh_tokens=False)
    first = await tokens(http, fake)
    status, body = await refresh(http, fake, first["refresh_token"], scope="read")
    assert status == 200
    assert "refresh_token" not in body  # the client keeps using its old one
    assert body["scope"] == "read"
    assert fake.access_tokens[body["access_token"]].scopes == ["read"]
    status, body = await refresh(http, fake, first["refresh_token"], scope="read admin")
    assert (status, body["error"]) == (400, "invalid_scope")
    assert (await refresh(http, fake, first["refresh_token"]))[0] == 200
    assert fake.reuse_detected == 0


async def test_no_refresh_token_when_disabled(make_fake: MakeFake, http: aiohttp.ClientSession) -> None:
    fake = await make_fake(include_refresh_token=False)
    assert "refresh_token" not in await tokens(http, fake)


async def test_issue_grant_mints_usable_tokens(fake: FakeOAuthProvider, http: aiohttp.ClientSession) -> None:
    grant = fake.issue_grant(scopes=["read"])
    assert set(grant) == {"access_token", "token_type", "expires_in", "refresh_token", "scope"}
    assert (await api_me(http, fake, grant["access_token"])).status == 200
    assert (await refresh(http, fake, grant["refresh_token"]))[0] == 200


# ----------------------------------------------------------------------- client auth


async def test_client_secret_basic_enforced(make_fake: MakeFake, http: aiohttp.ClientSession) -> None:
    fake = await make_fake(client_auth="client_secret_basic")
    grant = fake.issue_grant()
    post_body = {
        "grant_type": "refresh_token",
        "refresh_token": grant["refresh_token"],
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    status, body, resp = await post_token(http, fake, post_body, headers={})
    assert (status, body["error"]) == (401, "invalid_client")
    assert resp.headers["WWW-Authenticate"].startswith("Basic")
    assert fake.token_calls[-1].client_auth_used == "client_secret_post"
    assert (await refresh(http, fake, grant["refresh_token"]))[0] == 200


async def test_client_secret_post_enforced(make_fake: MakeFake, http: aiohttp.ClientSession) -> None:
    fake = await make_fake(client_auth="client_secret_post")
    grant = fake.issue_grant()
    assert (await refresh(http, fake, grant["refresh_token"]))[1]["error"] == "invalid_client"
    post_body = {
        "grant_type": "refresh_token",
        "refresh_token": grant["refresh_token"],
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    status, body, _ = await post_token(http, fake, post_body, headers={})
    assert status == 200, body


async def test_client_auth_failures(make_fake: MakeFake, http: aiohttp.ClientSession) -> None:
    # A secret with reserved characters catches brokers that skip the RFC 6749 2.3.1 urlencoding.
    secret = "s3cr+t/=:&%"
    fake = await make_fake(client_secret=secret)
    grant = fake.issue_grant()
    data = {"grant_type": "refresh_token", "refresh_token": grant["refresh_token"]}
    assert (await post_token(http, fake, data, headers=basic(secret="wrong")))[0] == 401
    assert (await post_token(http, fake, data, headers={}))[0] == 401
    unencoded = base64.b64encode(f"{CLIENT_ID}:{secret}".encode()).decode()
    assert (await post_token(http, fake, data, headers={"Authorization": f"Basic {unencoded}"}))[0] == 401
    both = {**data, "client_id": CLIENT_ID, "client_secret": secret}
    status, body, _ = await post_token(http, fake, both, headers=basic(secret=secret))
    assert (status, body["error"]) == (400, "invalid_request")
    status, body, _ = await post_token(
        http, fake, {**data, "client_id": CLIENT_ID}, headers=basic(secret=secret)
    )
    assert status == 200, body


# ------------------------------------------------------------------ failure injection


@pytest.mark.parametrize(
    ("failure", "expected_status", "expected_error"),
    [
        (TokenFailure.SERVER_ERROR, 500, "server_error"),
        (TokenFailure.INVALID_GRANT, 400, "invalid_grant"),
        (TokenFailure.INVALID_CLIENT, 401, "invalid_client"),
        (TokenFailure.RATE_LIMITED, 429, "temporarily_unavailable"),
    ],
)
async def test_injected_error_responses(
    fake: FakeOAuthProvider,
    http: aiohttp.ClientSession,
    failure: TokenFailure,
    expected_status: int,
    expected_error: str,
) -> None:
    grant = fake.issue_grant()
    fake.fail_next_token(failure, retry_after=2)
    status, body, resp = await post_token(
        http, fake, {"grant_type": "refresh_token", "refresh_token": grant["refresh_token"]}
    )
    assert (status, body["error"]) == (expected_status, expected_error)
    if failure is TokenFailure.RATE_LIMITED:
        assert resp.headers["Retry-After"] == "2"
    assert fake.refresh_calls[-1].outcome == failure.value
    # The fault consumed one call and left the grant untouched, so the same token still works.
    assert (await refresh(http, fake, grant["refresh_token"]))[0] == 200


async def test_injected_garbage_and_missing_access_token(
    fake: FakeOAuthProvider, http: aiohttp.ClientSession
) -> None:
    grant = fake.issue_grant()
    fake.fail_next_token([TokenFailure.GARBAGE, TokenFailure.MISSING_ACCESS_TOKEN])
    data = {"grant_type": "refresh_token", "refresh_token": grant["refresh_token"]}
    status, body, _ = await post_token(http, fake, data)
    assert (status, body) == (200, "<html>oops")
    status, body, _ = await post_token(http, fake, data)
    assert status == 200
    assert "access_token" not in body
    assert body["token_type"] == "Bearer"
    assert [c.outcome for c in fake.token_calls] == ["garbage", "missing_access_token"]


async def test_injected_timeout(fake: FakeOAuthProvider, http: aiohttp.ClientSession) -> None:
    grant = fake.issue_grant()
    fake.timeout_delay = 0.3
    fake.fail_next_token(TokenFailure.TIMEOUT)
    data = {"grant_type": "refresh_token", "refresh_token": grant["refresh_token"]}
    started = time.monotonic()
    status, _, _ = await post_token(http, fake, data)
    assert time.monotonic() - started >= 0.3
    assert status == 503
    assert (await refresh(http, fake, grant["refresh_token"]))[0] == 200


async def test_client_timeout_then_stop_is_fast(make_fake: MakeFake) -> None:
    fake = await make_fake()  # default 30 s delay: stop() must not wait for it
    fake.fail_next_token(TokenFailure.TIMEOUT)
    grant = fake.issue_grant()
    data = {"grant_type": "refresh_token", "refresh_token": grant["refresh_token"]}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.2)) as session:
        with pytest.raises(asyncio.TimeoutError):
            await session.post(f"{fake.issuer}/token", data=data, headers=basic())
    started = time.monotonic()
    await fake.stop()
    assert time.monotonic() - started < 1.5
    assert fake.token_calls[-1].outcome == "timeout"


# ---------------------------------------------------------------- revoke and metadata


async def test_revoke(fake: FakeOAuthProvider, http: aiohttp.ClientSession) -> None:
    first = await tokens(http, fake)
    second = fake.issue_grant()

    async def revoke(token: str, headers: Mapping[str, str] | None = None, **extra: str) -> int:
        sent = basic() if headers is None else dict(headers)
        async with http.post(f"{fake.issuer}/revoke", data={"token": token, **extra}, headers=sent) as resp:
            return resp.status

    assert await revoke(first["access_token"], token_type_hint="access_token") == 200
    assert (await api_me(http, fake, first["access_token"])).status == 401
    assert (await refresh(http, fake, first["refresh_token"]))[0] == 200  # the grant itself survives

    assert (
        await revoke(second["refresh_token"], token_type_hint="access_token") == 200
    )  # a wrong hint is ignored
    assert not fake.is_access_token_valid(second["access_token"])
    assert (await refresh(http, fake, second["refresh_token"]))[1]["error"] == "invalid_grant"

    assert await revoke("never-issued") == 200
    assert await revoke(first["refresh_token"], headers={}) == 401
    assert fake.revoked_tokens == {first["access_token"], second["refresh_token"], "never-issued"}
    assert [c.outcome for c in fake.revoke_calls] == ["ok", "ok", "ok", "invalid_client"]


@pytest.mark.parametrize(
    "path", ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"]
)
async def test_metadata_document(fake: FakeOAuthProvider, http: aiohttp.ClientSession, path: str) -> None:
    async with http.get(fake.issuer + path) as resp:
        doc = await resp.json()
    assert doc["issuer"] == fake.issuer
    assert doc["authorization_endpoint"] == f"{fake.issuer}/authorize"
    assert doc["token_endpoint"] == f"{fake.issuer}/token"
    assert doc["revocation_endpoint"] == f"{fake.issuer}/revoke"
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["token_endpoint_auth_methods_supported"] == ["client_secret_basic", "client_secret_post"]
    assert doc["authorization_response_iss_parameter_supported"] is True
    assert doc["response_types_supported"] == ["code"]
    assert doc["grant_types_supported"] == ["authorization_code", "refresh_token"]
    assert "read" in doc["scopes_supported"]


async def test_iss_can_be_disabled(make_fake: MakeFake, http: aiohttp.ClientSession) -> None:
    fake = await make_fake(issue_iss=False, client_auth="client_secret_post")
    flow = await get_code(http, fake)
    assert "iss" not in flow.redirect_params
    async with http.get(f"{fake.issuer}/.well-known/oauth-authorization-server") as resp:
        doc = await resp.json()
    assert doc["authorization_response_iss_parameter_supported"] is False
    assert doc["token_endpoint_auth_methods_supported"] == ["client_secret_post"]


# --------------------------------------------------------------------------- the APIs


async def test_api_me_rejects_expired_revoked_and_missing(
    fake: FakeOAuthProvider, http: aiohttp.ClientSession
) -> None:
    fake.access_token_ttl = 0
    expired = fake.issue_grant()["access_token"]
    resp = await api_me(http, fake, expired)
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'

    fake.access_token_ttl = 3600
    live = fake.issue_grant()["access_token"]
    assert (await api_me(http, fake, live)).status == 200
    fake.expire_access_token(live)
    assert (await api_me(http, fake, live)).status == 401

    async with http.get(f"{fake.issuer}/api/me") as anonymous:
        assert anonymous.status == 401
        assert (await anonymous.json())["error"] == "invalid_token"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"X-Api-Key": "key-123"}, 200),
        ({"Authorization": "Bearer key-123"}, 200),
        ({"Authorization": "Basic " + base64.b64encode(b"key-123:").decode()}, 200),
        ({"X-Api-Key": "nope"}, 401),
        ({"Authorization": "Basic " + base64.b64encode(b"nope:key-123").decode()}, 401),
        ({}, 401),
    ],
)
async def test_keyed_api(
    fake: FakeOAuthProvider, http: aiohttp.ClientSession, headers: dict[str, str], expected: int
) -> None:
    async with http.get(f"{fake.issuer}/keyed/me", headers=headers) as resp:
        assert resp.status == expected


async def test_index_page(fake: FakeOAuthProvider, http: aiohttp.ClientSession) -> None:
    async with http.get(fake.issuer + "/") as resp:
        assert resp.status == 200
        assert "Demo OAuth Provider" in await resp.text()


# ------------------------------------------------------------------- login and deny


async def test_login_page_approve_and_deny(make_fake: MakeFake, http: aiohttp.ClientSession) -> None:
    fake = await make_fake(auto_approve=False)
    verifier, challenge = pkce_pair()

    async def login_request_id() -> str:
        params = {
            "response_type": "code",
            "client_id": CLIENT_ID,
            "redirect_uri": REDIRECT_URI,
            "state": "st-1",
            "scope": "read write",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        async with http.get(f"{fake.issuer}/authorize", params=params, allow_redirects=False) as page:
            assert page.status == 200
            text = await page.text()
        assert "Demo OAuth Provider" in text
        assert CLIENT_ID in text
        assert "write" in text
        match = re.search(r'name="request_id" value="([^"]+)"', text)
        assert match is not None
        return match.group(1)

    async def decide(request_id: str, decision: str) -> aiohttp.ClientResponse:
        form = {"request_id": request_id, "username": "alice", "decision": decision}
        async with http.post(f"{fake.issuer}/authorize/decision", data=form, allow_redirects=False) as resp:
            await resp.read()
            return resp

    request_id = await login_request_id()
    approved = await decide(request_id, "approve")
    assert approved.status == 302
    params = query_of(approved.headers["Location"])
    assert params["state"] == "st-1"
    status, body = await exchange(
        http, fake, Flow(code=params["code"], verifier=verifier, redirect_params=params)
    )
    assert status == 200, body
    assert (await decide(request_id, "approve")).status == 400  # a decision is single use

    denied = await decide(await login_request_id(), "deny")
    params = query_of(denied.headers["Location"])
    assert (params["error"], params["state"]) == ("access_denied", "st-1")


async def test_deny_next_authorize(fake: FakeOAuthProvider, http: aiohttp.ClientSession) -> None:
    fake.deny_next_authorize()
    resp = await authorize(http, fake, code_challenge=pkce_pair()[1])
    params = query_of(resp.headers["Location"])
    assert (params["error"], params["state"]) == ("access_denied", "st-1")
    await get_code(http, fake)  # only the next one is denied


# ------------------------------------------------------------------------ Slack style


async def test_nested_token_response(make_fake: MakeFake, http: aiohttp.ClientSession) -> None:
    fake = await make_fake(nest_tokens_under="authed_user")
    body = await tokens(http, fake)
    assert body["ok"] is True
    assert body["team"] == {"id": "T123"}
    assert "access_token" not in body
    user = body["authed_user"]
    assert (await api_me(http, fake, user["access_token"])).status == 200
    status, refreshed = await refresh(http, fake, user["refresh_token"])
    assert status == 200
    assert refreshed["authed_user"]["refresh_token"] != user["refresh_token"]
    assert set(fake.issue_grant()) == {"ok", "team", "authed_user"}


# ------------------------------------------------------------------------------- CLI


async def test_cli_serves_until_sigterm() -> None:
    root = Path(__file__).resolve().parents[2]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fakes.oauth_provider",
        "--port",
        "0",
        "--auto-approve",
        cwd=root,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        url = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert url is not None, line
        async with aiohttp.ClientSession() as session, session.get(url.group(0) + "/") as resp:
            assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 5) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
