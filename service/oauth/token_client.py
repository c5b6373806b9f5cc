"""Talks to token and revocation endpoints over the shared aiohttp session and classifies failures."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from service.oauth.protocol import (
    TERMINAL_OAUTH_ERRORS,
    ClientCredentials,
    Endpoints,
    TokenResponseInvalid,
    TokenSet,
    parse_token_response,
    token_request,
)
from service.providers import OAuth2Config

log = logging.getLogger("broker.oauth")
MAX_RESPONSE_BYTES = 256 * 1024


class TokenEndpointError(Exception):
    """A token request failed. `code` is stable and machine-readable; `transient` says a retry may help."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        transient: bool,
        status: int | None = None,
        oauth_error: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.transient = transient
        self.status = status
        self.oauth_error = oauth_error
        self.retry_after = retry_after


@dataclass(frozen=True)
class RevocationResult:
    status: str  # revoked | failed | not_supported
    detail: str | None = None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def classify(status: int, body: Any, headers: Mapping[str, str]) -> TokenEndpointError:
    """Decides what a non-2xx token endpoint answer means (RFC 6749 §5.2)."""
    oauth_error = body.get("error") if isinstance(body, dict) else None
    oauth_error = oauth_error if isinstance(oauth_error, str) else None
    if status == 429:
        return TokenEndpointError(
            "rate_limited",
            "token endpoint rate limited the broker",
            transient=True,
            status=status,
            oauth_error=oauth_error,
            retry_after=_retry_after(headers),
        )
    if status >= 500:
        return TokenEndpointError(
            "token_endpoint_unavailable",
            f"token endpoint answered {status}",
            transient=True,
            status=status,
            oauth_error=oauth_error,
            retry_after=_retry_after(headers),
        )
    if oauth_error in TERMINAL_OAUTH_ERRORS:
        return TokenEndpointError(
            oauth_error,
            f"token endpoint refused: {oauth_error}",
            transient=False,
            status=status,
            oauth_error=oauth_error,
        )
    return TokenEndpointError(
        "token_request_rejected",
        f"token endpoint answered {status} ({oauth_error or 'no error code'})",
        transient=False,
        status=status,
        oauth_error=oauth_error,
    )


class TokenClient:
    def __init__(self, http: aiohttp.ClientSession) -> None:
        self._http = http

    async def _post(
        self, url: str, params: Mapping[str, str], client: ClientCredentials, body_format: str
    ) -> Any:
        request = token_request(url, params, client, body_format=body_format)
        try:
            async with self._http.post(request.url, data=request.body, headers=request.headers) as response:
                raw = await response.content.read(MAX_RESPONSE_BYTES)
                status, headers = response.status, response.headers
        except TimeoutError:
            raise TokenEndpointError(
                "token_endpoint_timeout", "token endpoint timed out", transient=True
            ) from None
        except aiohttp.ClientError as exc:
            raise TokenEndpointError(
                "token_endpoint_unreachable",
                f"token endpoint unreachable: {type(exc).__name__}",
                transient=True,
            ) from None
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        if not 200 <= status < 300:
            raise classify(status, body, headers)
        if body is None:
            raise TokenEndpointError(
                "token_response_invalid",
                "token endpoint answered with something that is not JSON",
                transient=True,
                status=status,
            )
        # Some providers (Slack) answer 200 with {"ok": false, "error": ...}.
        if isinstance(body, dict) and "access_token" not in body and isinstance(body.get("error"), str):
            raise classify(400, body, headers)
        return body

    async def exchange_code(
        self,
        config: OAuth2Config,
        endpoints: Endpoints,
        client: ClientCredentials,
        *,
        code: str,
        redirect_uri: str,
        code_verifier: str | None,
        requested_scopes: Sequence[str],
    ) -> TokenSet:
        params = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if code_verifier is not None:
            params["code_verifier"] = code_verifier
        params |= dict(config.token_params)
        body = await self._post(endpoints.token_url, params, client, config.token_request_format)
        return self._parse(config, body, requested_scopes, None)

    async def refresh(
        self,
        config: OAuth2Config,
        endpoints: Endpoints,
        client: ClientCredentials,
        *,
        refresh_token: str,
        scopes: Sequence[str],
    ) -> TokenSet:
        params = {"grant_type": "refresh_token", "refresh_token": refresh_token, **config.refresh_params}
        body = await self._post(endpoints.refresh_url, params, client, config.token_request_format)
        return self._parse(config, body, scopes, refresh_token)

    @staticmethod
    def _parse(
        config: OAuth2Config, body: Any, scopes: Sequence[str], previous_refresh_token: str | None
    ) -> TokenSet:
        try:
            return parse_token_response(
                config,
                body,
                now=dt.datetime.now(dt.UTC),
                requested_scopes=scopes,
                previous_refresh_token=previous_refresh_token,
            )
        except TokenResponseInvalid as exc:
            raise TokenEndpointError("token_response_invalid", str(exc), transient=True) from None

    async def revoke(
        self, config: OAuth2Config, endpoints: Endpoints, client: ClientCredentials, *, token: str, hint: str
    ) -> RevocationResult:
        """RFC 7009 revocation; never raises: the caller reports the outcome."""
        if endpoints.revocation_url is None:
            return RevocationResult("not_supported")
        method = config.revocation_client_auth or client.method
        auth = ClientCredentials(client.client_id, client.client_secret, method)
        request = token_request(endpoints.revocation_url, {"token": token, "token_type_hint": hint}, auth)
        try:
            async with self._http.post(request.url, data=request.body, headers=request.headers) as response:
                status = response.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            return RevocationResult("failed", f"revocation endpoint unreachable: {type(exc).__name__}")
        except asyncio.CancelledError:
            raise
        if 200 <= status < 300:
            return RevocationResult("revoked")
        return RevocationResult("failed", f"revocation endpoint answered {status}")
