"""A fuzz of the browser-facing endpoints (callback, connect, key form): random and malformed `state`,
`code`, `iss`, `error` and `token` values, huge values, unicode and control characters. Never a 5xx,
nothing stored."""

from __future__ import annotations

import random
import string
from urllib.parse import parse_qs, urlencode, urlsplit

from tests.support.harness import BrokerHarness

NASTY = [
    "",
    " ",
    "null",
    "undefined",
    "0",
    "-1",
    "true",
    "[]",
    "{}",
    "%00",
    "%",
    "%%",
    "%zz",
    "\\",
    "../../etc/passwd",
    "<script>alert(1)</script>",
    "' OR '1'='1",
    "${jndi:ldap://x}",
    "{{7*7}}",
    "\u202e\u0000\u0007",
    "\ud7ff\ue000",
    "😀" * 50,
    "é" * 300,
    "A" * 5000,
    "=" * 2048,
    "state=1&code=2",
    "https://evil.example/",
    "ctok_" + "x" * 43,
    "\r\nSet-Cookie: a=b",
    "\t\n\x0b\x0c",
    "\U0001d518\U0001d52b\U0001d526",
]
FIELDS = ["state", "code", "iss", "error", "error_description", "token", "shop"]


def random_value(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(NASTY)
    alphabet = string.printable + "äöü€😀\u0000\u200b"
    return "".join(rng.choice(alphabet) for _ in range(rng.choice([1, 8, 64, 512, 4000])))


def random_query(rng: random.Random) -> dict[str, str]:
    return {field: random_value(rng) for field in rng.sample(FIELDS, rng.randint(1, len(FIELDS)))}


async def _assert_no_5xx_and_nothing_stored(
    broker: BrokerHarness, requests: list[tuple[str, str, dict[str, str]]]
) -> None:
    before = await broker.count_accounts()
    for method, path, query in requests:
        if method == "GET":
            reply = await broker.call("GET", path + "?" + urlencode(query), api_key=None)
        else:
            reply = await broker.call(method, path, api_key=None, data=query)
        assert reply.status < 500, (method, path, query, reply.status, str(reply.body)[:300])
        if reply.status >= 400 and reply.content_type == "text/html":
            assert "<script>alert" not in str(reply.body)  # reflected values are escaped
    assert await broker.count_accounts() == before


async def test_random_callback_and_connect_requests_never_fail_and_store_nothing(
    broker: BrokerHarness,
) -> None:
    rng = random.Random(20261123)
    requests: list[tuple[str, str, dict[str, str]]] = []
    for _ in range(150):
        path = rng.choice(
            [
                "/oauth/callback",
                "/connect/fake",
                "/connect/fakekeys",
                "/connect",
                "/connect/fakeshop",
                "/landing/success",
                "/landing/error",
            ]
        )
        requests.append(("GET", path, random_query(rng)))
    for _ in range(40):
        form = random_query(rng) | {"api_key": random_value(rng)}
        requests.append(("POST", rng.choice(["/connect/fakekeys", "/connect/fake"]), form))
    await _assert_no_5xx_and_nothing_stored(broker, requests)


async def test_tampered_callbacks_of_real_flows_never_fail_and_store_nothing(broker: BrokerHarness) -> None:
    rng = random.Random(7)
    for _ in range(25):
        token = await broker.connect_token(provider="fake")
        callback = await broker.until_callback(token["connect_url"])
        query = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
        field = rng.choice(["code", "iss", "error", "state_suffix"])
        if field == "state_suffix":
            query["state"] = query["state"] + random_value(rng)
        else:
            query[field] = random_value(rng)
        await _assert_no_5xx_and_nothing_stored(broker, [("GET", "/oauth/callback", query)])
