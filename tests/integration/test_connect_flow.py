"""The browser flow end to end: connect token -> provider -> callback -> account, against the fake
provider over real HTTP, with the real Redis and FerretDB behind the broker."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from service.config import Settings
from tests.support.harness import (
    CLIENT_ID,
    CLIENT_SECRET,
    ERROR_URI,
    SUCCESS_URI,
    BrokerHarness,
    landing,
    page_code,
    running_broker,
)


def s256(verifier: str) -> str:
    """RFC 7636 4.2, computed here independently of the broker and the fake."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def popup_message(html_text: str) -> tuple[dict[str, str], str]:
    """The message and target origin of a popup result page's postMessage call."""
    match = re.search(r"var m=(\{.*?\});.*?postMessage\(m,(\"[^\"]*\")\)", html_text)
    assert match, html_text
    return json.loads(match.group(1)), json.loads(match.group(2))


# ---------------------------------------------------------------- OAuth 2 happy paths


async def test_oauth_flow_connects_an_account_and_serves_its_credential(broker: BrokerHarness) -> None:
    landed = await broker.connect("fake", external_user_id="user-42")
    assert landed["_target"] == [SUCCESS_URI], landed
    account_id = landed["account_id"][0]

    body = await broker.api("GET", f"/v1/accounts/{account_id}?include_credentials=1", expect=200)
    data = body["data"]
    assert data["provider"] == "fake"
    assert data["external_user_id"] == "user-42"
    assert data["status"] == "active"
    token = data["credentials"]["oauth_access_token"]
    assert broker.fake.is_access_token_valid(token)
    assert data["expires_at"].endswith("Z")
    assert "oauth_refresh_token" not in data["credentials"]
    assert set(data["scopes"]) == {"read", "profile"}
    call = broker.fake.token_calls[-1]
    assert call.grant_type == "authorization_code"
    assert call.client_auth_used == "client_secret_basic"
    assert ERROR_URI


async def test_basic_auth_flow_sends_pkce_s256_state_and_checks_iss(broker: BrokerHarness) -> None:
    token = await broker.connect_token(provider="fake", external_user_id="pkce-user")
    assert token["connect_url"].startswith(f"{broker.url}/connect/fake?token=")
    callback = await broker.until_callback(token["connect_url"])

    sent = broker.fake.last_authorize_params
    assert sent["response_type"] == "code"
    assert sent["client_id"] == CLIENT_ID
    assert sent["redirect_uri"] == f"{broker.url}/oauth/callback"
    assert sent["scope"] == "read profile"
    assert sent["code_challenge_method"] == "S256"
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", sent["code_challenge"])
    assert len(sent["state"]) >= 32
    assert sent["state"] != token["token"]  # the connect token never travels to the provider

    back = query_of(callback)
    assert back["state"] == sent["state"]
    assert back["iss"] == broker.fake.issuer

    reply = await broker.browse(callback)
    assert reply.status == 302, reply.body
    landed = landing(reply.headers["Location"])
    assert landed["_target"] == [SUCCESS_URI]

    call = broker.fake.token_calls[-1]
    assert call.outcome == "ok"
    assert call.client_auth_used == "client_secret_basic"  # with a secret full of reserved characters
    assert call.content_type == "application/x-www-form-urlencoded"
    assert "client_secret" not in call.params
    assert s256(call.params["code_verifier"]) == sent["code_challenge"]
    assert call.params["redirect_uri"] == sent["redirect_uri"]

    data = await broker.account(
        landed["account_id"][0], query="?include_credentials=1&include_refresh_token=1"
    )
    assert data["credentials"]["oauth_token_type"] == "Bearer"
    assert data["credentials"]["oauth_refresh_token"].startswith("rt-")
    assert data["version"] == 1
    assert data["app"] == {"name_slug": "fake", "name": "Fake OAuth", "auth_type": "oauth2"}


