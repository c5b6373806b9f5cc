"""Resolves a provider's endpoints for one account: URL templates filled from the account's connection
settings, and, for a provider that gives an issuer with `discovery: true`, the authorization server's
metadata (RFC 8414, falling back to OpenID discovery), fetched once per issuer and cached."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from service.oauth.protocol import Endpoints
from service.providers import OAuth2Config, Provider, check_url_scheme, render_url

CACHE_SECONDS = 3600.0
MAX_METADATA_BYTES = 256 * 1024


class DiscoveryError(Exception):
    """The issuer's metadata could not be fetched or does not describe that issuer."""


def well_known_urls(issuer: str) -> list[str]:
    """RFC 8414 §3.1 inserts the well-known segment before the issuer's path; OpenID Connect Discovery
    appends it. Both are tried, in that order."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    rfc8414 = urlunsplit(
        (parts.scheme, parts.netloc, "/.well-known/oauth-authorization-server" + path, "", "")
    )
    oidc = urlunsplit((parts.scheme, parts.netloc, path + "/.well-known/openid-configuration", "", ""))
    return [rfc8414, oidc]


class Discovery:
    def __init__(self, http: aiohttp.ClientSession) -> None:
        self._http = http
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def metadata(self, issuer: str) -> dict[str, Any]:
        cached = self._cache.get(issuer)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        lock = self._locks.setdefault(issuer, asyncio.Lock())
        async with lock:  # one fetch per issuer, however many requests wait for it
            cached = self._cache.get(issuer)
            if cached is not None and cached[0] > time.monotonic():
                return cached[1]
            metadata = await self._fetch(issuer)
            self._cache[issuer] = (time.monotonic() + CACHE_SECONDS, metadata)
            return metadata

    async def _fetch(self, issuer: str) -> dict[str, Any]:
        problems: list[str] = []
        for url in well_known_urls(issuer):
            try:
                async with self._http.get(url, headers={"Accept": "application/json"}) as response:
                    if response.status != 200:
                        problems.append(f"{url}: HTTP {response.status}")
                        continue
                    document = json.loads(await response.content.read(MAX_METADATA_BYTES))
            except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                problems.append(f"{url}: {type(exc).__name__}")
                continue
            if not isinstance(document, dict) or document.get("issuer") != issuer:
                # RFC 8414 §3.3: the metadata's issuer must be identical to the one it was fetched for.
                problems.append(f"{url}: issuer does not match")
                continue
            return document
        raise DiscoveryError(f"no usable metadata for issuer {issuer}: {'; '.join(problems)}")

    async def endpoints(self, provider: Provider, settings: Mapping[str, str]) -> Endpoints:
        config = provider.oauth2
        assert config is not None
        if config.discovery:
            assert config.issuer is not None
            return _from_metadata(config, config.issuer, await self.metadata(config.issuer))
        return _from_definition(config, settings)


def _from_definition(config: OAuth2Config, settings: Mapping[str, str]) -> Endpoints:
    assert config.authorize_url is not None
    assert config.token_url is not None
    token_url = render_url(config.token_url, settings)
    return Endpoints(
        authorize_url=render_url(config.authorize_url, settings),
        token_url=token_url,
        refresh_url=render_url(config.refresh_url, settings) if config.refresh_url else token_url,
        revocation_url=render_url(config.revocation_url, settings) if config.revocation_url else None,
        issuer=config.issuer,
        require_iss=config.iss_parameter_supported and config.issuer is not None,
    )


def _from_metadata(config: OAuth2Config, issuer: str, metadata: Mapping[str, Any]) -> Endpoints:
    def url(name: str, fallback: str | None) -> str | None:
        value = metadata.get(name, fallback)
        if value is not None and (not isinstance(value, str) or not check_url_scheme(value)):
            raise DiscoveryError(f"metadata field {name} is not an https URL")
        return value

    authorize_url = url("authorization_endpoint", config.authorize_url)
    token_url = url("token_endpoint", config.token_url)
    if authorize_url is None or token_url is None:
        raise DiscoveryError(f"metadata of {issuer} lacks authorization_endpoint or token_endpoint")
    methods = metadata.get("code_challenge_methods_supported")
    if config.pkce and isinstance(methods, list) and "S256" not in methods:
        raise DiscoveryError(f"{issuer} does not support PKCE S256")
    return Endpoints(
        authorize_url=authorize_url,
        token_url=token_url,
        refresh_url=config.refresh_url or token_url,
        revocation_url=url("revocation_endpoint", config.revocation_url),
        issuer=issuer,
        require_iss=bool(metadata.get("authorization_response_iss_parameter_supported"))
        or config.iss_parameter_supported,
    )
