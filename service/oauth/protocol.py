"""OAuth 2 steps as small pure functions: build the authorization URL, check the callback, build a
token request, and turn a token response into a TokenSet. No I/O here."""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from authlib.oauth2.auth import ClientAuth
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from service.providers import OAuth2Config

# RFC 6749 §5.2: errors that say the grant or the client is no good; retrying cannot help.
TERMINAL_OAUTH_ERRORS = frozenset(
    {"invalid_grant", "invalid_client", "unauthorized_client", "unsupported_grant_type", "invalid_scope"}
)


@dataclass(frozen=True)
class Endpoints:
    """A provider's endpoints for one account, templates filled and discovery applied."""

    authorize_url: str
    token_url: str
    refresh_url: str
    revocation_url: str | None
    issuer: str | None
    require_iss: bool


@dataclass(frozen=True)
class ClientCredentials:
    client_id: str
    client_secret: str
    method: str  # client_secret_basic | client_secret_post


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    token_type: str
    refresh_token: str | None
    expires_at: dt.datetime | None
    scopes: tuple[str, ...]
    metadata: Mapping[str, Any] = field(default_factory=dict)


class TokenResponseInvalid(ValueError):
    """The token endpoint answered 2xx with something that is not a usable token response."""


def new_state() -> str:
    return secrets.token_urlsafe(32)


def new_code_verifier() -> str:
    # RFC 7636 §4.1: 43-128 characters of [A-Za-z0-9-._~]; 64 random bytes -> 86 characters.
    return secrets.token_urlsafe(64)


def authorization_url(
    config: OAuth2Config,
    endpoints: Endpoints,
    *,
    client_id: str,
    redirect_uri: str,
    state: str,
    scopes: Sequence[str],
    code_verifier: str | None,
) -> str:
    extra: dict[str, str] = dict(config.authorize_params)
    if code_verifier is not None:
        extra["code_challenge"] = create_s256_code_challenge(code_verifier)
        extra["code_challenge_method"] = "S256"
    scope_value = config.scope_separator.join(scopes) or None
    scope_arg = scope_value
    if config.scope_param != "scope":
        scope_arg = None
        if scope_value:
            extra[config.scope_param] = scope_value
    return str(
        prepare_grant_uri(
            endpoints.authorize_url,
            client_id=client_id,
            response_type="code",
            redirect_uri=redirect_uri,
            scope=scope_arg,
            state=state,
            **extra,
        )
    )


def check_issuer(endpoints: Endpoints, iss: str | None) -> str | None:
    """RFC 9207 §2.4: returns an error code, or None when the callback's issuer is acceptable."""
    if endpoints.issuer is None:
        return None
    if iss is None:
        return "iss_missing" if endpoints.require_iss else None
    return None if iss == endpoints.issuer else "iss_mismatch"


def _basic_auth(client: ClientAuth, method: str, uri: str, headers: dict[str, str], body: str) -> Any:
    # RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding (authlib skips this).
    pair = f"{quote(client.client_id, safe='')}:{quote(client.client_secret, safe='')}"
    headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    return uri, headers, body


@dataclass(frozen=True)
class TokenRequest:
    url: str
    headers: dict[str, str]
    body: bytes


def token_request(
    url: str,
    params: Mapping[str, str],
    client: ClientCredentials,
    *,
    body_format: str = "form",
) -> TokenRequest:
    headers = {"Accept": "application/json"}
    if body_format == "json":
        payload = dict(params)
        if client.method == "client_secret_post":
            payload |= {"client_id": client.client_id, "client_secret": client.client_secret}
        else:
            _basic_auth(ClientAuth(client.client_id, client.client_secret), "POST", url, headers, "")
        headers["Content-Type"] = "application/json"
        return TokenRequest(url, headers, json.dumps(payload).encode())
    method: Any = _basic_auth if client.method == "client_secret_basic" else client.method
    auth = ClientAuth(client.client_id, client.client_secret, auth_method=method)
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    _, headers, body = auth.prepare("POST", url, headers, urlencode(dict(params)))
    return TokenRequest(url, headers, body.encode())


def _dig(document: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(document, dict):
            return None
        document = document.get(part)
    return document


def parse_token_response(
    config: OAuth2Config,
    body: Any,
    *,
    now: dt.datetime,
    requested_scopes: Sequence[str] = (),
    previous_refresh_token: str | None = None,
) -> TokenSet:
    """Turns a token endpoint's JSON into a TokenSet. A refresh response without a refresh token keeps
    the previous one (RFC 6749 §6)."""
    if not isinstance(body, dict):
        raise TokenResponseInvalid("token response is not a JSON object")
    tokens = body
    if config.token_response_path:
        nested = _dig(body, config.token_response_path)
        if isinstance(nested, dict) and "access_token" in nested:
            tokens = nested
    access_token = tokens.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise TokenResponseInvalid("token response has no access_token")
    refresh_token = tokens.get("refresh_token")
    if not isinstance(refresh_token, str) or not refresh_token:
        refresh_token = previous_refresh_token
    expires_in = tokens.get("expires_in", config.default_expires_in)
    expires_at: dt.datetime | None = None
    if expires_in is not None:
        try:
            seconds = int(expires_in)
        except (TypeError, ValueError):
            raise TokenResponseInvalid("expires_in is not a number") from None
        if seconds > 0:
            expires_at = now + dt.timedelta(seconds=seconds)
    scope = tokens.get("scope")
    if isinstance(scope, str) and scope:
        scopes = tuple(s for s in scope.replace(",", " ").split() if s)
    elif isinstance(scope, list):
        scopes = tuple(str(s) for s in scope)
    else:
        scopes = tuple(requested_scopes)
    metadata = {
        name: value
        for name, path in config.metadata_fields.items()
        if (value := _dig(body, path)) is not None and isinstance(value, str | int | float | bool)
    }
    token_type = tokens.get("token_type")
    return TokenSet(
        access_token=access_token,
        token_type=token_type if isinstance(token_type, str) and token_type else "Bearer",
        refresh_token=refresh_token,
        expires_at=expires_at,
        scopes=scopes,
        metadata=metadata,
    )
