"""The fallback load generator when `wrk` is not installed: several processes of aiohttp clients, each
keeping its share of the connections busy for a fixed duration. Prints the same "BENCH_JSON {...}" line as
reads.lua does for wrk (latencies in microseconds).

  python -m tests.bench.loadgen --url http://127.0.0.1:8080 --ids-file ids.txt --concurrency 32 \
      --duration 20 --processes 2        # the key comes from BENCH_API_KEY"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from tests.bench.common import percentile


async def _child(
    url: str, ids: list[str], key: str, connections: int, duration: float, timeout: float
) -> dict:
    latencies: list[int] = []
    non2xx = errors = timeouts = 0
    received = 0
    headers = {"Authorization": f"Bearer {key}"}
    deadline = time.monotonic() + duration
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)
    ) as http:

        async def loop() -> None:
            nonlocal non2xx, errors, timeouts, received
            while time.monotonic() < deadline:
                target = f"{url}/v1/accounts/{random.choice(ids)}?include_credentials=1"
                started = time.perf_counter()
                try:
                    async with http.get(target, headers=headers) as response:
                        body = await response.read()
                        received += len(body)
                        if not 200 <= response.status < 400:
                            non2xx += 1
                except TimeoutError:
                    timeouts += 1
                    continue
                except aiohttp.ClientError:
                    errors += 1
                    continue
                latencies.append(int((time.perf_counter() - started) * 1_000_000))

        started = time.monotonic()
        await asyncio.gather(*(loop() for _ in range(connections)))
        elapsed = time.monotonic() - started
    return {
        "latencies": latencies,
        "non2xx": non2xx,
        "errors": errors,
        "timeouts": timeouts,
        "bytes": received,
        "duration_us": int(elapsed * 1_000_000),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.loadgen")
    parser.add_argument("--url", required=True)
    parser.add_argument("--ids-file", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--child", type=int, default=0, help="internal: connections of one child process")
    args = parser.parse_args()
    key = os.environ["BENCH_API_KEY"]
    ids = args.ids_file.read_text().split()
    if args.child:
        result = asyncio.run(_child(args.url, ids, key, args.child, args.duration, args.timeout))
        print(json.dumps(result))
        return
    shares = [
        args.concurrency // args.processes + (i < args.concurrency % args.processes)
        for i in range(args.processes)
    ]
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.bench.loadgen",
                "--url",
                args.url,
                "--ids-file",
                str(args.ids_file),
                "--duration",
                str(args.duration),
                "--timeout",
                str(args.timeout),
                "--child",
                str(share),
            ],
            stdout=subprocess.PIPE,
        )
        for share in shares
        if share > 0
    ]
    parts = [
        json.loads(child.communicate(timeout=args.duration + args.timeout + 60)[0]) for child in children
    ]
    latencies = sorted(x for part in parts for x in part["latencies"])
    summary = {
        "requests": len(latencies),
        "duration_us": max(p["duration_us"] for p in parts),
        "bytes": sum(p["bytes"] for p in parts),
        "non2xx": sum(p["non2xx"] for p in parts),
        "connect_errors": sum(p["errors"] for p in parts),
        "read_errors": 0,
        "write_errors": 0,
        "timeouts": sum(p["timeouts"] for p in parts),
        "p50_us": percentile(latencies, 50),
        "p90_us": percentile(latencies, 90),
        "p99_us": percentile(latencies, 99),
        "max_us": latencies[-1] if latencies else 0,
        "mean_us": sum(latencies) / len(latencies) if latencies else 0,
    }
    print("BENCH_JSON " + json.dumps(summary))


if __name__ == "__main__":
    main()
