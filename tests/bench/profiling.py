"""py-spy around a process under load: a flame graph (SVG) for people and a folded-stack file summarised
here into where the samples went (by package and by function)."""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from tests.bench.common import say

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
KEY_FUNCTIONS = (
    "get_account",
    "observe_middleware",
    "error_middleware",
    "authenticate",
    "load_account",
    "ensure_fresh",
    "decrypt",
    "record",  # AuditLog.record
    "find_one",
    "insert_one",
    "update_one",
    "json_response",
    "account_view",
    "emit",  # logging
)


def py_spy() -> str | None:
    found = shutil.which("py-spy")
    if found:
        return found
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else None


async def record(pid: int, seconds: int, out_dir: Path, name: str) -> dict[str, Path]:
    """Samples `pid` for `seconds` at 200 Hz without pausing it; returns the files written."""
    binary = py_spy()
    if binary is None:
        raise FileNotFoundError("py-spy is not installed (pip install py-spy)")
    svg, folded = out_dir / f"{name}.svg", out_dir / f"{name}.folded"
    common = [
        binary,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(seconds),
        "--rate",
        "100",
        "--nonblocking",
    ]
    runs = [
        await asyncio.create_subprocess_exec(
            *common,
            "--format",
            fmt,
            "-o",
            str(path),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        for fmt, path in (("flamegraph", svg), ("raw", folded))
    ]
    for run in runs:
        try:
            _, err = await asyncio.wait_for(run.communicate(), seconds + 60)
        except TimeoutError:
            run.kill()
            await run.wait()
            raise
        if run.returncode != 0:
            say(f"py-spy failed: {err.decode()[-300:]}")
    return {"svg": svg, "folded": folded}


def _package(file: str) -> str:
    """py-spy names files relative to their sys.path entry: `pymongo/pool.py`, `service/http/x.py`,
    `selectors.py`; a package is the first component (two for the broker's own)."""
    parts = file.split("/")
    if parts[0] == "service" and len(parts) > 2:
        return f"service/{parts[1]}"
    return parts[0].removesuffix(".py") or "?"


def summarise(folded: Path, top: int = 12) -> dict[str, Any]:
    """Self samples by package and by function, and the share of samples under a few key functions, as %
    of the busy samples (those not waiting in the event loop's epoll)."""
    by_package: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = idle = 0
    for line in folded.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        leaf = _FRAME.match(frames[-1])
        if leaf and leaf.group("func").endswith("select") and leaf.group("file").endswith("selectors.py"):
            idle += count  # the event loop waiting in epoll: no work to do
            continue
        total += count
        if leaf:
            file = leaf.group("file")
            by_package[_package(file)] += count
            by_function[f"{leaf.group('func')} ({_package(file)})"] += count
        seen = set()
        for frame in frames:
            match = _FRAME.match(frame)
            if match and match.group("func").rsplit(".", 1)[-1] in KEY_FUNCTIONS:
                seen.add(f"{match.group('func')} ({_package(match.group('file'))})")
        for name in seen:
            inclusive[name] += count

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(top)] if total else []

    return {
        "samples": total + idle,
        "busy_samples": total,
        "idle_in_epoll_pct": round(100 * idle / (total + idle), 1) if total + idle else None,
        "self_by_package_pct": share(by_package),
        "self_by_function_pct": share(by_function),
        "inclusive_pct": share(inclusive),
    }
