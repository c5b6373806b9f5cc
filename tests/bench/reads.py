"""Benchmark 1, credential reads: N accounts with fresh long-lived tokens, the broker as its own process
(`python -m service serve`, no worker), random GET /v1/accounts/{id}?include_credentials=1 at a fixed
concurrency for a fixed time from a load generator in another process (wrk, else tests.bench.loadgen); then
the same load against a bare aiohttp process serving a static body of the same size."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import os
import secrets
import shutil
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from service.connections import open_mongo
from service.store.accounts import AccountStore
from service.store.keyring import Keyring
from tests.bench import profiling
from tests.bench.common import (
    BenchError,
    CpuMeter,
    Proc,
    peak_rss_mib,
    pids_named,
    say,
    step,
    table,
)
from tests.bench.seed import (
    SEED_REFRESH_PREFIX,
    account_document,
    bench_settings,
    create_concurrently,
    create_workspace,
    drop_database,
    env_of,
    insert_in_batches,
    oauth_credentials,
    run_folder,
    write_provider,
)
from tests.support.servers import PrivateRedis, free_port

LUA = Path(__file__).with_name("reads.lua")


def ferretdb_pid(mongo_url: str) -> int | None:
    port = urlsplit(mongo_url).port or 27017
    pids = [p for p in pids_named("ferretdb") if p in pids_named(f":{port}")]
    return pids[0] if pids else None


def shared_servers(settings: Any) -> dict[str, int]:
    """The shared FerretDB and Kafka processes, watched (never signalled) to see their CPU and to notice
    when someone else restarts them during a measurement."""
    found = {}
    db = ferretdb_pid(settings.mongo_url)
    if db:
        found["ferretdb"] = db
    kafka = pids_named("kafka.Kafka")
    if kafka:
        found["kafka"] = kafka[0]
    return found


async def drive(
    url: str,
    ids_file: Path,
    key: str,
    *,
    concurrency: int,
    duration: float,
    watch: dict[str, int],
    name: str,
) -> dict[str, Any]:
    """One load run; returns throughput, latencies, errors and the CPU of the watched processes."""
    env = {**os.environ, "BENCH_API_KEY": key, "BENCH_IDS_FILE": str(ids_file)}
    wrk = shutil.which("wrk")
    if wrk:
        argv = [
            wrk,
            "-t1",
            f"-c{concurrency}",
            f"-d{int(duration)}s",
            "--timeout",
            "30s",
            "-s",
            str(LUA),
            url,
        ]
        generator = "wrk"
    else:
        argv = [
            sys.executable,
            "-m",
            "tests.bench.loadgen",
            "--url",
            url,
            "--ids-file",
            str(ids_file),
            "--concurrency",
            str(concurrency),
            "--duration",
            str(duration),
            "--processes",
            "2",
        ]
        generator = "tests.bench.loadgen (2 processes)"
    load = Proc(name, argv, env)
    meter = CpuMeter(watch)
    load.start()
    meter.start()
    try:
        await step(f"{name} load", _wait(load), duration + 120)
    finally:
        load.kill()
    cpu = meter.stop()
    if meter.gone:
        cpu["restarted_during_run"] = meter.gone  # type: ignore[assignment]
    output = load.log_path.read_text()
    line = next((x for x in output.splitlines() if x.startswith("BENCH_JSON ")), None)
    if line is None:
        raise BenchError(f"{name}: the load generator printed no result (see {load.log_path})")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    seconds = raw["duration_us"] / 1e6
    return {
        "generator": generator,
        "concurrency": concurrency,
        "duration_s": round(seconds, 1),
        "requests": raw["requests"],
        "throughput_rps": round(raw["requests"] / seconds, 1) if seconds else 0.0,
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p90_ms": round(raw["p90_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
        "max_ms": round(raw["max_us"] / 1000, 2),
        "non_2xx": raw["non2xx"],
        "socket_errors": raw["connect_errors"] + raw["read_errors"] + raw["write_errors"],
        "timeouts": raw["timeouts"],
        "cpu_pct_of_one_core": cpu,
    }


async def _wait(proc: Proc) -> None:
    while proc.alive():
        await asyncio.sleep(0.2)


async def run(opts: Any) -> dict[str, Any]:
    tag = f"reads_{secrets.token_hex(4)}"
    folder = run_folder(tag)
    port = free_port()
    redis = PrivateRedis()
    await step("private redis", redis.start(), 30)
    settings = bench_settings(
        tag,
        run_worker=False,
        http_port=port,
        public_url=f"http://127.0.0.1:{port}",
        redis_url=redis.url,
        extra_providers_dir=str(write_provider(folder / "providers", "http://127.0.0.1:9")),
    )
    url = f"http://127.0.0.1:{port}"
    result: dict[str, Any] = {"accounts": opts.accounts, "database": settings.mongo_db}
    procs: list[Proc] = []
    try:
        key, workspace_id, owner_id = await step("create-workspace", create_workspace(settings), 90)
        result["seeding"] = await step(
            "seeding", _seed(settings, workspace_id, owner_id, opts.accounts, folder), 1800
        )
        ids_file = folder / "ids.txt"

        broker = Proc("reads-broker", [sys.executable, "-m", "service", "serve"], env_of(settings)).start()
        procs.append(broker)
        await broker.wait_http(f"{url}/readyz", 120)
        body = await step("first credential read", _one_read(url, ids_file, key), 60)
        body_file = folder / "body.json"
        body_file.write_bytes(body)
        result["response_bytes"] = len(body)

        watch = {"broker": broker.pid, **shared_servers(settings)}
        load = {"concurrency": opts.concurrency}
        say(f"reads: warm-up {opts.warmup:.0f} s against the broker")
        await drive(url, ids_file, key, duration=opts.warmup, watch=watch, name="reads-warmup", **load)
        say(f"reads: {opts.duration:.0f} s at concurrency {opts.concurrency} against the broker")
        result["broker"] = await drive(
            url, ids_file, key, duration=opts.duration, watch=watch, name="reads-broker-load", **load
        )
        result["broker"]["peak_rss_mib"] = round(peak_rss_mib(broker.pid) or 0.0, 1)

        if opts.profile:
            result["profile"] = await _profile(url, ids_file, key, broker.pid, watch, folder, opts)
        await broker.stop()

        bare = Proc(
            "reads-bare",
            [
                sys.executable,
                "-m",
                "tests.bench.bare_server",
                "--port",
                str(port),
                "--body-file",
                str(body_file),
            ],
        ).start()
        procs.append(bare)
        await bare.wait_http(f"{url}/healthz", 60)
        await drive(url, ids_file, key, duration=opts.warmup, watch={}, name="reads-bare-warmup", **load)
        say(f"reads: {opts.duration:.0f} s at concurrency {opts.concurrency} against the bare server")
        result["bare"] = await drive(
            url,
            ids_file,
            key,
            duration=opts.duration,
            watch={"bare": bare.pid},
            name="reads-bare-load",
            **load,
        )
        result["bare"]["peak_rss_mib"] = round(peak_rss_mib(bare.pid) or 0.0, 1)
        await bare.stop()
        b, s = result["broker"], result["bare"]
        result["ratio_broker_to_bare"] = {
            "throughput": round(b["throughput_rps"] / s["throughput_rps"], 4)
            if s["throughput_rps"]
            else None,
            "p50": round(b["p50_ms"] / s["p50_ms"], 1) if s["p50_ms"] else None,
        }
        result["audit_records_written"] = await _count(settings, "audit")
        return result
    finally:
        for proc in procs:
            await proc.stop(15)
        await redis.stop()
        redis.cleanup()
        shutil.rmtree(folder, ignore_errors=True)
        try:
            await step("drop database", drop_database(settings), 300)
        except Exception as exc:
            say(f"could not drop {settings.mongo_db}: {exc}")


async def _seed(settings: Any, workspace_id: str, owner_id: str, count: int, folder: Path) -> dict[str, Any]:
    client = open_mongo(dataclasses.replace(settings, dependency_timeout=30.0))
    try:
        store = AccountStore(client[settings.mongo_db], Keyring.from_setting(settings.encryption_keys))
        await store.ensure_indexes()
        now = dt.datetime.now(dt.UTC)
        expires = now + dt.timedelta(days=30)  # fresh and long-lived: no read refreshes first
        refresh_at = expires - dt.timedelta(seconds=300)

        def creds(_: int) -> Any:
            return oauth_credentials(SEED_REFRESH_PREFIX + secrets.token_urlsafe(24), expires, refresh_at)

        sample_size = min(500, count // 10)
        say(f"reads: seeding {count} accounts ({sample_size} through AccountStore.create)")
        sample = await create_concurrently(store, workspace_id, owner_id, creds, sample_size)

        def documents() -> Any:
            while True:
                yield account_document(
                    store, workspace_id=workspace_id, owner_id=owner_id, creds=creds(0), now=now
                )

        bulk = await insert_in_batches(client[settings.mongo_db], documents(), count - sample_size)
        ids = sample.ids + bulk.ids
        (folder / "ids.txt").write_text("\n".join(ids) + "\n")
        probe = await _probe_gets(store, workspace_id, ids)
        return {
            "accounts": len(ids),
            "create_concurrently": {
                "accounts": len(sample.ids),
                "seconds": round(sample.seconds, 2),
                "per_second": round(sample.per_second, 1),
            },
            "insert_many": {
                "accounts": len(bulk.ids),
                "seconds": round(bulk.seconds, 2),
                "per_second": round(bulk.per_second, 1),
                "build_seconds": round(bulk.build_seconds, 2),
                "insert_seconds": round(bulk.insert_seconds, 2),
            },
            "db_probe": probe,
        }
    finally:
        await client.close()


async def _probe_gets(store: AccountStore, workspace_id: str, ids: list[str]) -> dict[str, float]:
    """The broker's own account lookup (AccountStore.get) of the first and the last inserted account:
    equal on a database that uses its _id index, proportional to the position on one that scans."""
    out = {}
    for label, account_id in (("get_first_ms", ids[0]), ("get_last_ms", ids[-1])):
        started = time.perf_counter()
        for _ in range(3):
            await store.get(workspace_id, account_id)
        out[label] = round((time.perf_counter() - started) / 3 * 1000, 2)
    return out


async def _one_read(url: str, ids_file: Path, key: str) -> bytes:
    account_id = ids_file.read_text().split()[0]
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{url}/v1/accounts/{account_id}?include_credentials=1",
            headers={"Authorization": f"Bearer {key}"},
        ) as response,
    ):
        body = await response.read()
        if response.status != 200:
            raise BenchError(f"credential read answered {response.status}: {body[:300]!r}")
        return body


async def _profile(
    url: str, ids_file: Path, key: str, pid: int, watch: dict[str, int], folder: Path, opts: Any
) -> dict[str, Any]:
    if profiling.py_spy() is None:
        say("reads: py-spy not installed; no profile")
        return {"skipped": "py-spy not installed"}
    seconds = int(opts.profile_seconds)
    say(f"reads: profiling the broker with py-spy for {seconds} s under the same load")
    load = asyncio.create_task(
        drive(
            url,
            ids_file,
            key,
            concurrency=opts.concurrency,
            duration=seconds + 4,
            watch=watch,
            name="reads-profile-load",
        )
    )
    await asyncio.sleep(2)
    try:
        files = await step("py-spy", profiling.record(pid, seconds, folder.parent, "reads"), seconds + 90)
    finally:
        under_profile = await load
    summary = profiling.summarise(files["folded"])
    summary["flamegraph"] = str(files["svg"])
    summary["load_while_profiling"] = {
        k: under_profile[k] for k in ("throughput_rps", "p50_ms", "cpu_pct_of_one_core")
    }
    return summary


async def _count(settings: Any, collection: str) -> int | None:
    client = open_mongo(dataclasses.replace(settings, dependency_timeout=30.0))
    try:
        return int(await client[settings.mongo_db][collection].estimated_document_count())
    except Exception:
        return None
    finally:
        await client.close()


def render(result: dict[str, Any]) -> str:
    seeding = result.get("seeding", {})
    parts = [
        table(
            "credential reads: seeding",
            [
                ("accounts", seeding.get("accounts")),
                (
                    "AccountStore.create x32 concurrent (acc/s)",
                    seeding.get("create_concurrently", {}).get("per_second"),
                ),
                ("insert_many batches of 1000 (acc/s)", seeding.get("insert_many", {}).get("per_second")),
                ("insert_many total (s)", seeding.get("insert_many", {}).get("seconds")),
                ("AccountStore.get, first account (ms)", seeding.get("db_probe", {}).get("get_first_ms")),
                ("AccountStore.get, last account (ms)", seeding.get("db_probe", {}).get("get_last_ms")),
            ],
        )
    ]
    b, s = result.get("broker"), result.get("bare")
    if b and s:
        ratio = result.get("ratio_broker_to_bare", {})
        parts.append(
            table(
                f"credential reads: {b['concurrency']} connections, {b['duration_s']} s, "
                f"{result.get('response_bytes')} B responses ({b['generator']})",
                [
                    ("throughput (req/s)", b["throughput_rps"], s["throughput_rps"], ratio.get("throughput")),
                    ("p50 latency (ms)", b["p50_ms"], s["p50_ms"], ratio.get("p50")),
                    ("p99 latency (ms)", b["p99_ms"], s["p99_ms"], None),
                    ("max latency (ms)", b["max_ms"], s["max_ms"], None),
                    ("requests", b["requests"], s["requests"], None),
                    ("non-2xx", b["non_2xx"], s["non_2xx"], None),
                    (
                        "socket errors / timeouts",
                        f"{b['socket_errors']} / {b['timeouts']}",
                        f"{s['socket_errors']} / {s['timeouts']}",
                        None,
                    ),
                    (
                        "server CPU (% of one core)",
                        b["cpu_pct_of_one_core"].get("broker"),
                        s["cpu_pct_of_one_core"].get("bare"),
                        None,
                    ),
                    ("FerretDB CPU (% of one core)", b["cpu_pct_of_one_core"].get("ferretdb"), None, None),
                    (
                        "CPU per response (ms): server / FerretDB",
                        f"{cpu_ms(b, 'broker')} / {cpu_ms(b, 'ferretdb')}",
                        cpu_ms(s, "bare"),
                        None,
                    ),
                    ("server peak RSS (MiB)", b["peak_rss_mib"], s["peak_rss_mib"], None),
                    *(
                        [("WARNING: restarted during the run", ", ".join(gone), None, None)]
                        if (gone := b["cpu_pct_of_one_core"].get("restarted_during_run"))
                        else []
                    ),
                ],
                header=("", "broker", "bare aiohttp", "broker/bare"),
            )
        )
    profile = result.get("profile")
    if profile and profile.get("samples"):
        parts.append(
            table(
                f"broker profile (py-spy: {profile['samples']} samples, {profile['idle_in_epoll_pct']}% idle "
                f"in epoll; self time of the busy ones by package, %)",
                profile["self_by_package_pct"][:10],
            )
        )
        parts.append(table("broker profile: share of busy samples under (%)", profile["inclusive_pct"][:12]))
        parts.append(table("broker profile: self time by function (%)", profile["self_by_function_pct"][:12]))
    return "\n".join(parts)


def cpu_ms(load: dict[str, Any], name: str) -> float | None:
    """CPU milliseconds a process spent per response of a load window (what one core's share costs)."""
    pct = load["cpu_pct_of_one_core"].get(name)
    if not isinstance(pct, (int, float)) or not load["throughput_rps"]:
        return None
    return round(pct * 10 / load["throughput_rps"], 3)
