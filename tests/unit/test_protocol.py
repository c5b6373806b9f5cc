"""OAuth steps as pure functions: authorization URL, issuer check, token requests, token responses."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from urllib.parse import parse_qs, urlsplit

import pytest

from service.oauth.protocol import (
    ClientCredentials,
    Endpoints,
    TokenResponseInvalid,
    authorization_url,
    check_issuer,
    new_code_verifier,
    parse_token_response,
    token_request,
)
from service.providers import OAuth2Config

ENDPOINTS = Endpoints(
    authorize_url="https://as.example/authorize",
    token_url="https://as.example/token",
    refresh_url="https://as.example/token",
    revocation_url=None,
    issuer="https://as.example",
    require_iss=True,
)
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_authorization_url_carries_state_pkce_s256_and_extra_params() -> None:
    config = OAuth2Config(
        authorize_url=ENDPOINTS.authorize_url,
        token_url=ENDPOINTS.token_url,
        authorize_params={"access_type": "offline"},
    )
    verifier = new_code_verifier()
    url = authorization_url(
        config,
        ENDPOINTS,
        client_id="cid",
        redirect_uri="https://b/cb",
        state="st",
        scopes=["a", "b"],
        code_verifier=verifier,
    )
    q = _query(url)
    expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert q == {
        "response_type": "code",
        "client_id": "cid",
        "redirect_uri": "https://b/cb",
        "scope": "a b",
        "state": "st",
        "code_challenge": expected,
        "code_challenge_method": "S256",
        "access_type": "offline",
    }
    assert 43 <= len(verifier) <= 128


def test_scopes_go_where_the_provider_wants_them_with_its_separator() -> None:
    config = OAuth2Config(
        authorize_url="x", token_url="y", scope_separator=",", scope_param="user_scope", pkce=False
    )
    q = _query(
        authorization_url(
            config,
            ENDPOINTS,
            client_id="c",
            redirect_uri="r",
            state="s",
            scopes=["a", "b"],
            code_verifier=None,
        )
    )
    assert q["user_scope"] == "a,b"
    assert "scope" not in q
    assert "code_challenge" not in q


@pytest.mark.parametrize(
    ("require", "iss", "outcome"),
    [
        (True, "https://as.example", None),
        (True, None, "iss_missing"),
        (True, "https://evil", "iss_mismatch"),
        (False, None, None),
        (False, "https://evil", "iss_mismatch"),
    ],
)
def test_rfc9207_issuer_check(require: bool, iss: str | None, outcome: str | None) -> None:
    endpoints = Endpoints(**{**ENDPOINTS.__dict__, "require_iss": require})
    assert check_issuer(endpoints, iss) == outcome


def test_client_secret_basic_form_urlencodes_id_and_secret() -> None:
    request = token_request(
        "https://as/token", {"grant_type": "x"}, ClientCredentials("id:1", "s&c/t", "client_secret_basic")
    )
    decoded = base64.b64decode(request.headers["Authorization"].removeprefix("Basic ")).decode()
    assert decoded == "id%3A1:s%26c%2Ft"
    assert request.body == b"grant_type=x"


def test_client_secret_post_and_json_bodies() -> None:
    form = token_request("https://as/token", {"a": "1"}, ClientCredentials("id", "sec", "client_secret_post"))
    assert parse_qs(form.body.decode()) == {"a": ["1"], "client_id": ["id"], "client_secret": ["sec"]}
    body = token_request(
        "https://as/token",
        {"a": "1"},
        ClientCredentials("id", "sec", "client_secret_post"),
        body_format="json",
    )
    assert json.loads(body.body) == {"a": "1", "client_id": "id", "client_secret": "sec"}
    assert body.headers["Content-Type"] == "application/json"


def test_token_response_nested_with_metadata_and_default_lifetime() -> None:
    config = OAuth2Config(
        authorize_url="x",
        token_url="y",
        token_response_path="authed_user",
        metadata_fields={"team_id": "team.id"},
        default_expires_in=3600,
    )
    tokens = parse_token_response(
        config,
        {"ok": True, "team": {"id": "T1"}, "authed_user": {"access_token": "xoxp", "scope": "a,b"}},
        now=NOW,
    )
    assert tokens.access_token == "xoxp"
    assert tokens.scopes == ("a", "b")
    assert tokens.metadata == {"team_id": "T1"}
    assert tokens.expires_at == NOW + dt.timedelta(hours=1)


def test_a_refresh_response_without_a_refresh_token_keeps_the_old_one() -> None:
    config = OAuth2Config(authorize_url="x", token_url="y")
    tokens = parse_token_response(
        config, {"access_token": "new", "expires_in": 60}, now=NOW, previous_refresh_token="old-rt"
    )
    assert tokens.refresh_token == "old-rt"
    rotated = parse_token_response(
        config, {"access_token": "new", "refresh_token": "rt2"}, now=NOW, previous_refresh_token="old-rt"
    )
    assert rotated.refresh_token == "rt2"
    assert rotated.expires_at is None  # no expires_in and no default: does not expire


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        "text",
        {"token_type": "bearer"},
        {"access_token": ""},
        {"access_token": "a", "expires_in": "soon"},
    ],
)
def test_unusable_token_responses_are_rejected(body: object) -> None:
    with pytest.raises(TokenResponseInvalid):
        parse_token_response(OAuth2Config(authorize_url="x", token_url="y"), body, now=NOW)
