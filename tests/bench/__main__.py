"""`python -m tests.bench`: the three benchmarks against the real local servers (`make bench`).

Prints a table per benchmark and writes the same figures to .run/bench/results.json (a section per
benchmark; a run with --only replaces its own section and keeps the others). Measurement only: nothing
here asserts on a time."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from tests.bench import reads, refresh, schedule
from tests.bench.common import RUN_DIR, machine, say

BENCHMARKS = {"reads": reads, "refresh": refresh, "schedule": schedule}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    p.add_argument(
        "--only",
        choices=sorted(BENCHMARKS),
        action="append",
        help="run only this benchmark (repeatable); default: all three",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=RUN_DIR / "results.json",
        help="JSON file of the figures (default .run/bench/results.json)",
    )
    g = p.add_argument_group("credential reads")
    g.add_argument("--accounts", type=int, default=10_000, help="accounts seeded (default 10,000)")
    g.add_argument("--duration", type=float, default=20.0, help="seconds of measured load (default 20)")
    g.add_argument("--concurrency", type=int, default=32, help="open connections (default 32)")
    g.add_argument("--warmup", type=float, default=3.0, help="seconds of unmeasured load first (default 3)")
    g.add_argument("--no-profile", dest="profile", action="store_false", help="skip the py-spy profile")
    g.add_argument("--profile-seconds", type=float, default=10.0)
    g = p.add_argument_group("refresh throughput")
    g.add_argument("--refresh-accounts", type=int, default=100_000, help="accounts due (default 100,000)")
    g.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    g.add_argument("--refresh-concurrency", type=int, default=32, help="BROKER_REFRESH_CONCURRENCY (32)")
    g.add_argument("--window", type=float, default=10.0, help="seconds over which accounts fall due (10)")
    g.add_argument("--start-delay", type=float, default=5.0, help="seconds before the window opens (5)")
    g.add_argument(
        "--refresh-timeout",
        type=float,
        default=900.0,
        help="seconds after the window opens before giving up (default 900)",
    )
    g.add_argument("--poll", type=float, default=5.0, help="seconds between progress lines")
    g = p.add_argument_group("schedule scale")
    g.add_argument("--schedule-entries", type=int, default=1_000_000, help="entries (default 1,000,000)")
    g.add_argument(
        "--due-now", type=int, default=60_000, help="entries already due (at least claims x batch)"
    )
    g.add_argument("--claims", type=int, default=1000, help="claim_due calls timed (default 1,000)")
    g.add_argument("--claim-batch", type=int, default=50, help="batch of each claim (default 50)")
    g.add_argument("--shards", type=int, default=1, help="schedule shards (BROKER_REFRESH_SHARDS)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    selected = opts.only or list(BENCHMARKS)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    results_path = opts.output.resolve()
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    if results_path.exists():
        try:
            results = json.loads(results_path.read_text())
        except ValueError:
            results = {}
    results["machine"] = machine()
    failed = []
    for name in selected:
        module = BENCHMARKS[name]
        say(f"--- {name} ---")
        started = time.time()
        try:
            figures = asyncio.run(module.run(opts))
        except Exception as exc:  # one benchmark failing does not stop the others
            say(f"{name} failed: {exc}")
            results[name] = {"error": str(exc), "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            failed.append(name)
        else:
            figures["at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            figures["wall_seconds"] = round(time.time() - started, 1)
            results[name] = figures
            print(module.render(figures), flush=True)
        results_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    m = results["machine"]
    print(
        f"\nmachine: {m['nproc']} cores ({m['cpu_model']}), {m['memory_gib']} GiB, Python {m['python']}; "
        f"figures in {results_path}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