async def test_post_auth_json_body_flow_keeps_nested_tokens_and_team_metadata(
    settings: Settings, tmp_path: Path
) -> None:
    async with running_broker(settings, tmp_path, nest_tokens_under="authed_user") as h:
        # Two scopes, so the provider's comma separator shows in the authorization request.
        await h.api(
            "PUT",
            "/v1/oauth-apps/fakepost",
            json={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "scopes": ["read", "write"]},
            expect=200,
        )
        landed = await h.connect("fakepost", external_user_id="slack-user")
        assert landed["_target"] == [SUCCESS_URI], landed

        assert h.fake.last_authorize_params["scope"] == "read,write"
        assert h.fake.last_authorize_params["code_challenge_method"] == "S256"
        call = h.fake.token_calls[-1]
        assert call.outcome == "ok"
        assert call.client_auth_used == "client_secret_post"
        assert call.content_type == "application/json"
        assert call.params["client_id"] == CLIENT_ID
        assert call.params["client_secret"] == CLIENT_SECRET

        data = await h.account(
            landed["account_id"][0], query="?include_credentials=1&include_refresh_token=1"
        )
        assert data["provider"] == "fakepost"
        assert data["metadata"] == {"team_id": "T123"}
        assert data["scopes"] == ["read", "write"]
        assert data["expires_at"].endswith("Z")
        creds = data["credentials"]
        assert h.fake.is_access_token_valid(creds["oauth_access_token"])
        assert creds["oauth_refresh_token"] in h.fake.refresh_tokens


async def test_discovery_provider_takes_its_endpoints_from_the_issuer_metadata(broker: BrokerHarness) -> None:
    token = await broker.connect_token(provider="fakediscovery")
    callback = await broker.until_callback(token["connect_url"])
    # The definition has no authorize_url: the fake was reached through its RFC 8414 metadata.
    assert broker.fake.last_authorize_params["code_challenge_method"] == "S256"
    assert broker.fake.last_authorize_params["scope"] == "read"
    assert query_of(callback)["iss"] == broker.fake.issuer

    reply = await broker.browse(callback)
    assert reply.status == 302, reply.body
    landed = landing(reply.headers["Location"])
    assert landed["_target"] == [SUCCESS_URI]
    call = broker.fake.token_calls[-1]
    assert call.outcome == "ok"
    assert call.client_auth_used == "client_secret_post"
    data = await broker.account(landed["account_id"][0], query="?include_credentials=1")
    assert data["provider"] == "fakediscovery"
    assert broker.fake.is_access_token_valid(data["credentials"]["oauth_access_token"])


async def test_templated_provider_uses_the_connection_setting_from_the_connect_token(
    broker: BrokerHarness,
) -> None:
    landed = await broker.connect("fakeshop", connection_settings={"shop": "my-shop"})
    assert landed["_target"] == [SUCCESS_URI], landed
    sent = broker.fake.last_authorize_params
    assert sent["shop"] == "my-shop"
    assert sent["code_challenge_method"] == "S256"
    assert sent["state"]
    data = await broker.account(landed["account_id"][0])
    assert data["connection_settings"] == {"shop": "my-shop"}


async def test_templated_provider_without_setting_asks_for_it_then_connects(broker: BrokerHarness) -> None:
    token = await broker.connect_token(provider="fakeshop")
    first = await broker.browse(token["connect_url"])
    assert first.status == 200
    assert first.content_type == "text/html"
    assert 'name="shop"' in first.body
    assert "class=err" not in first.body

    wrong = await broker.browse(token["connect_url"] + "&shop=Not%20A%20Shop!")
    assert wrong.status == 400
    assert "class=err" in wrong.body
    assert "must match" in wrong.body

    # Neither visit used the connect token up.
    landed = landing((await broker.follow(token["connect_url"] + "&shop=typed-shop")).headers["Location"])
    assert landed["_target"] == [SUCCESS_URI], landed
    assert broker.fake.last_authorize_params["shop"] == "typed-shop"
    data = await broker.account(landed["account_id"][0])
    assert data["connection_settings"] == {"shop": "typed-shop"}


