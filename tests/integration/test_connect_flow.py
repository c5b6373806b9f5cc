"""The browser flow end to end: connect token -> provider -> callback -> account, against the fake
provider over real HTTP, with the real Redis and FerretDB behind the broker."""

from __future__ import annotations

from tests.support.harness import ERROR_URI, SUCCESS_URI, BrokerHarness


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
