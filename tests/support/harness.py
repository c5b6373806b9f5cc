"""A broker on a known loopback port, a fake OAuth provider beside it, and the provider definitions
that point at the fake (loaded from an extra folder, as a user's own providers would be)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
from aiohttp.test_utils import TestServer

from service.app import create_app
from service.config import Settings
from tests.fakes.oauth_provider import FakeOAuthProvider
from tests.support.servers import free_port

ADMIN_KEY = "test-admin-key-0123456789"
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
    }


class BrokerHarness:
    def __init__(self, settings: Settings, tmp: Path, **fake_options: Any) -> None:
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
            public_url=self.url,
            extra_providers_dir=str(providers),
            admin_api_key=ADMIN_KEY,
            allowed_redirect_uris=f"{SUCCESS_URI},{ERROR_URI}",
        )
        self.server = TestServer(create_app(self.settings), host="127.0.0.1", port=self.port)
        await self.server.start_server()
        self.http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_KEY}"})
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

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.close()
        if self.server is not None:
            await self.server.close()
        await self.fake.stop()

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
        return {"_target": [location.split("?")[0]], **parse_qs(urlsplit(location).query)}