async def test_connect_token_without_provider_lets_the_user_choose_one(broker: BrokerHarness) -> None:
    token = await broker.connect_token()
    assert token["connect_url"].startswith(f"{broker.url}/connect?token=")
    chooser = await broker.browse(token["connect_url"])
    assert chooser.status == 200
    assert f'href="/connect/fake?token={token["token"]}"' in chooser.body
    assert f'href="/connect/fakekeys?token={token["token"]}"' in chooser.body

    response = await broker.follow(f"{broker.url}/connect/fake?token={token['token']}")
    landed = landing(response.headers["Location"])
    assert landed["_target"] == [SUCCESS_URI], landed
    assert (await broker.account(landed["account_id"][0]))["provider"] == "fake"


# ---------------------------------------------------------------- popup mode


async def test_popup_flow_posts_the_account_id_to_the_success_origin_only(broker: BrokerHarness) -> None:
    token = await broker.connect_token(provider="fake", popup=True)
    response = await broker.follow(token["connect_url"])
    assert response.status == 200
    assert response.content_type == "text/html"
    text = await response.text()
    message, origin = popup_message(text)
    assert origin == "https://product.example"
    assert '"*"' not in text
    assert message["type"] == "oauth-broker"
    assert message["status"] == "success"
    data = await broker.account(message["account_id"])
    assert data["provider"] == "fake"
    assert "window.close()" in text
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"


async def test_popup_flow_posts_errors_to_the_error_origin_and_stores_nothing(
    broker: BrokerHarness,
) -> None:
    before = await broker.count_accounts()
    broker.fake.deny_next_authorize()
    token = await broker.connect_token(
        provider="fake", popup=True, error_redirect_uri=ERROR_URI, success_redirect_uri=SUCCESS_URI
    )
    response = await broker.follow(token["connect_url"])
    assert response.status == 200
    message, origin = popup_message(await response.text())
    assert origin == "https://product.example"
    assert message == {"type": "oauth-broker", "status": "error", "error": "access_denied"}
    assert await broker.count_accounts() == before


# ---------------------------------------------------------------- reconnect


async def test_reconnect_keeps_the_account_id_and_replaces_its_token(broker: BrokerHarness) -> None:
    landed = await broker.connect("fake", external_user_id="reconnecting-user")
    account_id = landed["account_id"][0]
    before = await broker.account(account_id, query="?include_credentials=1")
    old_token = before["credentials"]["oauth_access_token"]
    count = await broker.count_accounts()

    reconnect = await broker.api(
        "POST",
        f"/v1/accounts/{account_id}/reconnect",
        json={"success_redirect_uri": SUCCESS_URI, "error_redirect_uri": ERROR_URI},
        expect=201,
    )
    assert reconnect["connect_url"].startswith(f"{broker.url}/connect/fake?token=")
    assert reconnect["expires_at"].endswith("Z")
    response = await broker.follow(reconnect["connect_url"])
    again = landing(response.headers["Location"])
    assert again["_target"] == [SUCCESS_URI], again
    assert again["account_id"] == [account_id]

    after = await broker.account(account_id, query="?include_credentials=1")
    new_token = after["credentials"]["oauth_access_token"]
    assert new_token != old_token
    assert broker.fake.is_access_token_valid(new_token)
    assert after["version"] == before["version"] + 1
    assert after["external_user_id"] == "reconnecting-user"
    assert after["created_at"] == before["created_at"]
    assert await broker.count_accounts() == count


async def test_reconnect_of_a_templated_account_reuses_its_connection_settings(broker: BrokerHarness) -> None:
    landed = await broker.connect("fakeshop", connection_settings={"shop": "first-shop"})
    account_id = landed["account_id"][0]
    reconnect = await broker.api(
        "POST",
        f"/v1/accounts/{account_id}/reconnect",
        json={"success_redirect_uri": SUCCESS_URI, "error_redirect_uri": ERROR_URI},
        expect=201,
    )
    assert reconnect["connect_url"].startswith(f"{broker.url}/connect/fakeshop?token=")
    again = landing((await broker.follow(reconnect["connect_url"])).headers["Location"])
    assert again["account_id"] == [account_id]
    assert broker.fake.last_authorize_params["shop"] == "first-shop"
    assert (await broker.account(account_id))["version"] == 2


