"""The proxy: a caller's request sent on to a provider's API with the credential applied the way the
provider expects, the answer streamed back as is. The caller names the account (or, for external
credentials, the provider) and a path below the provider's API base URL; the host is never theirs to choose.

  ANY /v1/proxy/external/{provider}/{path}   credentials given in X-Broker-Credential-<field>, kept nowhere
  ANY /v1/proxy/{account_id}/{path}          the stored credential of an account (refreshed once on a 401)"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from service.access import Operation, Principal, authenticate
from service.components import COMPONENTS, Components
from service.connections import CONNECTIONS
from service.http.accounts import decrypt_or_error, load_account
from service.http.connect import key_field_problem
from service.http.errors import DEPENDENCY_ERRORS, ApiError
from service.http.observe import REQUEST_ID_HEADER
from service.logs import request_id_var
from service.provider_api import ProviderApiError, api_values, apply_auth, base_url
from service.providers import ACCESS_TOKEN_FIELD, Provider, ProviderInputError
from service.refresh.refresher import Outcome
from service.store.accounts import Account

log = logging.getLogger("broker.proxy")
routes = web.RouteTableDef()

MAX_BODY_BYTES = 8 * 1024 * 1024  # the body is buffered: a 401 is retried once with a fresh token
CREDENTIAL_HEADER = "x-broker-credential-"
SETTING_HEADER = "x-broker-setting-"

# RFC 9110 §7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# The caller's own credentials and broker controls, which the provider must never see; Content-Length is
# recomputed from the buffered body.
NOT_FORWARDED = frozenset({"authorization", "cookie", "host", "x-no-store", "content-length", "expect"})
NOT_RETURNED = frozenset({"set-cookie", "set-cookie2"})
_ACCOUNT_PREFIX_SEGMENTS = 4  # "", v1, proxy, {account_id}
_EXTERNAL_PREFIX_SEGMENTS = 5  # "", v1, proxy, external, {provider}


# ---------------------------------------------------------------- the path (pure)


def proxied_path(raw_path: str, prefix_segments: int) -> str:
    """The part of the raw (still percent-encoded) request path after the route's prefix."""
    path = raw_path.split("?", 1)[0]
    return "/".join(path.split("/")[prefix_segments:])


def path_problem(raw: str) -> str | None:
    """Why a proxied path could leave the provider's API (another host, a parent folder), or None.
    Checked as sent and once percent-decoded, so `%2e%2e` and `%2F%2F` are caught too."""
    for form in (raw, unquote(raw, errors="replace")):  # bytes that are not UTF-8 are no threat: kept
        if any(ord(c) < 0x21 or 0x7F <= ord(c) <= 0x9F or c.isspace() for c in form):
            return "control characters or whitespace"
        if "\\" in form:
            return "a backslash"
        if "@" in form:
            return "an @"
        if "//" in "/" + form:
            return "an empty segment (//)"
        if ":" in form.split("/", 1)[0]:
            return "a scheme"
        if any(segment in (".", "..") for segment in form.split("/")):
            return "a . or .. segment"
    return None


def checked_path(raw_path: str) -> str:
    problem = path_problem(raw_path)
    if problem is not None:
        raise ApiError(400, "invalid_proxy_path", f"the proxied path may not contain {problem}")
    return raw_path


def upstream_url(base: str, raw_path: str, raw_query: str, query_auth: tuple[str, str] | None) -> URL:
    """base + path + the caller's query (plus the credential parameter for query-style auth), and proof
    that it still points at the base URL's scheme, host, port and path."""
    checked_path(raw_path)
    pairs = [p for p in raw_query.split("&") if p]
    if query_auth is not None:
        name, value = query_auth
        pairs = [p for p in pairs if unquote(p.split("=", 1)[0].replace("+", " ")) != name]
        pairs.append(f"{quote(name, safe='')}={quote(value, safe='')}")
    query = "&".join(pairs)
    target = URL(base + "/" + raw_path + ("?" + query if query else ""), encoded=True)
    expected = URL(base, encoded=True)
    base_path = expected.raw_path.rstrip("/")
    if (
        target.scheme != expected.scheme
        or target.host != expected.host
        or target.port != expected.port
        or target.user is not None
        or target.fragment
        or not (target.raw_path == base_path or target.raw_path.startswith(base_path + "/"))
    ):
        raise ApiError(400, "invalid_proxy_path", "the proxied path leaves the provider's API")
    return target


# ---------------------------------------------------------------- headers (pure)


def _connection_tokens(headers: Mapping[str, str]) -> set[str]:
    tokens: set[str] = set()
    for name, value in headers.items():
        if name.lower() == "connection":
            tokens |= {t.strip().lower() for t in value.split(",") if t.strip()}
    return tokens


