"""Property-based testing of every documented operation with Schemathesis: valid and invalid keys, no 5xx
ever, and every answer conforming to the OpenAPI document (so every 4xx is a JSON error)."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.support.harness import BrokerHarness

CHECKS = "not_a_server_error,content_type_conformance,response_schema_conformance"


async def _schemathesis(url: str, key: str, tmp_path: Path, examples: int) -> tuple[int, str]:
    binary = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or "schemathesis"
    process = await asyncio.create_subprocess_exec(
        binary,
        "run",
        f"{url}/openapi.json",
        "--checks",
        CHECKS,
        "--max-examples",
        str(examples),
        "--header",
        f"Authorization: Bearer {key}",
        "--request-timeout",
        "10",
        "--seed",
        "20261123",
        "--generation-deterministic",
        cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false", "NO_COLOR": "1"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=600)
    return process.returncode or 0, out.decode(errors="replace")


@pytest.mark.parametrize("key", ["valid", "invalid"])
async def test_no_operation_answers_5xx_and_every_answer_matches_the_document(
    broker: BrokerHarness, tmp_path: Path, key: str
) -> None:
    account = await broker.import_account(provider="fakekeys", credentials={"api_key": "key-123"})
    member_id, _ = await broker.member_key("member")
    # real identifiers, so generated requests reach the handlers' logic rather than stopping at 404
    (tmp_path / "schemathesis.toml").write_text(
        f'[parameters]\naccount_id = "{account["id"]}"\nprovider = "fake"\nmember_id = "{member_id}"\n'
    )
    presented = (
        broker.admin_key if key == "valid" else "key_0000000000000000000000000a.not-a-real-secret-at-all"
    )
    examples = int(os.environ.get("FUZZ_EXAMPLES", "25"))
    code, output = await _schemathesis(broker.url, presented, tmp_path, examples=examples)
    assert code == 0, output[-6000:]