# ---------------------------------------------------------------- key-based providers


async def test_key_form_connects_an_account_with_a_key_the_provider_accepts(broker: BrokerHarness) -> None:
    token = await broker.connect_token(provider="fakekeys", external_user_id="key-user")
    form = await broker.browse(token["connect_url"])
    assert form.status == 200
    assert form.content_type == "text/html"
    assert 'name="api_key"' in form.body
    assert 'type="password"' in form.body
    assert 'action="/connect/fakekeys"' in form.body
    assert "class=err" not in form.body

    submitted = await broker.browse(
        f"{broker.url}/connect/fakekeys", form={"token": token["token"], "api_key": "key-123"}
    )
    assert submitted.status == 302, submitted.body
    landed = landing(submitted.headers["Location"])
    assert landed["_target"] == [SUCCESS_URI]
    data = await broker.account(landed["account_id"][0], query="?include_credentials=1")
    assert data["credentials"] == {"api_key": "key-123"}
    assert data["auth_type"] == "api_key"
    assert data["external_user_id"] == "key-user"
    assert data["expires_at"] is None

    reused = await broker.browse(
        f"{broker.url}/connect/fakekeys", form={"token": token["token"], "api_key": "key-123"}
    )
    assert reused.status == 400
    assert page_code(reused.body) == "connect_token_invalid"


async def test_key_the_provider_rejects_shows_the_form_again_and_keeps_the_token(
    broker: BrokerHarness,
) -> None:
    before = await broker.count_accounts()
    token = await broker.connect_token(provider="fakekeys")
    rejected = await broker.browse(
        f"{broker.url}/connect/fakekeys", form={"token": token["token"], "api_key": "key-999"}
    )
    assert rejected.status == 400
    assert rejected.content_type == "text/html"
    assert "class=err" in rejected.body
    assert "did not accept" in rejected.body
    assert 'name="api_key"' in rejected.body
    assert await broker.count_accounts() == before

    accepted = await broker.browse(
        f"{broker.url}/connect/fakekeys", form={"token": token["token"], "api_key": "key-123"}
    )
    assert accepted.status == 302, accepted.body
    assert landing(accepted.headers["Location"])["_target"] == [SUCCESS_URI]
    assert await broker.count_accounts() == before + 1


async def test_malformed_or_empty_key_is_refused_before_calling_the_provider(broker: BrokerHarness) -> None:
    before = await broker.count_accounts()
    token = await broker.connect_token(provider="fakekeys")
    for value, problem in (("not a key", "does not look right"), ("", "is required")):
        reply = await broker.browse(
            f"{broker.url}/connect/fakekeys", form={"token": token["token"], "api_key": value}
        )
        assert reply.status == 400
        assert problem in reply.body
    assert await broker.count_accounts() == before


async def test_reconnect_of_a_key_account_replaces_its_key(broker: BrokerHarness) -> None:
    broker.fake.valid_api_keys.add("key-456")
    account = await broker.import_account(provider="fakekeys", credentials={"api_key": "key-123"})
    reconnect = await broker.api(
        "POST",
        f"/v1/accounts/{account['id']}/reconnect",
        json={"success_redirect_uri": SUCCESS_URI, "error_redirect_uri": ERROR_URI},
        expect=201,
    )
    secret = query_of(reconnect["connect_url"])["token"]
    reply = await broker.browse(
        f"{broker.url}/connect/fakekeys", form={"token": secret, "api_key": "key-456"}
    )
    assert reply.status == 302, reply.body
    assert landing(reply.headers["Location"])["account_id"] == [account["id"]]
    data = await broker.account(account["id"], query="?include_credentials=1")
    assert data["credentials"] == {"api_key": "key-456"}
    assert data["version"] == 2
