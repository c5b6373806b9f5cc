"""The OpenAPI document is valid 3.1 and describes exactly the routes the application serves."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

METHODS = {"get", "post", "put", "patch", "delete"}


def _served(app: web.Application) -> set[tuple[str, str]]:
    served = set()
    for route in app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        # a route for any method (`*`, the proxy) is documented as the five methods an API uses
        methods = METHODS if route.method == "*" else {route.method.lower()}
        served |= {(method, route.resource.canonical) for method in methods}
    return served


async def test_openapi_document_is_valid_and_matches_the_real_routes(
    client: TestClient,
    app: web.Application,  # type: ignore[type-arg]
) -> None:
    response = await client.get("/openapi.json")
    assert response.status == 200
    document = await response.json()
    validate(document)
    documented = {
        (method, path) for path, item in document["paths"].items() for method in item if method in METHODS
    }
    assert documented == _served(app)
