"""X-No-Store keeps a request's path, headers and body out of every log line; the audit record of who
used what is still written. A workspace setting makes it the default."""

from __future__ import annotations

import logging

import pytest

from tests.support.harness import BrokerHarness

CANARY = "nostore-canary-51f0e2"


async def _read_with_canaries(broker: BrokerHarness, account_id: str, headers: dict[str, str]) -> None:
    reply = await broker.call(
        "PATCH",
        f"/v1/accounts/{account_id}?note={CANARY}-query",
        headers={"X-Custom": f"{CANARY}-header", **headers},
        json={"name": f"{CANARY}-body"},
    )
    assert reply.status == 200
    reply = await broker.call("DELETE", f"/v1/users/{CANARY}-path", headers=headers)
    assert reply.status == 200


async def test_a_no_store_request_leaves_no_trace_of_its_data_in_the_logs(
    broker: BrokerHarness, caplog: pytest.LogCaptureFixture
) -> None:
    account = await broker.import_account(provider="fakekeys", credentials={"api_key": "key-123"})
    caplog.set_level(logging.DEBUG)
    await _read_with_canaries(broker, account["id"], {"X-No-Store": "1"})
    text = "\n".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
    assert CANARY not in text
    assert "/v1/users/{external_user_id}" in text  # the route template is logged instead


async def test_without_no_store_the_path_is_logged_but_never_headers_or_bodies(
    broker: BrokerHarness, caplog: pytest.LogCaptureFixture
) -> None:
    account = await broker.import_account(provider="fakekeys", credentials={"api_key": "key-123"})
    caplog.set_level(logging.DEBUG)
    await _read_with_canaries(broker, account["id"], {})
    text = "\n".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
    assert f"{CANARY}-path" in text
    for hidden in ("header", "body", "query"):
        assert f"{CANARY}-{hidden}" not in text


async def test_the_workspace_default_applies_and_the_audit_is_still_kept(
    broker: BrokerHarness, caplog: pytest.LogCaptureFixture
) -> None:
    assert (await broker.call("PATCH", "/v1/workspace", json={"no_store_default": True})).status == 200
    account = await broker.import_account(provider="fakekeys", credentials={"api_key": "key-123"})
    caplog.set_level(logging.DEBUG)
    await _read_with_canaries(broker, account["id"], {})
    reply = await broker.call("GET", f"/v1/accounts/{account['id']}?include_credentials=1")
    assert reply.status == 200
    text = "\n".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
    assert CANARY not in text
    usage = await broker.call("GET", f"/v1/accounts/{account['id']}/usage")
    assert usage.body["data"][0]["counts"] == {"read_credentials": 1}
