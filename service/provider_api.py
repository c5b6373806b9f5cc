"""Calls a provider's own API with a credential applied the way the provider expects (bearer, basic,
custom header, query parameter). Used by the test request now and by the proxy later."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from service.providers import Provider, check_url_scheme, placeholders, render_url


class ProviderApiError(Exception):
    """The request cannot be built (a value it needs is missing) or the URL is not allowed."""


@dataclass(frozen=True)
class TestOutcome:
    ok: bool
    status: int | None
    expected_status: int
    detail: str | None = None


def api_values(
    settings: Mapping[str, str], metadata: Mapping[str, Any], credentials: Mapping[str, str]
) -> dict[str, str]:
    """Placeholder values for base URL and paths: settings first, then metadata, then credential fields."""
    values = {k: str(v) for k, v in credentials.items()}
    values |= {k: str(v) for k, v in metadata.items()}
    values |= dict(settings)
    return values


def base_url(provider: Provider, values: Mapping[str, str]) -> str:
    missing = [n for n in placeholders(provider.api.base_url) if n not in values]
    if missing:
        raise ProviderApiError(f"base URL needs {missing[0]!r}, which this account does not have")
    url = render_url(provider.api.base_url, values)
    if not check_url_scheme(url):
        raise ProviderApiError("the provider's API base URL is not https")
    return url.rstrip("/")


def apply_auth(
    provider: Provider, credentials: Mapping[str, str], headers: dict[str, str], params: dict[str, str]
) -> None:
    auth = provider.api.auth
    if auth.style == "bearer":
        headers["Authorization"] = f"Bearer {credentials[auth.field or 'oauth_access_token']}"
    elif auth.style == "basic":
        user = credentials[auth.username_field or ""]
        password = credentials.get(auth.password_field or "", "") if auth.password_field else ""
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    elif auth.style == "header":
        headers[auth.header or ""] = auth.prefix + credentials[auth.field or ""]
    elif auth.style == "query":
        params[auth.param or ""] = credentials[auth.field or ""]


async def run_test_request(
    http: aiohttp.ClientSession,
    provider: Provider,
    *,
    settings: Mapping[str, str],
    metadata: Mapping[str, Any],
    credentials: Mapping[str, str],
) -> TestOutcome | None:
    """Runs the provider's test request; None when the provider defines none."""
    test = provider.api.test_request
    if test is None:
        return None
    values = api_values(settings, metadata, credentials)
    url = base_url(provider, values) + render_url(test.path, values)
    headers = {"Accept": "application/json", **provider.api.headers}
    params: dict[str, str] = {}
    apply_auth(provider, credentials, headers, params)
    try:
        async with http.request(
            test.method, url, headers=headers, params=params, allow_redirects=False
        ) as resp:
            status = resp.status
    except (TimeoutError, aiohttp.ClientError) as exc:
        return TestOutcome(
            False, None, test.expected_status, f"provider API unreachable: {type(exc).__name__}"
        )
    return TestOutcome(status == test.expected_status, status, test.expected_status)
