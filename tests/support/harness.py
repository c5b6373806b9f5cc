"""A broker on a known loopback port, a fake OAuth provider beside it, and the provider definitions
that point at the fake (loaded from an extra folder, as a user's own providers would be)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from service.app import create_app
from service.components import COMPONENTS
from service.config import Settings
from service.connections import open_mongo
from service.store.tenancy import SCOPES, TenancyStore
from tests.fakes.oauth_provider import FakeOAuthProvider
from tests.support import canary
from tests.support.servers import free_port

ADMIN = "admin"  # `api_key=ADMIN`: the workspace owner's key made at start-up
SUCCESS_URI = "https://product.example/connected"
ERROR_URI = "https://product.example/failed"
CLIENT_ID = "broker-client"
CLIENT_SECRET = "broker secret/with:reserved&chars"


def provider_files(fake_url: str) -> dict[str, str]:
    return {
        "fake.yaml": f"""
name: fake
display_name: Fake OAuth
auth_type: oauth2
oauth2:
  issuer: {fake_url}
  iss_parameter_supported: true
  authorize_url: {fake_url}/authorize
  token_url: {fake_url}/token
  revocation_url: {fake_url}/revoke
  scopes: [read, profile]
  client_auth: client_secret_basic
api:
  base_url: {fake_url}/api
  auth: {{style: bearer}}
  test_request: {{method: GET, path: /me, expected_status: 200}}
""",
        "fakepost.yaml": f"""
name: fakepost
display_name: Fake OAuth (post auth, JSON body, nested tokens)
auth_type: oauth2
oauth2:
  authorize_url: {fake_url}/authorize
  token_url: {fake_url}/token
  scopes: [read]
  scope_separator: ","
  client_auth: client_secret_post
  token_request_format: json
  token_response_path: authed_user
  metadata_fields:
    team_id: team.id
api:
  base_url: {fake_url}/api
  auth: {{style: bearer}}
""",
        "fakediscovery.yaml": f"""
name: fakediscovery
display_name: Fake OAuth (discovered)
auth_type: oauth2
oauth2:
  issuer: {fake_url}
  discovery: true
  scopes: [read]
  client_auth: client_secret_post
api:
  base_url: {fake_url}/api
  auth: {{style: bearer}}
""",
        "fakeshop.yaml": f"""
name: fakeshop
display_name: Fake templated provider
auth_type: oauth2
connection_settings:
  - name: shop
    label: Shop
    pattern: "^[a-z][a-z0-9-]{{1,30}}$"
oauth2:
  authorize_url: {fake_url}/authorize?shop={{shop}}
  token_url: {fake_url}/token
  scopes: [read]
  client_auth: client_secret_basic
api:
  base_url: {fake_url}/api
  auth: {{style: bearer}}
""",
        "fakekeys.yaml": f"""
name: fakekeys
display_name: Fake key-based API
auth_type: api_key
credential_fields:
  - name: api_key
    label: API key
    secret: true
    pattern: "^key-[a-z0-9]+$"
api:
  base_url: {fake_url}/keyed
  auth: {{style: header, header: X-Api-Key, field: api_key}}
  test_request: {{method: GET, path: /me, expected_status: 200}}
""",
        "fakebasic.yaml": f"""
name: fakebasic
display_name: Fake HTTP Basic API
auth_type: basic
credential_fields:
  - name: api_key
    label: API key
    secret: false
    pattern: "^key-[a-z0-9]+$"
  - name: secret
    label: Secret
    secret: true
api:
  base_url: {fake_url}/keyed
  auth: {{style: basic, username_field: api_key, password_field: secret}}
  headers: {{X-Fake-Version: "2024-01"}}
""",
        "fakequery.yaml": f"""
name: fakequery
display_name: Fake query-parameter API
auth_type: api_key
credential_fields:
  - name: api_key
    label: API key
    secret: true
    pattern: "^key-[a-z0-9]+$"
api:
  base_url: {fake_url}/keyed
  auth: {{style: query, param: api_key, field: api_key}}
