"""Request bodies: JSON only, checked against a JSON Schema (unknown fields and wrong types are 400s)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from typing import Any

import jsonschema
from aiohttp import web

from service.http.errors import ApiError


@cache
def _validator(schema_json: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(schema_json))


def validate(document: Any, schema: Mapping[str, Any]) -> dict[str, Any]:
    validator = _validator(json.dumps(schema, sort_keys=True))
    errors = sorted(validator.iter_errors(document), key=lambda e: (len(e.absolute_path), str(e.path)))
    if errors:
        error = errors[0]
        where = ".".join(str(p) for p in error.absolute_path) or "(body)"
        if error.validator == "additionalProperties":
            raise ApiError(400, "unknown_field", f"{where}: {error.message}", field=where)
        raise ApiError(400, "invalid_field", f"{where}: {error.message}", field=where)
    assert isinstance(document, dict)
    return document


async def json_body(request: web.Request, schema: Mapping[str, Any]) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    raw = await request.read()  # client_max_size bounds this; too large -> 413
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
    return validate(document, schema)


def query_flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name)
    if value is None:
        return False
    if value.lower() in {"1", "true", "yes"}:
        return True
    if value.lower() in {"0", "false", "no", ""}:
        return False
    raise ApiError(400, "invalid_parameter", f"{name} must be 1/true or 0/false", parameter=name)
