"""Errors are JSON with a stable code; metrics count requests by route template."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient


async def test_unknown_route_is_a_json_404(client: TestClient) -> None:  # type: ignore[type-arg]
    response = await client.get("/no/such/route")
    assert response.status == 404
    assert response.content_type == "application/json"
    assert (await response.json()) == {"error": {"code": "not_found", "message": "Not Found"}}


async def test_wrong_method_is_a_json_405_with_allow(client: TestClient) -> None:  # type: ignore[type-arg]
    response = await client.delete("/healthz")
    assert response.status == 405
    assert "GET" in response.headers["Allow"]
    body = await response.json()
    assert body["error"]["code"] == "method_not_allowed"


async def test_healthz_answers_while_the_process_lives(client: TestClient) -> None:  # type: ignore[type-arg]
    response = await client.get("/healthz")
    assert response.status == 200
    assert (await response.json()) == {"status": "ok"}


async def test_every_response_carries_a_request_id(client: TestClient) -> None:  # type: ignore[type-arg]
    given = await client.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert given.headers["X-Request-Id"] == "abc-123"
    made = await client.get("/healthz", headers={"X-Request-Id": "bad id with spaces"})
    assert made.headers["X-Request-Id"] != "bad id with spaces"
    assert len(made.headers["X-Request-Id"]) == 32


async def test_metrics_count_requests_by_route_template(client: TestClient) -> None:  # type: ignore[type-arg]
    await client.get("/healthz")
    await client.get("/definitely/not/here/12345")
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.content_type == "text/plain"
    text = await response.text()
    assert 'broker_http_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert 'route="unmatched",status="404"' in text
    assert "/definitely/not/here" not in text  # raw paths never become labels
    assert "process_resident_memory_bytes" in text


async def test_readyz_is_200_when_every_dependency_answers(client: TestClient) -> None:  # type: ignore[type-arg]
    for _ in range(50):  # Kafka connects in the background after start-up
        response = await client.get("/readyz")
        if response.status == 200:
            break
        await asyncio.sleep(0.2)
    assert response.status == 200
    body = await response.json()
    assert body == {"status": "ready", "checks": {"mongodb": "ok", "redis": "ok", "kafka": "ok"}}