""",
    }


class BrokerHarness:
    def __init__(
        self,
        settings: Settings,
        tmp: Path,
        *,
        database: str | None = None,
        admin_key: str | None = None,
        **fake_options: Any,
    ) -> None:
        self._given_admin_key = admin_key  # reuse the workspace of an earlier broker on the same database
        self.database = database or f"{settings.mongo_db}_{secrets.token_hex(4)}"  # a database per broker
        self._owns_database = database is None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.fake = FakeOAuthProvider(
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            redirect_uris=[f"{self.url}/oauth/callback"],
            **fake_options,
        )
        self._tmp = tmp
        self._base_settings = settings
        self.server: TestServer | None = None
        self.http: aiohttp.ClientSession | None = None
        self.settings = settings

    async def start(self) -> BrokerHarness:
        fake_url = await self.fake.start()
        providers = self._tmp / "providers"
        providers.mkdir(exist_ok=True)
        for name, text in provider_files(fake_url).items():
            (providers / name).write_text(text)
        self.settings = dataclasses.replace(
            self._base_settings,
            mongo_db=self.database,
            public_url=self.url,
            extra_providers_dir=str(providers),
            allowed_redirect_uris=f"{SUCCESS_URI},{ERROR_URI}",
        )
        await self._bootstrap_workspace()
        self.server = TestServer(create_app(self.settings), host="127.0.0.1", port=self.port)
        await self.server.start_server()
        self.http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.admin_key}"})
        for provider in ("fake", "fakepost", "fakediscovery", "fakeshop"):
            await self.api(
                "PUT",
                f"/v1/oauth-apps/{provider}",
                json={
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                },
                expect=200,
            )
        return self

    async def _bootstrap_workspace(self) -> None:
        """What `python -m service admin create-workspace` does: a workspace, its owner, their key."""
        if self._given_admin_key is not None:
            self.admin_key = self._given_admin_key
            self._client = open_mongo(self.settings)
            self.tenancy = TenancyStore(self._client[self.settings.mongo_db])
            return
        self._client = open_mongo(self.settings)  # the test's own client, closed in stop()
        self.tenancy = TenancyStore(self._client[self.settings.mongo_db])
        self.workspace, self.owner = await self.tenancy.create_workspace("test workspace", "owner")
        _, self.admin_key = await self.tenancy.issue_key(self.owner, frozenset(SCOPES), name="bootstrap")
        canary.register(self.admin_key, CLIENT_SECRET)

    async def flush_audit(self) -> None:
        """Write this broker's buffered audit entries and usage counters, as a read of the trail does."""
        await self.app[COMPONENTS].audit.flush()

    async def raw_count(self, collection: str, query: dict[str, Any]) -> int:
        await self.flush_audit()
        client = open_mongo(self.settings)
        try:
            return await client[self.settings.mongo_db][collection].count_documents(query)
        finally:
            await client.close()

    async def tenancy_member(self, member_id: str) -> Any:
        member = await self.tenancy.member(self.workspace.id, member_id)
        assert member is not None
        return member

    async def raw_document(self, collection: str, document_id: str) -> dict[str, Any]:
        """A document as stored, read with a client of the test's own."""
        await self.flush_audit()
        client = open_mongo(self.settings)
        try:
            doc = await client[self.settings.mongo_db][collection].find_one({"_id": document_id})
        finally:
            await client.close()
        assert doc is not None
        return dict(doc)

    async def tenancy_of_new_workspace(self) -> tuple[str, str]:
        """Another workspace on the same broker: (its id, its owner's all-scopes key)."""
        client = open_mongo(self.settings)
        try:
            tenancy = TenancyStore(client[self.settings.mongo_db])
            workspace, owner = await tenancy.create_workspace("other workspace", "other owner")
            _, key = await tenancy.issue_key(owner, frozenset(SCOPES))
        finally:
            await client.close()
        return workspace.id, key

    async def member_key(
        self, role: str = "member", scopes: frozenset[str] = frozenset(SCOPES) - {"admin"}
    ) -> tuple[str, str]:
        """A new member of the workspace and an API key of theirs: (member id, key)."""
        client = open_mongo(self.settings)
        try:
            tenancy = TenancyStore(client[self.settings.mongo_db])
            member = await tenancy.add_member(self.workspace.id, f"{role}-{secrets.token_hex(2)}", role)
            _, key = await tenancy.issue_key(member, scopes)
        finally:
            await client.close()
        canary.register(key)
        return member.id, key

    async def stop(self) -> None:
        canary.register(*self.fake.access_tokens, *self.fake.refresh_tokens, *self.fake.codes)
        if self.http is not None:
            await self.http.close()
        if self.server is not None:
            await self.server.close()
        await self.fake.stop()
        if getattr(self, "_client", None) is not None:
            await self._client.close()
        if not self._owns_database:
            return
        client = open_mongo(self.settings)
        try:
            await client.drop_database(self.settings.mongo_db)
        finally:
            await client.close()

    @property
    def app(self) -> Any:
        assert self.server is not None
        return self.server.app

    async def api(self, method: str, path: str, *, expect: int | None = None, **kwargs: Any) -> Any:
        assert self.http is not None
        async with self.http.request(method, self.url + path, **kwargs) as response:
            body = (
                await response.json()
                if response.content_type == "application/json"
                else await response.text()
            )
            if expect is not None:
                assert response.status == expect, (response.status, body)
            return body

    async def connect_token(self, **body: Any) -> dict[str, Any]:
        payload = {"success_redirect_uri": SUCCESS_URI, "error_redirect_uri": ERROR_URI, **body}
        result: dict[str, Any] = await self.api("POST", "/v1/connect/tokens", json=payload, expect=201)
        canary.register(result["token"])
        return result

    async def follow(self, url: str, *, max_hops: int = 6) -> aiohttp.ClientResponse:
        """Follows redirects like a browser (without cookies) until it leaves the broker and the fake,
        or an HTML page is shown; returns the last response (its body already read)."""
        async with aiohttp.ClientSession() as browser:
            for _ in range(max_hops):
                response = await browser.get(url, allow_redirects=False)
                await response.read()
                if response.status not in (301, 302, 303, 307):
                    return response
                url = response.headers["Location"]
                if not url.startswith(("http://127.0.0.1", "/")):
                    return response
                if url.startswith("/"):
                    url = self.url + url
            raise AssertionError("too many redirects")

    async def connect(self, provider: str = "fake", **token_body: Any) -> dict[str, list[str]]:
        """Runs the browser flow and returns the query of the final redirect (success or error URL)."""
        token = await self.connect_token(provider=provider, **token_body)
        response = await self.follow(token["connect_url"])
        assert response.status == 302, (response.status, await response.text())
        location = response.headers["Location"]
        assert location.startswith((SUCCESS_URI, ERROR_URI)), location
        return landing(location)

    # ------------------------------------------------------------ helpers for tests that need more control

    async def call(
        self, method: str, path_or_url: str, *, api_key: str | None = ADMIN, **kwargs: Any
    ) -> Reply:
        """One request without following redirects, with the admin key (or another one, or none when
        api_key is None); `path_or_url` is a path on the broker or an absolute URL."""
        headers = dict(kwargs.pop("headers", None) or {})
        if api_key == ADMIN:
            api_key = self.admin_key
        if api_key is not None:
            headers.setdefault("Authorization", f"Bearer {api_key}")
        url = path_or_url if path_or_url.startswith("http") else self.url + path_or_url
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, url, headers=headers, allow_redirects=False, **kwargs) as response,
        ):
            raw = await response.read()
            body: Any = raw.decode("utf-8", "replace")
            if response.content_type == "application/json":
                body = json.loads(raw)
            return Reply(response.status, response.content_type, CIMultiDict(response.headers), body)

    async def browse(self, url: str, *, form: dict[str, str] | None = None) -> Reply:
        """What a browser does with a URL (GET, or POST of a form): no API key, no redirect followed."""
        if form is None:
            return await self.call("GET", url, api_key=None)
        return await self.call("POST", url, api_key=None, data=form)

    async def until_callback(self, url: str, *, max_hops: int = 6) -> str:
        """Follows the browser flow from a connect URL until the provider sends the browser back to the
        broker's callback, and returns that callback URL without opening it."""
        callback = f"{self.url}/oauth/callback"
        for _ in range(max_hops):
            reply = await self.browse(url)
            assert reply.status in (302, 303), (reply.status, reply.body)
            url = reply.headers["Location"]
            if url.startswith(callback):
                return url
        raise AssertionError("the flow never reached the callback")

    async def count_accounts(self, **filters: str) -> int:
        """Accounts the admin key sees, counted over every page."""
        total, cursor = 0, None
        while True:
            params = {"limit": "200", **filters, **({"cursor": cursor} if cursor else {})}
            body = await self.api("GET", "/v1/accounts", params=params, expect=200)
            total += len(body["data"])
            cursor = body["page_info"]["next_cursor"]
            if cursor is None:
                return total

    async def import_account(self, **body: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.api("POST", "/v1/accounts", json=body, expect=201)
        return dict(result["data"])

    async def account(self, account_id: str, *, query: str = "") -> dict[str, Any]:
        body = await self.api("GET", f"/v1/accounts/{account_id}{query}", expect=200)
        return dict(body["data"])

    @contextlib.asynccontextmanager
    async def another_instance(self, **setting_overrides: Any) -> AsyncIterator[str]:
        """A second broker process-equivalent on its own port, on the same MongoDB and Redis (as behind
        a load balancer); yields its base URL."""
        settings = dataclasses.replace(self.settings, **setting_overrides)
        server = TestServer(create_app(settings), host="127.0.0.1", port=free_port())
        await server.start_server()
        try:
            yield f"http://127.0.0.1:{server.port}"
        finally:
            await server.close()


@dataclasses.dataclass
class Reply:
    status: int
    content_type: str
    headers: CIMultiDict[str]
    body: Any  # parsed JSON for application/json, else text

    @property
    def error_code(self) -> str:
        assert isinstance(self.body, dict), (self.status, self.body)
        code: str = self.body["error"]["code"]
        return code


def landing(location: str) -> dict[str, list[str]]:
    """The target and query of a redirect to the product's success or error URI."""
    return {"_target": [location.split("?")[0]], **parse_qs(urlsplit(location).query)}


def page_code(html_text: str) -> str | None:
    """The error code an HTML error page shows."""
    match = re.search(r"Code: <code>([a-z_]+)</code>", html_text)
    return match.group(1) if match else None


@contextlib.asynccontextmanager
async def running_broker(settings: Settings, tmp: Path, **fake_options: Any) -> AsyncIterator[BrokerHarness]:
    """A BrokerHarness with its own settings or fake options, stopped on exit."""
    harness = BrokerHarness(settings, tmp, **fake_options)
    try:
        await harness.start()
        yield harness
    finally:
        await harness.stop()