def request_headers(incoming: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The caller's headers the provider may see."""
    drop = HOP_BY_HOP | NOT_FORWARDED | _connection_tokens(incoming)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        lower = name.lower()
        if lower in drop or lower.startswith("x-broker-"):
            continue
        out.add(name, value)
    if "Accept-Encoding" not in out:
        out["Accept-Encoding"] = "identity"  # bodies pass through undecoded: no encoding they did not ask for
    return out


def response_headers(upstream: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The provider's headers the caller may see."""
    drop = HOP_BY_HOP | NOT_RETURNED | _connection_tokens(upstream)
    return CIMultiDict((n, v) for n, v in upstream.items() if n.lower() not in drop)


# ---------------------------------------------------------------- one upstream call


@dataclass(frozen=True)
class Target:
    """Everything one call to the provider needs except the credential's values."""

    provider: Provider
    settings: Mapping[str, str]
    metadata: Mapping[str, Any]
    raw_path: str


def build_request(
    target: Target, credentials: Mapping[str, str], raw_query: str, incoming: CIMultiDictProxy[str]
) -> tuple[URL, CIMultiDict[str]]:
    provider = target.provider
    try:
        base = base_url(provider, api_values(target.settings, target.metadata, credentials))
    except ProviderApiError as exc:
        raise ApiError(409, "provider_api_unavailable", str(exc)) from None
    injected: dict[str, str] = {}
    params: dict[str, str] = {}
    try:
        apply_auth(provider, credentials, injected, params)
    except KeyError as exc:
        raise ApiError(409, "credential_incomplete", f"the credential has no {exc.args[0]!r}") from None
    query_auth = next(iter(params.items()), None)
    url = upstream_url(base, target.raw_path, raw_query, query_auth)
    headers = request_headers(incoming)
    for name, value in provider.api.headers.items():
        headers.setdefault(name, value)  # the provider's defaults; a caller may ask for another Accept
    for name, value in injected.items():
        headers.popall(name, None)
        headers[name] = value
    return url, headers


class UpstreamFailure(ApiError):
    """The provider could not be reached: audited, then answered as a JSON error."""


async def send(
    request: web.Request, prepared: tuple[URL, CIMultiDict[str]], body: bytes
) -> aiohttp.ClientResponse:
    url, headers = prepared
    http = request.app[CONNECTIONS].http
    try:
        return await http.request(
            request.method,
            url,
            headers=headers,
            data=body or None,
            allow_redirects=False,
            auto_decompress=False,
        )
    except TimeoutError:
        raise UpstreamFailure(504, "upstream_timeout", "the provider's API did not answer in time") from None
    except aiohttp.ClientError as exc:
        raise UpstreamFailure(
            502, "upstream_unavailable", f"the provider's API is unreachable: {type(exc).__name__}"
        ) from None


async def read_body(request: web.Request) -> bytes:
    declared = request.content_length
    if declared is not None and declared > MAX_BODY_BYTES:
        raise _too_large()
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _too_large()
        chunks.append(chunk)


def _too_large() -> ApiError:
    return ApiError(413, "request_too_large", f"a proxied body may be at most {MAX_BODY_BYTES} bytes")


async def stream_back(request: web.Request, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
    """The provider's answer, status and body unchanged, chunk by chunk. A failure halfway closes the
    connection, so the caller sees a cut-off body rather than a short one that looks complete."""
    response = web.StreamResponse(
        status=upstream.status, reason=upstream.reason, headers=response_headers(upstream.headers)
    )
    response.headers[REQUEST_ID_HEADER] = request_id_var.get() or ""
    await response.prepare(request)
    try:
        while True:
            try:
                chunk = await upstream.content.readany()
            except (TimeoutError, aiohttp.ClientError) as exc:
                log.warning("provider answer cut off", extra={"error": type(exc).__name__})
                if request.transport is not None:
                    request.transport.close()
                upstream.close()
                return response
            if not chunk:
                break
            try:
                await response.write(chunk)
            except ConnectionError:  # the caller went away
                upstream.close()
                return response
    finally:
        upstream.release()
    return response


async def _audit(
    parts: Components, principal: Principal, account_id: str | None, method: str, status: int, **more: Any
) -> None:
    """The provider already acted on the request: a failed audit write is logged, not made the caller's
    error (a 503 would invite a retry of a call that happened)."""
    try:
        await parts.audit.record(principal, account_id, "proxy", method=method, status=status, **more)
    except DEPENDENCY_ERRORS as exc:
        log.error(
            "proxy call not audited",
            extra={"account_id": account_id, "error": type(exc).__name__, **more},
        )


# ---------------------------------------------------------------- external credentials


def external_credentials(provider: Provider, headers: CIMultiDictProxy[str]) -> dict[str, str]:
    given: dict[str, str] = {}
    for name, value in headers.items():
        if name.lower().startswith(CREDENTIAL_HEADER):
            field = name[len(CREDENTIAL_HEADER) :].lower()
            if field in given:
                raise ApiError(400, "invalid_credentials", f"credential {field!r} given twice", field=field)
            given[field] = value.strip()
    if provider.is_oauth:
        if set(given) != {ACCESS_TOKEN_FIELD} or not given[ACCESS_TOKEN_FIELD]:
            raise ApiError(
                400,
                "invalid_credentials",
                f"{provider.name} takes X-Broker-Credential-{ACCESS_TOKEN_FIELD}",
                field="credentials",
            )
        return given
    expected = {f.name for f in provider.credential_fields}
    if set(given) != expected:
        raise ApiError(
            400,
            "invalid_credentials",
            f"{provider.name} takes " + ", ".join(f"X-Broker-Credential-{name}" for name in sorted(expected)),
            field="credentials",
        )
    problem = key_field_problem(provider, given)
    if problem:
        raise ApiError(400, "invalid_credentials", problem, field="credentials")
    return given


def external_settings(provider: Provider, headers: CIMultiDictProxy[str]) -> dict[str, str]:
    given = {
        name[len(SETTING_HEADER) :].lower(): value.strip()
        for name, value in headers.items()
        if name.lower().startswith(SETTING_HEADER)
    }
    try:
        return provider.resolve_settings(given)
    except ProviderInputError as exc:
        raise ApiError(400, "invalid_connection_settings", str(exc), field=exc.setting) from None


@routes.route("*", r"/v1/proxy/external/{provider}/{path:[\s\S]*}")  # [\s\S]: CR/LF reach the check
async def proxy_external(request: web.Request) -> web.StreamResponse:
    principal = await authenticate(request, "credentials:read")
    parts: Components = request.app[COMPONENTS]
    name = request.match_info["provider"]
    provider = parts.catalog.get(name)
    if provider is None:
        raise ApiError(404, "unknown_provider", f"no provider named {name[:64]!r}")
    credentials = external_credentials(provider, request.headers)
    settings = external_settings(provider, request.headers)
    target = Target(provider, settings, {}, proxied_path(request.raw_path, _EXTERNAL_PREFIX_SEGMENTS))
    prepared = build_request(target, credentials, request.rel_url.raw_query_string, request.headers)
    body = await read_body(request)
    try:
        upstream = await send(request, prepared, body)
    except UpstreamFailure as exc:
        await _audit(
            parts, principal, None, request.method, exc.status, provider=provider.name, error=exc.code
        )
        raise
    await _audit(parts, principal, None, request.method, upstream.status, provider=provider.name)
    return await stream_back(request, upstream)


# ---------------------------------------------------------------- stored accounts


def _refuse_expired(account: Account) -> None:
    """Never sends a token known to be expired (the same rule as the credentials API)."""
    if account.expires_at is None or account.expires_at > dt.datetime.now(dt.UTC):
        return
    if account.status == "reauthorization_required":
        raise ApiError(
            409, "reauthorization_required", "the account must be reconnected", account_id=account.id
        )
    raise ApiError(
        503, "credential_expired", "the token expired and could not be refreshed yet", account_id=account.id
    )


async def _after_refresh(parts: Components, account: Account) -> Account | None:
    """The account with a newer token after one refresh (ours, or a concurrent one that holds the
    lock), or None when there is none to retry with."""
    result = await parts.refresher.refresh_shared(account.id, account.version)
    if result.outcome == Outcome.LOCKED:
        # another instance is refreshing: wait for its write, bounded by one token call
        deadline = time.monotonic() + parts.refresher.settings.http_client_timeout
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            current = await parts.accounts.get_by_id(account.id)
            if current is None or current.version != account.version:
                break
    elif result.outcome not in (Outcome.REFRESHED, Outcome.ALREADY_FRESH):
        return None
    current = await parts.accounts.get_by_id(account.id)
    if current is None or current.version == account.version:
        return None
    return current


@routes.route("*", r"/v1/proxy/{account_id}/{path:[\s\S]*}")
async def proxy_account(request: web.Request) -> web.StreamResponse:
    principal = await authenticate(request)
    parts: Components = request.app[COMPONENTS]
    account = await load_account(request, principal, Operation.USE_CREDENTIALS)
    provider = parts.catalog.get(account.provider)
    if provider is None:
        raise ApiError(409, "unknown_provider", f"provider {account.provider!r} is no longer configured")
    raw_path = checked_path(proxied_path(request.raw_path, _ACCOUNT_PREFIX_SEGMENTS))
    body = await read_body(request)
    account = await parts.refresher.ensure_fresh(account)
    _refuse_expired(account)
    credentials = decrypt_or_error(parts, account)
    query = request.rel_url.raw_query_string

    def prepare(account: Account, credentials: Mapping[str, str]) -> tuple[URL, CIMultiDict[str]]:
        target = Target(provider, account.connection_settings, account.metadata, raw_path)
        return build_request(target, credentials, query, request.headers)

    try:
        upstream = await send(request, prepare(account, credentials), body)
        if upstream.status == 401 and provider.is_oauth and credentials.get("oauth_refresh_token"):
            try:
                fresher = await _after_refresh(parts, account)
            except BaseException:
                upstream.close()
                raise
            if fresher is not None:
                upstream.release()
                account, credentials = fresher, decrypt_or_error(parts, fresher)
                upstream = await send(request, prepare(account, credentials), body)
    except UpstreamFailure as exc:
        await _audit(parts, principal, account.id, request.method, exc.status, error=exc.code)
        raise
    await _audit(parts, principal, account.id, request.method, upstream.status)
    return await stream_back(request, upstream)
