"""A fake OAuth 2 authorization server that speaks real HTTP on loopback.

It stands in for "the outside world" in the broker's tests and in the local demo.
It is written by hand from the RFCs (6749, 7636, 7009, 8414, 9207, 9700) and deliberately
does not use authlib: the broker uses authlib, so the fake must be an independent check
of it rather than a mirror of the same code.

Run it for the demo with ``python -m tests.fakes.oauth_provider --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import enum
import hashlib
import html
import json
import re
import secrets
import signal
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NoReturn
from urllib.parse import parse_qsl, unquote_plus, urlencode

from aiohttp import web
from multidict import CIMultiDict

__all__ = [
    "AccessTokenInfo",
    "ApiCall",
    "AuthorizationCode",
    "ClientAuthMode",
    "FakeOAuthProvider",
    "Grant",
    "RefreshTokenInfo",
    "RevokeCall",
    "TokenCall",
    "TokenFailure",
    "main",
]

ClientAuthMode = Literal["client_secret_basic", "client_secret_post", "any"]

BASIC: Final = "client_secret_basic"
POST: Final = "client_secret_post"
# RFC 6749 4.1.2 recommends a maximum authorization code lifetime of 10 minutes.
DEFAULT_CODE_TTL: Final = 600.0
# RFC 7636 4.1 / 4.2: verifier and challenge are 43..128 characters of the unreserved set.
_PKCE_VALUE: Final = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
_FORM: Final = "application/x-www-form-urlencoded"
_JSON: Final = "application/json"
# RFC 6749 5.1: token responses carry credentials, so no cache may keep them.
_NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_TEAM_ID: Final = "T123"
_DENIED: Final = "The user denied the request."


class TokenFailure(enum.StrEnum):
    """Faults the token endpoint can be told to produce; the value is the recorded outcome."""

    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    GARBAGE = "garbage"
    MISSING_ACCESS_TOKEN = "missing_access_token"
    INVALID_GRANT = "invalid_grant"
    INVALID_CLIENT = "invalid_client"
    RATE_LIMITED = "rate_limited"


@dataclass
class TokenCall:
    """One request seen by /token, appended on arrival and completed when answered."""

    grant_type: str | None
    time: float  # time.monotonic() at arrival, so tests can measure backoff between calls
    refresh_token: str | None  # the refresh token presented, for refresh_token grants
    outcome: str  # "ok", an RFC 6749 error code, or the TokenFailure value that was injected
    client_auth_used: str | None  # client_secret_basic, client_secret_post or None
    params: dict[str, str] = field(default_factory=dict)  # the decoded request body
    content_type: str = ""


@dataclass
class ApiCall:
    """One request seen by the protected APIs (/api/..., /keyed/...), as it arrived."""

    method: str
    path: str  # raw, still percent-encoded
    query: str  # raw query string
    headers: CIMultiDict[str]
    body: bytes


@dataclass
class RevokeCall:
    """One request seen by /revoke."""

    token: str | None
    token_type_hint: str | None
    time: float
    outcome: str
    client_auth_used: str | None


@dataclass
class AccessTokenInfo:
    expires_at: float  # epoch seconds (time.time())
    grant_id: str
    scopes: list[str]
    revoked: bool = False


@dataclass
class RefreshTokenInfo:
    grant_id: str
    # False once rotated away; presenting it again is reuse (RFC 9700 4.14.2).
    active: bool = True
    revoked: bool = False


@dataclass
class Grant:
    """What the resource owner approved; every token descends from one grant."""

    grant_id: str
    client_id: str
    scopes: list[str]
    username: str
    revoked: bool = False
    access_tokens: set[str] = field(default_factory=set)
    refresh_tokens: set[str] = field(default_factory=set)


@dataclass
class AuthorizationCode:
    client_id: str
    redirect_uri: str
    scopes: list[str]
    code_challenge: str | None
    expires_at: float
    username: str
    used: bool = False
    grant_id: str | None = None  # the grant it was exchanged for, to revoke on reuse


@dataclass(frozen=True)
class _AuthorizeRequest:
    """A validated /authorize request, kept while the login page waits for a decision."""

    redirect_uri: str
    state: str | None
    scopes: list[str]
    code_challenge: str | None


@dataclass(frozen=True)
class _QueuedFailure:
    kind: TokenFailure
    retry_after: int | None


class _OAuthError(Exception):
    """An RFC 6749 5.2 error; raised deep inside a handler and turned into JSON at the edge."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.status = status
        self.error = error
        self.description = description

    def to_response(self) -> web.Response:
        headers: dict[str, str] = {}
        if self.status == 401:
            # RFC 6749 5.2: a 401 must name the scheme the client may authenticate with.
            headers["WWW-Authenticate"] = 'Basic realm="fake-oauth"'
        return _json({"error": self.error, "error_description": self.description}, self.status, headers)


