"""Every way the browser flow can fail: each lands on the product's error URI (or, when the broker cannot
tell whose flow it is, an HTML error page) with a specific code, and no account is stored."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest

from service.config import Settings
from tests.fakes.oauth_provider import TokenFailure
from tests.support.harness import (
    ERROR_URI,
    SUCCESS_URI,
    BrokerHarness,
    landing,
    page_code,
    running_broker,
)


def with_query(url: str, **changes: str | None) -> str:
    """The URL with query parameters replaced (or removed when the value is None)."""
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    for name, value in changes.items():
        if value is None:
            query.pop(name, None)
        else:
            query[name] = value
    return urlunsplit(parts._replace(query=urlencode(query)))


async def expect_error_landing(h: BrokerHarness, url: str, code: str) -> dict[str, list[str]]:
    """Opens `url` like a browser (following redirects through the fake) and checks the flow ended on
    the error URI with `code`."""
    response = await h.follow(url)
    assert response.status == 302, (response.status, await response.text())
    landed = landing(response.headers["Location"])
    assert landed["_target"] == [ERROR_URI], landed
    assert landed["error"] == [code], landed
    assert landed["error_description"][0]
    assert "account_id" not in landed
    return landed


# ---------------------------------------------------------------- answers from the authorization server


async def test_user_denying_access_lands_on_error_uri_and_stores_nothing(broker: BrokerHarness) -> None:
    before = await broker.count_accounts()
    broker.fake.deny_next_authorize()
    token = await broker.connect_token(provider="fake")
    await expect_error_landing(broker, token["connect_url"], "access_denied")
    assert await broker.count_accounts() == before
    assert broker.fake.token_calls == []


async def test_other_provider_error_is_reported_as_provider_error(broker: BrokerHarness) -> None:
    before = await broker.count_accounts()
    token = await broker.connect_token(provider="fake")
    callback = await broker.until_callback(token["connect_url"])
    tampered = with_query(callback, code=None, error="server_error")
    reply = await broker.browse(tampered)
    assert reply.status == 302
    assert landing(reply.headers["Location"])["error"] == ["provider_error"]
    assert await broker.count_accounts() == before


async def test_replayed_state_is_rejected_and_stores_nothing(broker: BrokerHarness) -> None:
    token = await broker.connect_token(provider="fake")
    callback = await broker.until_callback(token["connect_url"])
    before = await broker.count_accounts()

    first = await broker.browse(callback)
    assert first.status == 302
    assert landing(first.headers["Location"])["_target"] == [SUCCESS_URI]
    assert await broker.count_accounts() == before + 1
    token_calls = len(broker.fake.token_calls)

    replay = await broker.browse(callback)
    assert replay.status == 400
    assert replay.content_type == "text/html"
    assert page_code(replay.body) == "state_invalid"
    assert await broker.count_accounts() == before + 1
    assert len(broker.fake.token_calls) == token_calls  # the code was not presented again


@pytest.mark.parametrize(
    "query",
    [
        {"state": "never-issued-state", "code": "abc"},
        {"code": "abc"},
        {"state": "", "code": "abc"},
        {"state": "x" * 600, "code": "abc"},
    ],
    ids=["unknown", "missing", "empty", "oversized"],
)
async def test_callback_with_unknown_or_missing_state_shows_state_invalid_and_stores_nothing(
    broker: BrokerHarness, query: dict[str, str]
) -> None:
    before = await broker.count_accounts()
    reply = await broker.browse(f"{broker.url}/oauth/callback?{urlencode(query)}")
    assert reply.status == 400
    assert reply.content_type == "text/html"
    assert page_code(reply.body) == "state_invalid"
    assert reply.headers["Cache-Control"] == "no-store"
    assert await broker.count_accounts() == before
    assert broker.fake.token_calls == []


async def test_expired_state_is_rejected(settings: Settings, tmp_path: Path) -> None:
    async with running_broker(dataclasses.replace(settings, oauth_state_ttl=1), tmp_path) as h:
        before = await h.count_accounts()
        token = await h.connect_token(provider="fake")
        callback = await h.until_callback(token["connect_url"])
        await asyncio.sleep(1.5)
        reply = await h.browse(callback)
        assert reply.status == 400
        assert page_code(reply.body) == "state_invalid"
        assert await h.count_accounts() == before
        assert h.fake.token_calls == []


async def test_callback_without_code_lands_code_missing(broker: BrokerHarness) -> None:
    before = await broker.count_accounts()
    token = await broker.connect_token(provider="fake")
    callback = await broker.until_callback(token["connect_url"])
    await expect_error_landing(broker, with_query(callback, code=None), "code_missing")
    assert await broker.count_accounts() == before


async def test_iss_mismatch_is_rejected_before_the_code_is_exchanged(broker: BrokerHarness) -> None:
    before = await broker.count_accounts()
    token = await broker.connect_token(provider="fake")
    callback = await broker.until_callback(token["connect_url"])
    tampered = with_query(callback, iss="https://attacker.example")
    await expect_error_landing(broker, tampered, "iss_mismatch")
    assert await broker.count_accounts() == before
    assert broker.fake.token_calls == []


async def test_missing_iss_is_rejected_when_the_provider_declares_it(
    settings: Settings, tmp_path: Path
) -> None:
    async with running_broker(settings, tmp_path, issue_iss=False) as h:
        before = await h.count_accounts()
        token = await h.connect_token(provider="fake")
        await expect_error_landing(h, token["connect_url"], "iss_missing")
        assert await h.count_accounts() == before
        assert h.fake.token_calls == []


async def test_missing_iss_is_rejected_when_discovery_metadata_promises_it(broker: BrokerHarness) -> None:
    before = await broker.count_accounts()
    token = await broker.connect_token(provider="fakediscovery")
    callback = await broker.until_callback(token["connect_url"])
    await expect_error_landing(broker, with_query(callback, iss=None), "iss_missing")
    assert await broker.count_accounts() == before


async def test_error_response_from_another_issuer_is_reported_as_iss_mismatch(broker: BrokerHarness) -> None:
    broker.fake.deny_next_authorize()
    token = await broker.connect_token(provider="fake")
    callback = await broker.until_callback(token["connect_url"])
    assert "error=access_denied" in callback
    await expect_error_landing(broker, with_query(callback, iss="https://attacker.example"), "iss_mismatch")


# ---------------------------------------------------------------- the token endpoint


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (TokenFailure.SERVER_ERROR, "token_endpoint_unavailable"),
        (TokenFailure.GARBAGE, "token_response_invalid"),
        (TokenFailure.MISSING_ACCESS_TOKEN, "token_response_invalid"),
        (TokenFailure.INVALID_GRANT, "token_exchange_failed"),
        (TokenFailure.INVALID_CLIENT, "token_exchange_failed"),
        (TokenFailure.RATE_LIMITED, "rate_limited"),
    ],
)
async def test_token_endpoint_failure_lands_a_specific_error_and_stores_nothing(
    broker: BrokerHarness, failure: TokenFailure, code: str
) -> None:
    before = await broker.count_accounts()
    broker.fake.fail_next_token(failure)
    token = await broker.connect_token(provider="fake")
    await expect_error_landing(broker, token["connect_url"], code)
    assert broker.fake.token_calls[-1].outcome == failure.value
    assert await broker.count_accounts() == before


async def test_token_endpoint_timeout_lands_token_endpoint_timeout(
    settings: Settings, tmp_path: Path
) -> None:
    async with running_broker(dataclasses.replace(settings, http_client_timeout=0.5), tmp_path) as h:
        h.fake.timeout_delay = 2.0
        before = await h.count_accounts()
        h.fake.fail_next_token(TokenFailure.TIMEOUT)
        token = await h.connect_token(provider="fake")
        started = asyncio.get_running_loop().time()
        await expect_error_landing(h, token["connect_url"], "token_endpoint_timeout")
        assert asyncio.get_running_loop().time() - started < 2.0
        assert await h.count_accounts() == before


async def test_token_endpoint_down_lands_token_endpoint_unreachable(broker: BrokerHarness) -> None:
    before = await broker.count_accounts()
    token = await broker.connect_token(provider="fake")
    callback = await broker.until_callback(token["connect_url"])
    await broker.fake.stop()
    await expect_error_landing(broker, callback, "token_endpoint_unreachable")
    assert await broker.count_accounts() == before


# ---------------------------------------------------------------- connect tokens


async def test_connect_link_is_single_use(broker: BrokerHarness) -> None:
    token = await broker.connect_token(provider="fake")
    landed = landing((await broker.follow(token["connect_url"])).headers["Location"])
    assert landed["_target"] == [SUCCESS_URI]
    before = await broker.count_accounts()

    again = await broker.browse(token["connect_url"])
    assert again.status == 400
    assert again.content_type == "text/html"
    assert page_code(again.body) == "connect_token_invalid"
    assert await broker.count_accounts() == before


async def test_expired_connect_link_is_rejected(settings: Settings, tmp_path: Path) -> None:
    async with running_broker(dataclasses.replace(settings, connect_token_ttl=1), tmp_path) as h:
        before = await h.count_accounts()
        token = await h.connect_token(provider="fake")
        keys = await h.connect_token(provider="fakekeys")
        await asyncio.sleep(1.2)
        reply = await h.browse(token["connect_url"])
        assert reply.status == 400
        assert page_code(reply.body) == "connect_token_invalid"
        form = await h.browse(
            f"{h.url}/connect/fakekeys", form={"token": keys["token"], "api_key": "key-123"}
        )
        assert form.status == 400
        assert page_code(form.body) == "connect_token_invalid"
        assert await h.count_accounts() == before
        assert h.fake.last_authorize_params == {}


@pytest.mark.parametrize("secret", ["", "ctok_made-up", "x" * 5000])
async def test_unknown_or_missing_connect_token_is_rejected(broker: BrokerHarness, secret: str) -> None:
    for path in ("/connect/fake", "/connect"):
        reply = await broker.browse(f"{broker.url}{path}?{urlencode({'token': secret})}")
        assert reply.status == 400
        assert page_code(reply.body) == "connect_token_invalid"
    no_token = await broker.browse(f"{broker.url}/connect/fake")
    assert no_token.status == 400
    assert page_code(no_token.body) == "connect_token_invalid"


async def test_connect_token_for_one_provider_is_refused_on_another_and_stays_usable(
    broker: BrokerHarness,
) -> None:
    before = await broker.count_accounts()
    token = await broker.connect_token(provider="fake")
    for other in ("fakepost", "fakekeys", "no-such-provider"):
        reply = await broker.browse(f"{broker.url}/connect/{other}?token={token['token']}")
        assert reply.status == 400, other
        assert page_code(reply.body) == "provider_mismatch", other
    posted = await broker.browse(
        f"{broker.url}/connect/fakekeys", form={"token": token["token"], "api_key": "key-123"}
    )
    assert posted.status == 400
    assert page_code(posted.body) == "provider_mismatch"
    assert await broker.count_accounts() == before
    assert broker.fake.last_authorize_params == {}

    landed = landing((await broker.follow(token["connect_url"])).headers["Location"])
    assert landed["_target"] == [SUCCESS_URI]


async def test_oauth_connect_token_cannot_submit_a_key_form(broker: BrokerHarness) -> None:
    token = await broker.connect_token(provider="fake")
    reply = await broker.browse(f"{broker.url}/connect/fake", form={"token": token["token"], "api_key": "k"})
    assert reply.status == 400
    assert page_code(reply.body) == "connect_token_invalid"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("success_redirect_uri", "https://attacker.example/connected"),
        ("error_redirect_uri", "https://attacker.example/failed"),
        ("success_redirect_uri", SUCCESS_URI + "/"),
        ("success_redirect_uri", SUCCESS_URI + "?next=https://attacker.example"),
        ("error_redirect_uri", ERROR_URI.upper()),
    ],
)
async def test_redirect_uri_outside_the_allowlist_is_refused(
    broker: BrokerHarness, field: str, value: str
) -> None:
    body = {"provider": "fake", "success_redirect_uri": SUCCESS_URI, "error_redirect_uri": ERROR_URI}
    reply = await broker.call("POST", "/v1/connect/tokens", json={**body, field: value})
    assert reply.status == 400
    assert reply.error_code == "redirect_uri_not_allowed"
    assert reply.body["error"]["details"] == {"field": field}

    account = await broker.import_account(provider="fake", credentials={"oauth_access_token": "at-x"})
    reconnect = {"success_redirect_uri": SUCCESS_URI, "error_redirect_uri": ERROR_URI, field: value}
    reply = await broker.call("POST", f"/v1/accounts/{account['id']}/reconnect", json=reconnect)
    assert reply.status == 400
    assert reply.error_code == "redirect_uri_not_allowed"


async def test_connect_token_needs_both_redirect_uris(broker: BrokerHarness) -> None:
    reply = await broker.call("POST", "/v1/connect/tokens", json={"success_redirect_uri": SUCCESS_URI})
    assert reply.status == 400
    assert reply.error_code == "invalid_field"


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ({"expires_in": 59}, "invalid_field"),
        ({"expires_in": 4 * 3600 + 1}, "invalid_field"),
        ({"popup": "yes"}, "invalid_field"),
        ({"provider": "Not A Name"}, "invalid_field"),
        ({"scopes": ["read"]}, "unknown_field"),
        ({"connection_settings": {"shop": 5}}, "invalid_field"),
    ],
)
async def test_malformed_connect_token_request_is_a_400(
    broker: BrokerHarness, extra: dict[str, object], code: str
) -> None:
    body = {"success_redirect_uri": SUCCESS_URI, "error_redirect_uri": ERROR_URI, **extra}
    reply = await broker.call("POST", "/v1/connect/tokens", json=body)
    assert reply.status == 400, reply.body
    assert reply.error_code == code


async def test_connect_token_api_needs_the_api_key(broker: BrokerHarness) -> None:
    body = {"provider": "fake", "success_redirect_uri": SUCCESS_URI, "error_redirect_uri": ERROR_URI}
    for key in (None, "wrong-key"):
        reply = await broker.call("POST", "/v1/connect/tokens", json=body, api_key=key)
        assert reply.status == 401
        assert reply.error_code == "unauthorized"


async def test_connect_token_for_unknown_provider_is_a_404(broker: BrokerHarness) -> None:
    body = {
        "provider": "no-such-provider",
        "success_redirect_uri": SUCCESS_URI,
        "error_redirect_uri": ERROR_URI,
    }
    reply = await broker.call("POST", "/v1/connect/tokens", json=body)
    assert reply.status == 404
    assert reply.error_code == "unknown_provider"


# ---------------------------------------------------------------- connection settings


@pytest.mark.parametrize(
    ("provider", "connection_settings"),
    [
        ("fakeshop", {"shop": "Bad Shop!"}),
        ("fakeshop", {"shop": ""}),
        ("fakeshop", {"shop": "ok-shop", "region": "eu"}),
        ("fake", {"shop": "ok-shop"}),
    ],
)
async def test_malformed_connection_setting_is_refused_when_the_token_is_made(
    broker: BrokerHarness, provider: str, connection_settings: dict[str, str]
) -> None:
    body = {
        "provider": provider,
        "connection_settings": connection_settings,
        "success_redirect_uri": SUCCESS_URI,
        "error_redirect_uri": ERROR_URI,
    }
    reply = await broker.call("POST", "/v1/connect/tokens", json=body)
    assert reply.status == 400
    assert reply.error_code == "invalid_connection_settings"
    assert "field" in reply.body["error"]["details"]


async def test_missing_connection_setting_shows_the_settings_form_without_redirecting(
    broker: BrokerHarness,
) -> None:
    before = await broker.count_accounts()
    token = await broker.connect_token(provider="fakeshop")
    reply = await broker.browse(token["connect_url"])
    assert reply.status == 200
    assert reply.content_type == "text/html"
    assert 'name="shop"' in reply.body
    assert 'method="get" action="/connect/fakeshop"' in reply.body
    blank = await broker.browse(token["connect_url"] + "&shop=")
    assert blank.status == 400
    assert "is required" in blank.body
    assert broker.fake.last_authorize_params == {}
    assert await broker.count_accounts() == before


# ---------------------------------------------------------------- configuration problems


async def test_connect_without_a_registered_oauth_app_lands_oauth_app_not_configured(
    broker: BrokerHarness,
) -> None:
    await broker.api("DELETE", "/v1/oauth-apps/fake", expect=200)
    missing = await broker.call("GET", "/v1/oauth-apps/fake")
    assert missing.status == 404
    assert missing.error_code == "oauth_app_not_found"
    before = await broker.count_accounts()
    token = await broker.connect_token(provider="fake")
    await expect_error_landing(broker, token["connect_url"], "oauth_app_not_configured")
    assert await broker.count_accounts() == before
    assert broker.fake.last_authorize_params == {}


async def test_oauth_app_removed_during_the_flow_lands_oauth_app_not_configured(
    broker: BrokerHarness,
) -> None:
    before = await broker.count_accounts()
    token = await broker.connect_token(provider="fake")
    callback = await broker.until_callback(token["connect_url"])
    await broker.api("DELETE", "/v1/oauth-apps/fake", expect=200)
    await expect_error_landing(broker, callback, "oauth_app_not_configured")
    assert await broker.count_accounts() == before
    assert broker.fake.token_calls == []


async def test_unreachable_discovery_metadata_lands_provider_discovery_failed(broker: BrokerHarness) -> None:
    before = await broker.count_accounts()
    token = await broker.connect_token(provider="fakediscovery")
    await broker.fake.stop()
    await expect_error_landing(broker, token["connect_url"], "provider_discovery_failed")
    assert await broker.count_accounts() == before


async def test_callback_on_an_instance_that_cannot_fetch_discovery_metadata_lands_an_error(
    broker: BrokerHarness,
) -> None:
    before = await broker.count_accounts()
    token = await broker.connect_token(provider="fakediscovery")
    callback = await broker.until_callback(token["connect_url"])
    async with broker.another_instance() as other:
        await broker.fake.stop()
        parts = urlsplit(callback)
        reply = await broker.browse(f"{other}{parts.path}?{parts.query}")
        assert reply.status == 302, (reply.status, reply.body)
        landed = landing(reply.headers["Location"])
        assert landed["_target"] == [ERROR_URI]
        assert landed["error"] == ["provider_discovery_failed"]
    assert await broker.count_accounts() == before


async def test_callback_on_another_instance_completes_the_flow(broker: BrokerHarness) -> None:
    """Transactions live in Redis, so any instance can take the callback."""
    token = await broker.connect_token(provider="fakediscovery")
    callback = await broker.until_callback(token["connect_url"])
    async with broker.another_instance() as other:
        parts = urlsplit(callback)
        reply = await broker.browse(f"{other}{parts.path}?{parts.query}")
    assert reply.status == 302, reply.body
    landed = landing(reply.headers["Location"])
    assert landed["_target"] == [SUCCESS_URI]
    assert (await broker.account(landed["account_id"][0]))["provider"] == "fakediscovery"


async def test_reconnect_cannot_switch_the_accounts_connection_settings_from_the_browser(
    broker: BrokerHarness,
) -> None:
    landed = await broker.connect("fakeshop", connection_settings={"shop": "alpha-shop"})
    account_id = landed["account_id"][0]
    reconnect = await broker.api(
        "POST",
        f"/v1/accounts/{account_id}/reconnect",
        json={"success_redirect_uri": SUCCESS_URI, "error_redirect_uri": ERROR_URI},
        expect=201,
    )
    response = await broker.follow(reconnect["connect_url"] + "&shop=beta-shop")
    assert broker.fake.last_authorize_params["shop"] == "alpha-shop"
    again = landing(response.headers["Location"])
    assert again["account_id"] == [account_id]
    assert (await broker.account(account_id))["connection_settings"] == {"shop": "alpha-shop"}