class _AuthorizeError(Exception):
    """An error that is reported to the client by redirecting (RFC 6749 4.1.2.1)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description


def _invalid_request(description: str) -> _OAuthError:
    return _OAuthError(400, "invalid_request", description)


def _invalid_grant(description: str) -> _OAuthError:
    return _OAuthError(400, "invalid_grant", description)


def _invalid_client(description: str) -> _OAuthError:
    return _OAuthError(401, "invalid_client", description)


def _json(
    body: Mapping[str, Any], status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response(dict(body), status=status, headers={**_NO_STORE, **(headers or {})})


def _s256(verifier: str) -> str:
    """RFC 7636 4.2: BASE64URL(SHA256(ASCII(code_verifier))) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _split_scopes(raw: str | None) -> list[str]:
    # RFC 6749 3.3: space-delimited; a comma-separated value is deliberately kept as one scope.
    return [s for s in (raw or "").split(" ") if s]


def _single_valued(pairs: Iterable[tuple[str, str]]) -> tuple[dict[str, str], set[str]]:
    """Collapse parameters to a dict and report names sent more than once (forbidden by RFC 6749 3.1)."""
    values: dict[str, str] = {}
    repeated: set[str] = set()
    for name, value in pairs:
        if name in values:
            repeated.add(name)
        values[name] = value
    return values, repeated


def _with_query(uri: str, params: Mapping[str, str]) -> str:
    """Append params, keeping the registered redirect_uri byte for byte (RFC 6749 3.1.2)."""
    separator = "&" if "?" in uri else "?"
    return f"{uri}{separator}{urlencode(params)}"


def _redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location, **_NO_STORE})


def _parse_basic(header: str) -> tuple[str, str] | None:
    """Decode an HTTP Basic header into raw (user, password), or None when it is another scheme."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ("", "")  # malformed credentials are a failed authentication, not another scheme
    user, _, password = decoded.partition(":")
    return user, password


def _bearer(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


_CSS: Final = """
body{margin:0;font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;background:#f1f4f9;color:#1f2937}
main{max-width:26rem;margin:8vh auto;background:#fff;border-radius:14px;padding:2rem 2.2rem;
box-shadow:0 10px 30px rgba(15,23,42,.12)}
h1{font-size:1.35rem;margin:0 0 .3rem}
p.sub{margin:0 0 1.4rem;color:#6b7280;font-size:.92rem}
label{display:block;font-weight:600;font-size:.9rem;margin-bottom:.35rem}
input[type=text]{width:100%;box-sizing:border-box;padding:.6rem .75rem;border:1px solid #d1d5db;
border-radius:8px;font-size:1rem}
ul{padding-left:1.2rem;margin:.3rem 0 1.2rem}
code{background:#eef2ff;padding:.1rem .35rem;border-radius:5px}
.row{display:flex;gap:.75rem;margin-top:1.4rem}
button{flex:1;padding:.65rem;border-radius:8px;border:0;font-size:1rem;cursor:pointer}
.approve{background:#2563eb;color:#fff}.deny{background:#e5e7eb;color:#111827}
"""


def _page(title: str, body: str) -> str:
    """A self-contained HTML page (inline CSS, no external assets)."""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )


def _html(title: str, body: str, status: int = 200) -> web.Response:
    return web.Response(status=status, text=_page(title, body), content_type="text/html")


def _html_error(message: str) -> web.Response:
    # RFC 6749 4.1.2.1: with a bad client or redirect_uri the user is told, never redirected.
    body = f"<h1>Authorization error</h1><p class=sub>{html.escape(message)}</p>"
    return _html("Demo OAuth Provider - error", body, status=400)


class FakeOAuthProvider:
    """An in-process OAuth 2 authorization server plus two tiny protected APIs.

    All state lives in public attributes so tests can inspect and tweak it between requests.
    Handlers never await between reading and changing state (except the injected timeout),
    so concurrent requests see each change atomically, as on a real single-writer server.
    """

    def __init__(
        self,
        *,
        client_id: str = "demo-client",
        client_secret: str = "demo-secret",
        redirect_uris: Sequence[str] = ("http://127.0.0.1:8080/oauth/callback",),
        access_token_ttl: int = 3600,
        rotate_refresh_tokens: bool = True,
        revoke_grant_on_reuse: bool = True,
        require_pkce: bool = True,
        client_auth: ClientAuthMode = "any",
        auto_approve: bool = True,
        issue_iss: bool = True,
        nest_tokens_under: str | None = None,
        include_refresh_token: bool = True,
        json_token_requests: bool = True,
        valid_api_keys: Iterable[str] = ("key-123",),
        scopes_supported: Sequence[str] = ("read", "write", "profile"),
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uris: list[str] = list(redirect_uris)
        self.access_token_ttl = access_token_ttl
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.revoke_grant_on_reuse = revoke_grant_on_reuse
        self.require_pkce = require_pkce
        self.client_auth: ClientAuthMode = client_auth
        self.auto_approve = auto_approve
        self.issue_iss = issue_iss
        self.nest_tokens_under = nest_tokens_under
        self.include_refresh_token = include_refresh_token
        self.json_token_requests = json_token_requests
        self.valid_api_keys: set[str] = set(valid_api_keys)
        self.scopes_supported: list[str] = list(scopes_supported)
        self.code_ttl: float = DEFAULT_CODE_TTL
        self.timeout_delay: float = 30.0

        # Observations for tests.
        self.token_calls: list[TokenCall] = []
        self.revoke_calls: list[RevokeCall] = []
        self.reuse_detected = 0
        self.revoked_tokens: set[str] = set()
        self.last_authorize_params: dict[str, str] = {}
        self.api_calls: list[ApiCall] = []
        # where /keyed/redirect sends its caller (a 302); None: that endpoint answers 404
        self.redirect_target: str | None = None

        # Server state.
        self.access_tokens: dict[str, AccessTokenInfo] = {}
        self.refresh_tokens: dict[str, RefreshTokenInfo] = {}
        self.grants: dict[str, Grant] = {}
        self.codes: dict[str, AuthorizationCode] = {}
        self._pending: dict[str, _AuthorizeRequest] = {}
        self._token_failures: deque[_QueuedFailure] = deque()
        self._deny_next = 0

        self._runner: web.AppRunner | None = None
        self._issuer: str | None = None
        # Set on stop() so an injected TIMEOUT does not hold up shutdown for timeout_delay.
        self._stopping = asyncio.Event()

    # ----------------------------------------------------------------- lifecycle

    @property
    def issuer(self) -> str:
        if self._issuer is None:
            raise RuntimeError("FakeOAuthProvider is not started")
        return self._issuer

    @property
    def base_url(self) -> str:
        return self.issuer

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on host:port (0 picks a free port) and return the base URL, which is also the issuer."""
        if self._runner is not None:
            raise RuntimeError("FakeOAuthProvider is already started")
        self._stopping.clear()
        # A short shutdown_timeout keeps stop() fast even if a client left a request hanging.
        runner = web.AppRunner(self._build_app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        self._runner = runner
        bound_port = int(runner.addresses[0][1])
        shown_host = f"[{host}]" if ":" in host else host
        self._issuer = f"http://{shown_host}:{bound_port}"
        return self._issuer

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
        self._runner = None

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)  # the proxy tests send up to 8 MiB
        app.router.add_get("/", self._handle_index)
        app.router.add_get("/authorize", self._handle_authorize)
        app.router.add_post("/authorize/decision", self._handle_decision)
        app.router.add_post("/token", self._handle_token)
        app.router.add_post("/revoke", self._handle_revoke)
        app.router.add_get("/.well-known/oauth-authorization-server", self._handle_metadata)
        app.router.add_get("/.well-known/openid-configuration", self._handle_metadata)
        app.router.add_get("/api/me", self._handle_api_me)
        app.router.add_get("/keyed/me", self._handle_keyed_me)
        app.router.add_route("*", "/api/echo", self._handle_api_echo)
        app.router.add_route("*", "/keyed/echo", self._handle_keyed_echo)
        app.router.add_route("*", r"/keyed/echo/{tail:[\s\S]*}", self._handle_keyed_echo)
        app.router.add_get("/keyed/big", self._handle_keyed_big)
        app.router.add_get("/keyed/redirect", self._handle_keyed_redirect)
        app.router.add_get("/keyed/slow", self._handle_keyed_slow)
        return app

    # ------------------------------------------------------------ test controls

    def fail_next_token(
        self, failure: TokenFailure | Sequence[TokenFailure], retry_after: int | None = None
    ) -> None:
        """Queue faults; each one answers (and consumes) one later /token call, in order."""
        kinds = [failure] if isinstance(failure, TokenFailure) else list(failure)
        self._token_failures.extend(_QueuedFailure(kind, retry_after) for kind in kinds)

    def deny_next_authorize(self) -> None:
        """Make the next valid /authorize request end with error=access_denied."""
        self._deny_next += 1

    @property
    def refresh_calls(self) -> list[TokenCall]:
        return [call for call in self.token_calls if call.grant_type == "refresh_token"]

    def is_access_token_valid(self, token: str) -> bool:
        info = self.access_tokens.get(token)
        if info is None or info.revoked or self.grants[info.grant_id].revoked:
            return False
        return time.time() < info.expires_at

    def expire_access_token(self, token: str) -> None:
        """Backdate a token so tests need not sleep through a TTL."""
        self.access_tokens[token].expires_at = time.time() - 1

    def issue_grant(self, scopes: Sequence[str] = ("read",), username: str = "demo") -> dict[str, Any]:
        """Mint a token set without the browser dance (for import tests); shaped like a token response."""
        grant = self._new_grant(self.client_id, list(scopes), username)
        return self._issue_tokens(grant, grant.scopes, with_refresh=True)

    # -------------------------------------------------------------- grant state

    def _new_grant(self, client_id: str, scopes: list[str], username: str) -> Grant:
        grant = Grant(
            grant_id=f"g-{secrets.token_hex(8)}", client_id=client_id, scopes=scopes, username=username
        )
        self.grants[grant.grant_id] = grant
        return grant

    def _issue_tokens(self, grant: Grant, scopes: list[str], *, with_refresh: bool) -> dict[str, Any]:
        access = f"at-{secrets.token_urlsafe(24)}"
        self.access_tokens[access] = AccessTokenInfo(
            expires_at=time.time() + self.access_token_ttl, grant_id=grant.grant_id, scopes=list(scopes)
        )
        grant.access_tokens.add(access)
        fields: dict[str, Any] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.access_token_ttl,
        }
        if with_refresh and self.include_refresh_token:
            refresh = f"rt-{secrets.token_urlsafe(24)}"
            self.refresh_tokens[refresh] = RefreshTokenInfo(grant_id=grant.grant_id)
            grant.refresh_tokens.add(refresh)
            fields["refresh_token"] = refresh
        if scopes:
            fields["scope"] = " ".join(scopes)
        return self._shape(fields)

    def _shape(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Place token fields at the top level, or under a key the way Slack's oauth.v2.access does."""
        if self.nest_tokens_under is None:
            return fields
        return {"ok": True, "team": {"id": _TEAM_ID}, self.nest_tokens_under: fields}

    def _revoke_grant(self, grant: Grant) -> None:
        grant.revoked = True
        for token in grant.access_tokens:
            self.access_tokens[token].revoked = True
        for token in grant.refresh_tokens:
            self.refresh_tokens[token].revoked = True

    # ---------------------------------------------------------------- /authorize

    async def _handle_authorize(self, request: web.Request) -> web.Response:
        params, repeated = _single_valued(request.query.items())
        # Recorded before validation so tests can see what the broker sent even when it is wrong.
        self.last_authorize_params = dict(params)
        redirect_uri = params.get("redirect_uri", "")
        if params.get("client_id") != self.client_id or "client_id" in repeated:
            return _html_error("Unknown client_id.")
        if redirect_uri not in self.redirect_uris or "redirect_uri" in repeated:
            return _html_error("redirect_uri does not exactly match a registered redirect URI.")
        state = params.get("state")
        try:
            authz = self._validate_authorize(params, repeated)
        except _AuthorizeError as exc:
            return self._redirect_error(redirect_uri, state, exc.error, exc.description)
        if self._deny_next:
            self._deny_next -= 1
            return self._redirect_error(redirect_uri, state, "access_denied", _DENIED)
        if self.auto_approve:
            return self._approve(authz, username="demo")
        request_id = secrets.token_urlsafe(16)
        self._pending[request_id] = authz
        return self._login_page(request_id, authz)

    def _validate_authorize(self, params: dict[str, str], repeated: set[str]) -> _AuthorizeRequest:
        if repeated:
            raise _AuthorizeError("invalid_request", f"repeated parameters: {', '.join(sorted(repeated))}")
        if params.get("response_type") != "code":
            raise _AuthorizeError("unsupported_response_type", "only response_type=code is supported")
        challenge = params.get("code_challenge")
        if challenge is None:
            if self.require_pkce:
                raise _AuthorizeError("invalid_request", "code_challenge is required (PKCE)")
        else:
            # RFC 7636 4.3: a missing method means "plain", which this server refuses.
            if params.get("code_challenge_method", "plain") != "S256":
                raise _AuthorizeError("invalid_request", "code_challenge_method must be S256")
            if not _PKCE_VALUE.fullmatch(challenge):
                raise _AuthorizeError("invalid_request", "malformed code_challenge")
        return _AuthorizeRequest(
            redirect_uri=params["redirect_uri"],
            state=params.get("state"),
            scopes=_split_scopes(params.get("scope")),
            code_challenge=challenge,
        )

    def _approve(self, authz: _AuthorizeRequest, username: str) -> web.Response:
        code = secrets.token_urlsafe(32)
        self.codes[code] = AuthorizationCode(
            client_id=self.client_id,
            redirect_uri=authz.redirect_uri,
            scopes=authz.scopes,
            code_challenge=authz.code_challenge,
            expires_at=time.time() + self.code_ttl,
            username=username,
        )
        return _redirect(_with_query(authz.redirect_uri, self._response_params({"code": code}, authz.state)))

    def _redirect_error(
        self, redirect_uri: str, state: str | None, error: str, description: str
    ) -> web.Response:
        params = self._response_params({"error": error, "error_description": description}, state)
        return _redirect(_with_query(redirect_uri, params))

    def _response_params(self, params: dict[str, str], state: str | None) -> dict[str, str]:
        if state is not None:
            params["state"] = state
        if self.issue_iss:
            # RFC 9207 2: iss goes on success and error responses alike.
            params["iss"] = self.issuer
        return params

    def _login_page(self, request_id: str, authz: _AuthorizeRequest) -> web.Response:
        scopes = "".join(f"<li><code>{html.escape(s)}</code></li>" for s in authz.scopes) or "<li>(none)</li>"
        body = (
            "<h1>Demo OAuth Provider</h1>"
            f"<p class=sub><code>{html.escape(self.client_id)}</code> wants to access your account.</p>"
            f"<label>Requested scopes</label><ul>{scopes}</ul>"
            '<form method="post" action="/authorize/decision">'
            f'<input type="hidden" name="request_id" value="{html.escape(request_id)}">'
            '<label for="username">Username</label>'
            '<input type="text" id="username" name="username" value="demo" autocomplete="username">'
            '<div class="row"><button class="deny" name="decision" value="deny">Deny</button>'
            '<button class="approve" name="decision" value="approve">Approve</button></div>'
            "</form>"
        )
        return _html("Demo OAuth Provider", body)

    async def _handle_decision(self, request: web.Request) -> web.Response:
        form = await request.post()
        request_id = str(form.get("request_id", ""))
        # pop: a decision is single use, like the code it leads to.
        authz = self._pending.pop(request_id, None)
        if authz is None:
            return _html_error("Unknown or already used login request.")
        decision = form.get("decision")
        if decision == "approve":
            return self._approve(authz, username=str(form.get("username") or "demo"))
        if decision == "deny":
            return self._redirect_error(authz.redirect_uri, authz.state, "access_denied", _DENIED)
        return _html_error("decision must be approve or deny.")

    # -------------------------------------------------------------------- /token

    async def _handle_token(self, request: web.Request) -> web.Response:
        call = TokenCall(
            grant_type=None,
            time=time.monotonic(),
            refresh_token=None,
            outcome="pending",
            client_auth_used=None,
            content_type=request.content_type,
        )
        self.token_calls.append(call)
        # Taken first so an injected fault consumes exactly one call whatever the body holds.
        failure = self._token_failures.popleft() if self._token_failures else None
        params: dict[str, str] = {}
        parse_error: _OAuthError | None = None
        try:
            params = await self._read_params(request)
        except _OAuthError as exc:
            parse_error = exc
        call.params = params
        call.grant_type = params.get("grant_type")
        if call.grant_type == "refresh_token":
            call.refresh_token = params.get("refresh_token")
        call.client_auth_used = _detect_client_auth(request, params)
        if failure is not None:
            call.outcome = failure.kind.value
            return await self._serve_failure(failure)
        try:
            if parse_error is not None:
                raise parse_error
            body = self._run_grant(request, params)
        except _OAuthError as exc:
            call.outcome = exc.error
            return exc.to_response()
        call.outcome = "ok"
        return _json(body)

    def _run_grant(self, request: web.Request, params: dict[str, str]) -> dict[str, Any]:
        client_id = self._authenticate_client(request, params)
        grant_type = params.get("grant_type")
        if grant_type == "authorization_code":
            return self._grant_authorization_code(params, client_id)
        if grant_type == "refresh_token":
            return self._grant_refresh_token(params, client_id)
        if grant_type is None:
            raise _invalid_request("grant_type is required")
        raise _OAuthError(400, "unsupported_grant_type", f"grant_type {grant_type!r} is not supported")

    async def _read_params(self, request: web.Request) -> dict[str, str]:
        """Decode a form body (RFC 6749 4.1.3) or, when enabled, a JSON object body."""
        raw = await request.read()
        if request.content_type == _FORM:
            try:
                pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
            except UnicodeDecodeError as exc:
                raise _invalid_request("body is not UTF-8") from exc
        elif request.content_type == _JSON and self.json_token_requests:
            pairs = _json_pairs(raw)
        else:
            raise _invalid_request(f"unsupported content type {request.content_type!r}")
        params, repeated = _single_valued(pairs)
        if repeated:
            raise _invalid_request(f"repeated parameters: {', '.join(sorted(repeated))}")
        return params

    def _authenticate_client(self, request: web.Request, params: dict[str, str]) -> str:
        """RFC 6749 2.3.1 client authentication; returns the authenticated client_id."""
        method = _detect_client_auth(request, params)
        if method is None:
            raise _invalid_client("client authentication required")
        if method == BASIC and "client_secret" in params:
            # RFC 6749 2.3: a client must not use more than one authentication method per request.
            raise _invalid_request("client credentials sent both in the header and in the body")
        if self.client_auth != "any" and method != self.client_auth:
            raise _invalid_client(f"this client must authenticate with {self.client_auth}")
        client_id, client_secret = self._presented_credentials(request, params, method)
        # A body client_id next to Basic credentials is allowed, but must name the same client.
        if method == BASIC and params.get("client_id", client_id) != client_id:
            raise _invalid_client("client_id in the body differs from the Basic credentials")
        if client_id != self.client_id or not secrets.compare_digest(
            client_secret.encode("utf-8"), self.client_secret.encode("utf-8")
        ):
            raise _invalid_client("unknown client or wrong secret")
        return client_id

    @staticmethod
    def _presented_credentials(request: web.Request, params: dict[str, str], method: str) -> tuple[str, str]:
        if method == POST:
            return params["client_id"], params["client_secret"]
        user, password = _parse_basic(request.headers["Authorization"]) or ("", "")
        # RFC 6749 2.3.1: id and secret are form-urlencoded before Basic encoding; brokers that
        # skip that step fail here as soon as a secret holds a reserved character.
        return unquote_plus(user), unquote_plus(password)

    def _grant_authorization_code(self, params: dict[str, str], client_id: str) -> dict[str, Any]:
        code = self.codes.get(_required(params, "code"))
        if code is None:
            raise _invalid_grant("unknown authorization code")
        if code.used:
            # RFC 6749 4.1.2: a replayed code revokes what was issued from it.
            if code.grant_id is not None:
                self._revoke_grant(self.grants[code.grant_id])
            raise _invalid_grant("authorization code was already used")
        code.used = True  # any presentation consumes the code, so a failed attempt cannot be retried
        if time.time() >= code.expires_at:
            raise _invalid_grant("authorization code expired")
        if code.client_id != client_id:
            raise _invalid_grant("authorization code was issued to another client")
        # RFC 6749 4.1.3: identical to the redirect_uri of the authorization request.
        if params.get("redirect_uri") != code.redirect_uri:
            raise _invalid_grant("redirect_uri does not match the authorization request")
        _verify_pkce(code.code_challenge, params.get("code_verifier"))
        grant = self._new_grant(client_id, code.scopes, code.username)
        code.grant_id = grant.grant_id
        return self._issue_tokens(grant, grant.scopes, with_refresh=True)

    def _grant_refresh_token(self, params: dict[str, str], client_id: str) -> dict[str, Any]:
        presented = _required(params, "refresh_token")
        info = self.refresh_tokens.get(presented)
        if info is None:
            raise _invalid_grant("unknown refresh token")
        grant = self.grants[info.grant_id]
        if not info.active:
            self._on_reuse(grant)
        if info.revoked or grant.revoked:
            raise _invalid_grant("refresh token was revoked")
        if grant.client_id != client_id:
            raise _invalid_grant("refresh token was issued to another client")
        scopes = _narrow_scopes(grant.scopes, params.get("scope"))
        if self.rotate_refresh_tokens:
            # Kept (inactive) rather than deleted so a later replay is recognised as reuse.
            info.active = False
        # Without rotation the response omits refresh_token: the client must keep its old one.
        return self._issue_tokens(grant, scopes, with_refresh=self.rotate_refresh_tokens)

    def _on_reuse(self, grant: Grant) -> NoReturn:
        # RFC 9700 4.14.2: a rotated-away token coming back means it leaked (or the client lost a
        # response); the server cannot tell which party is legitimate, so it kills the grant.
        self.reuse_detected += 1
        if self.revoke_grant_on_reuse:
            self._revoke_grant(grant)
        raise _invalid_grant("refresh token was already used")

    async def _serve_failure(self, failure: _QueuedFailure) -> web.Response:
        kind = failure.kind
        if kind is TokenFailure.SERVER_ERROR:
            return _json({"error": "server_error"}, 500)
        if kind is TokenFailure.TIMEOUT:
            await self._sleep_unless_stopping(self.timeout_delay)
            # The request is "lost": no grant state changed, so a retry behaves as the first try.
            return _json({"error": "temporarily_unavailable", "error_description": "injected timeout"}, 503)
        if kind is TokenFailure.GARBAGE:
            return web.Response(status=200, text="<html>oops", content_type="text/html")
        if kind is TokenFailure.MISSING_ACCESS_TOKEN:
            return _json(self._shape({"token_type": "Bearer", "expires_in": self.access_token_ttl}))
        if kind is TokenFailure.INVALID_GRANT:
            return _invalid_grant("injected invalid_grant").to_response()
        if kind is TokenFailure.INVALID_CLIENT:
            return _invalid_client("injected invalid_client").to_response()
        retry_after = failure.retry_after if failure.retry_after is not None else 1
        body = {"error": "temporarily_unavailable", "error_description": "rate limited"}
        return _json(body, 429, {"Retry-After": str(retry_after)})

    async def _sleep_unless_stopping(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)

    # ------------------------------------------------------------------- /revoke

    async def _handle_revoke(self, request: web.Request) -> web.Response:
        call = RevokeCall(None, None, time.monotonic(), "pending", None)
        self.revoke_calls.append(call)
        try:
            params = await self._read_params(request)
            call.token, call.token_type_hint = params.get("token"), params.get("token_type_hint")
            call.client_auth_used = _detect_client_auth(request, params)
            self._authenticate_client(request, params)
            self._revoke(_required(params, "token"))
        except _OAuthError as exc:
            call.outcome = exc.error
            return exc.to_response()
        call.outcome = "ok"
        # RFC 7009 2.2: 200 whether or not the token was known; the hint is only a hint.
        return web.Response(status=200, headers=_NO_STORE)

    def _revoke(self, token: str) -> None:
        self.revoked_tokens.add(token)
        refresh = self.refresh_tokens.get(token)
        if refresh is not None:
            # RFC 7009 2.1: revoking a refresh token also invalidates the access tokens of its grant.
            self._revoke_grant(self.grants[refresh.grant_id])
        elif token in self.access_tokens:
            self.access_tokens[token].revoked = True

    # --------------------------------------------------------- metadata and APIs

    async def _handle_metadata(self, request: web.Request) -> web.Response:
        auth_methods = [BASIC, POST] if self.client_auth == "any" else [self.client_auth]
        issuer = self.issuer
        document = {
            "issuer": issuer,
            "authorization_endpoint": f"{issuer}/authorize",
            "token_endpoint": f"{issuer}/token",
            "revocation_endpoint": f"{issuer}/revoke",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": auth_methods,
            "revocation_endpoint_auth_methods_supported": auth_methods,
            "authorization_response_iss_parameter_supported": self.issue_iss,
            "scopes_supported": self.scopes_supported,
        }
        return web.json_response(document)

    @property
    def last_api_call(self) -> ApiCall:
        if not self.api_calls:
            raise AssertionError("no API request has arrived")
        return self.api_calls[-1]

    async def _record_api_call(self, request: web.Request) -> ApiCall:
        path, _, query = request.raw_path.partition("?")
        call = ApiCall(request.method, path, query, CIMultiDict(request.headers), await request.read())
        self.api_calls.append(call)
        return call

    def _bearer_problem(self, request: web.Request) -> web.Response | None:
        token = _bearer(request)
        if token is None or not self.is_access_token_valid(token):
            body = {"error": "invalid_token", "error_description": "missing, expired or revoked access token"}
            return web.json_response(
                body, status=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
            )
        return None

    def _key_problem(self, request: web.Request) -> web.Response | None:
        key = _presented_api_key(request)
        if key is None or key not in self.valid_api_keys:
            return web.json_response({"error": "invalid_api_key"}, status=401)
        return None

    async def _handle_api_me(self, request: web.Request) -> web.Response:
        await self._record_api_call(request)
        problem = self._bearer_problem(request)
        if problem is not None:
            return problem
        scopes = self.access_tokens[_bearer(request) or ""].scopes
        return web.json_response({"id": "user-1", "name": "Demo User", "scopes": scopes})

    async def _handle_keyed_me(self, request: web.Request) -> web.Response:
        await self._record_api_call(request)
        return self._key_problem(request) or web.json_response({"id": "key-user", "name": "Key User"})

    @staticmethod
    def _echo(call: ApiCall) -> web.Response:
        """What arrived, plus headers a proxy must not pass on (hop-by-hop ones, a cookie)."""
        body = {
            "method": call.method,
            "path": call.path,
            "query": call.query,
            "content_type": call.headers.get("Content-Type"),
            "body": call.body.decode("utf-8", "replace"),
        }
        response = web.json_response(body, status=201 if call.method == "POST" else 200)
        response.headers.add("Set-Cookie", "fake_session=s3cr3t; Path=/; HttpOnly")
        response.headers["Connection"] = "keep-alive, X-Hop-Named"
        response.headers["X-Hop-Named"] = "only for the next hop"
        response.headers["Keep-Alive"] = "timeout=5"
        response.headers["Proxy-Authenticate"] = 'Basic realm="fake-proxy"'
        response.headers["X-Fake-Kept"] = "yes"
        return response

    async def _handle_api_echo(self, request: web.Request) -> web.Response:
        call = await self._record_api_call(request)
        return self._bearer_problem(request) or self._echo(call)

    async def _handle_keyed_echo(self, request: web.Request) -> web.Response:
        call = await self._record_api_call(request)
        return self._key_problem(request) or self._echo(call)

    async def _handle_keyed_big(self, request: web.Request) -> web.StreamResponse:
        """`size` bytes (default 3 MB) of a known pattern in uneven chunks, without Content-Length."""
        await self._record_api_call(request)
        problem = self._key_problem(request)
        if problem is not None:
            return problem
        size = min(int(request.query.get("size", str(3 * 1024 * 1024))), 64 * 1024 * 1024)
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        sent = 0
        while sent < size:
            chunk = big_body_slice(sent, min(size, sent + 50_000 + sent % 7919))
            await response.write(chunk)
            sent += len(chunk)
        await response.write_eof()
        return response

    async def _handle_keyed_slow(self, request: web.Request) -> web.Response:
        """Answers only after timeout_delay seconds (or at shutdown), like an API that hangs."""
        await self._record_api_call(request)
        await self._sleep_unless_stopping(self.timeout_delay)
        return self._key_problem(request) or web.json_response({"slow": True})

    async def _handle_keyed_redirect(self, request: web.Request) -> web.Response:
        await self._record_api_call(request)
        problem = self._key_problem(request)
        if problem is not None:
            return problem
        if self.redirect_target is None:
            return web.json_response({"error": "not_found"}, status=404)
        return web.Response(status=302, headers={"Location": self.redirect_target})

    async def _handle_index(self, request: web.Request) -> web.Response:
        body = (
            "<h1>Demo OAuth Provider</h1>"
            "<p class=sub>A fake OAuth 2 authorization server for tests and the local demo. "
            "It is not a real identity provider.</p>"
            f"<p>Client id: <code>{html.escape(self.client_id)}</code></p>"
            '<p>Metadata: <a href="/.well-known/oauth-authorization-server">'
            "/.well-known/oauth-authorization-server</a></p>"
        )
        return _html("Demo OAuth Provider", body)


# ------------------------------------------------------------------ module helpers


def big_body_slice(start: int, end: int) -> bytes:
    """Bytes start..end of the endless pattern /keyed/big serves: numbered 16-byte lines, so a lost,
    repeated or reordered chunk shows."""
    first, last = start // 16, (end + 15) // 16
    blob = b"".join(b"%015d\n" % k for k in range(first, last))
    return blob[start - first * 16 : end - first * 16]


def _json_pairs(raw: bytes) -> list[tuple[str, str]]:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _invalid_request("body is not valid JSON") from exc
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise _invalid_request("JSON body must be an object of string values")
    return list(data.items())


def _detect_client_auth(request: web.Request, params: Mapping[str, str]) -> str | None:
    """Which RFC 6749 2.3.1 method the client attempted, whether or not it succeeds."""
    header = request.headers.get("Authorization")
    if header is not None and _parse_basic(header) is not None:
        return BASIC
    if "client_id" in params and "client_secret" in params:
        return POST
    return None


def _required(params: Mapping[str, str], name: str) -> str:
    value = params.get(name)
    if not value:
        raise _invalid_request(f"{name} is required")
    return value


def _verify_pkce(challenge: str | None, verifier: str | None) -> None:
    if challenge is None:
        # RFC 9700 2.1.1: a verifier without a challenge signals a PKCE downgrade attempt.
        if verifier is not None:
            raise _invalid_grant("code_verifier sent but the authorization request had no code_challenge")
        return
    if verifier is None:
        raise _invalid_grant("code_verifier is required")
    if not _PKCE_VALUE.fullmatch(verifier):
        raise _invalid_grant("malformed code_verifier")
    if not secrets.compare_digest(_s256(verifier), challenge):
        raise _invalid_grant("code_verifier does not match code_challenge")


def _narrow_scopes(granted: list[str], requested: str | None) -> list[str]:
    # RFC 6749 6: an omitted scope means the original scope; a given one must not exceed it.
    if requested is None:
        return list(granted)
    wanted = _split_scopes(requested)
    extra = [s for s in wanted if s not in granted]
    if extra:
        raise _OAuthError(400, "invalid_scope", f"scopes not in the original grant: {' '.join(extra)}")
    return wanted


def _presented_api_key(request: web.Request) -> str | None:
    header_key = request.headers.get("X-Api-Key")
    if header_key:
        return header_key
    query_key = request.query.get("api_key")
    if query_key:
        return query_key
    authorization = request.headers.get("Authorization", "")
    basic = _parse_basic(authorization) if authorization else None
    if basic is not None:
        # RFC 7617 Basic (not OAuth's form-encoded flavour): the key is the raw username.
        return basic[0] or None
    return _bearer(request)


# ------------------------------------------------------------------------- CLI


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.oauth_provider", description="Run the fake OAuth 2 provider for the demo."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--client-id", default="demo-client")
    parser.add_argument("--client-secret", default="demo-secret")
    parser.add_argument(
        "--redirect-uri", action="append", help="registered redirect URI (repeatable; exact match)"
    )
    parser.add_argument("--auto-approve", action="store_true", help="skip the login page")
    parser.add_argument("--access-token-ttl", type=int, default=3600, help="seconds")
    parser.add_argument("--api-key", action="append", help="valid key for /keyed/me (repeatable)")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    provider = FakeOAuthProvider(
        client_id=args.client_id,
        client_secret=args.client_secret,
        redirect_uris=args.redirect_uri or ["http://127.0.0.1:8080/oauth/callback"],
        access_token_ttl=args.access_token_ttl,
        auto_approve=args.auto_approve,
        valid_api_keys=args.api_key or ["key-123"],
    )
    url = await provider.start(host=args.host, port=args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"Demo OAuth Provider listening on {url} (client_id={args.client_id})", flush=True)
    try:
        await stop.wait()
    finally:
        await provider.stop()


def main(argv: Sequence[str] | None = None) -> int:
    asyncio.run(_serve(_parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
