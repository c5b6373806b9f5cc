"""Benchmark 2, refresh throughput: N OAuth accounts all due within a short window, a fast fake token
endpoint in its own process (tests.bench.token_server), the schedule in a private Redis, and W worker
processes (`python -m service worker`) that run until every account was refreshed once (or the timeout).
Reports refreshes/s, scheduling lag, token-endpoint calls per refresh, duplicate presentations of one
refresh token, and the CPU and memory of every process involved."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import random
import secrets
import shutil
import sys
import time
from typing import Any

import aiohttp
import redis.asyncio as redis
from prometheus_client.parser import text_string_to_metric_families

from service import redis_keys
from service.connections import open_mongo
from service.refresh.schedule import RefreshSchedule
from service.store.accounts import AccountStore
from service.store.keyring import Keyring
from service.store.oauth_apps import OAuthAppStore
from tests.bench.common import (
    BenchError,
    CpuMeter,
    Proc,
    histogram_quantile,
    peak_rss_mib,
    percentile,
    say,
    step,
    table,
)
from tests.bench.reads import shared_servers
from tests.bench.seed import (
    CLIENT_ID,
    CLIENT_SECRET,
    PROVIDER,
    SEED_REFRESH_PREFIX,
    account_document,
    bench_settings,
    create_workspace,
    drop_database,
    env_of,
    insert_in_batches,
    oauth_credentials,
    run_folder,
    write_provider,
)
from tests.support.servers import PrivateRedis, free_port

LAG = "broker_refresh_scheduling_lag_seconds"
DURATION = "broker_refresh_duration_seconds"


async def run(opts: Any) -> dict[str, Any]:
    tag = f"refresh_{secrets.token_hex(4)}"
    folder = run_folder(tag)
    private = PrivateRedis()
    await step("private redis", private.start(), 30)
    token_port = free_port()
    token_url = f"http://127.0.0.1:{token_port}"
    token = Proc(
        "refresh-token-server",
        [
            sys.executable,
            "-m",
            "tests.bench.token_server",
            "--port",
            str(token_port),
            "--client-id",
            CLIENT_ID,
            "--client-secret",
            CLIENT_SECRET,
        ],
    ).start()
    procs = [token]
    settings = bench_settings(
        tag,
        redis_url=private.url,
        run_worker=True,
        refresh_concurrency=opts.refresh_concurrency,
        extra_providers_dir=str(write_provider(folder / "providers", token_url)),
    )
    result: dict[str, Any] = {
        "accounts": opts.refresh_accounts,
        "workers": opts.workers,
        "refresh_concurrency_per_worker": opts.refresh_concurrency,
        "window_s": opts.window,
        "database": settings.mongo_db,
        "kafka_topic": settings.kafka_topic,
    }
    client = open_mongo(dataclasses.replace(settings, dependency_timeout=30.0))
    db = client[settings.mongo_db]
    try:
        await token.wait_http(f"{token_url}/healthz", 60)
        _, workspace_id, owner_id = await step("create-workspace", create_workspace(settings), 90)
        keyring = Keyring.from_setting(settings.encryption_keys)
        store = AccountStore(db, keyring)
        apps = OAuthAppStore(db, keyring)
        await step("indexes", store.ensure_indexes(), 120)
        await step("indexes", apps.ensure_indexes(), 120)
        await step(
            "OAuth app",
            apps.put(
                workspace_id,
                PROVIDER,
                client_id=CLIENT_ID,
                client_secret=CLIENT_SECRET,
                redirect_uri=settings.callback_url,
                scopes=None,
            ),
            60,
        )
        offsets, seeding = await step(
            "seeding", _seed(store, db, workspace_id, owner_id, opts.refresh_accounts, opts.window), 3600
        )
        result["seeding"] = seeding
        result["db_probe"] = await step("db probe", _probe(store, db, list(offsets)), 600)

        # Schedule first (so the reconciler that runs at worker start finds every account scheduled),
        # then start the workers; the window opens `start_delay` seconds from now.
        window_start = time.time() + opts.start_delay
        dues = {account_id: window_start + offset for account_id, offset in offsets.items()}
        scheduled = await step("schedule", _schedule(private.url, settings.refresh_shards, dues), 600)
        result["schedule_load_seconds"] = scheduled

        workers = []
        for i in range(opts.workers):
            port = free_port()
            proc = Proc(
                f"refresh-worker-{i}",
                [sys.executable, "-m", "service", "worker", "--port", str(port)],
                env_of(settings),
            ).start()
            procs.append(proc)
            workers.append((proc, port))
        watch = {f"worker-{i}": proc.pid for i, (proc, _) in enumerate(workers)}
        watch["token-server"] = token.pid
        watch.update(shared_servers(settings))
        redis_pid = private._process.pid if private._process else None
        if redis_pid:
            watch["private-redis"] = redis_pid
        meter = CpuMeter(watch).start()
        for proc, port in workers:
            await proc.wait_http(f"http://127.0.0.1:{port}/healthz", 120)
        result["workers_ready_before_window_s"] = round(window_start - time.time(), 2)

        say(
            f"refresh: {opts.refresh_accounts:,} accounts due from {opts.start_delay:.0f} s to "
            f"{opts.start_delay + opts.window:.0f} s from now; "
            f"{opts.workers} workers x {opts.refresh_concurrency}"
        )
        finished = await _watch(token_url, workers, db, opts, window_start)
        result["completed"] = finished
        result["run_seconds"] = round(time.time() - window_start, 1)
        result["metrics"] = await _scrape(workers)
        result["cpu_pct_of_one_core"] = meter.stop()
        result["meter_seconds"] = round(meter.elapsed, 1)
        result["restarted_during_run"] = meter.gone
        result["peak_rss_mib"] = {
            name: round(peak_rss_mib(pid) or 0.0, 1)
            for name, pid in watch.items()
            if name not in ("ferretdb", "kafka")
        }
        for proc, _ in workers:
            await proc.stop(40)
        result["token_server"] = await _stats(token_url)
        result["stashed_not_stored"] = await _stashed(private.url)
        result.update(await step("reading the results", _outcome(db, dues, result), 900))
        return result
    finally:
        for proc in procs:
            await proc.stop(40)
        await private.stop()
        private.cleanup()
        shutil.rmtree(folder, ignore_errors=True)
        await client.close()
        with contextlib.suppress(Exception):
            await step("drop database", drop_database(settings), 600)
        with contextlib.suppress(Exception):
            await step("delete topic", _delete_topic(settings.kafka_bootstrap, settings.kafka_topic), 60)


async def _seed(
    store: AccountStore, db: Any, workspace_id: str, owner_id: str, count: int, window: float
) -> tuple[dict[str, float], dict[str, Any]]:
    """Accounts whose token expires a few minutes from now, so they are due (next_refresh_at) within
    the window; their `connected` events count as published long ago (empty outbox)."""
    now = dt.datetime.now(dt.UTC)
    rng = random.Random(11)
    offsets: dict[str, float] = {}

    def documents() -> Any:
        while True:
            offset = rng.uniform(0, window)
            refresh_at = now + dt.timedelta(seconds=offset)
            creds = oauth_credentials(
                SEED_REFRESH_PREFIX + secrets.token_urlsafe(24),
                refresh_at + dt.timedelta(seconds=300),
                refresh_at,
            )
            doc = account_document(
                store, workspace_id=workspace_id, owner_id=owner_id, creds=creds, with_outbox=False, now=now
            )
            offsets[doc["_id"]] = offset
            yield doc

    say(f"refresh: seeding {count:,} accounts")
    seeded = await insert_in_batches(db, documents(), count)
    return {i: offsets[i] for i in seeded.ids}, {
        "accounts": len(seeded.ids),
        "seconds": round(seeded.seconds, 2),
        "per_second": round(seeded.per_second, 1),
        "build_seconds": round(seeded.build_seconds, 2),
        "insert_seconds": round(seeded.insert_seconds, 2),
    }


async def _probe(store: AccountStore, db: Any, ids: list[str]) -> dict[str, float]:
    """The refresher's read (get_by_id) and its compare-and-swap filter, on the last inserted account:
    what one refresh costs the database at this collection size (the CAS probe matches nothing)."""
    out = {}
    last = ids[-1]
    started = time.perf_counter()
    await store.get_by_id(last)
    out["get_by_id_last_ms"] = round((time.perf_counter() - started) * 1000, 2)
    started = time.perf_counter()
    await db["accounts"].update_one(
        {"_id": last, "version": -1, "status": {"$ne": "deleted"}}, {"$set": {"x": 1}}
    )
    out["cas_update_miss_ms"] = round((time.perf_counter() - started) * 1000, 2)
    started = time.perf_counter()
    await (
        db["accounts"]
        .find({"has_outbox": True}, projection={"outbox": 1, "status": 1})
        .limit(200)
        .to_list(None)
    )
    out["relay_outbox_query_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return out


async def _schedule(url: str, shards: int, dues: dict[str, float]) -> float:
    """The same keys RefreshSchedule.schedule writes, as pipelined ZADDs of 1,000 members."""
    client = redis.Redis.from_url(url, socket_timeout=60)
    schedule = RefreshSchedule(client, shards)
    started = time.perf_counter()
    try:
        by_key: dict[str, dict[str, float]] = {}
        for account_id, due in dues.items():
            by_key.setdefault(redis_keys.refresh_due(schedule.shard_of(account_id)), {})[account_id] = due
        async with client.pipeline(transaction=False) as pipe:
            for key, members in by_key.items():
                items = list(members.items())
                for i in range(0, len(items), 1000):
                    pipe.zadd(key, dict(items[i : i + 1000]))
            await pipe.execute()
    finally:
        await client.aclose()
    return round(time.perf_counter() - started, 2)


async def _stats(token_url: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        http.get(f"{token_url}/stats") as response,
    ):
        return dict(await response.json())


async def _watch(
    token_url: str, workers: list[tuple[Proc, int]], db: Any, opts: Any, window_start: float
) -> bool:
    """Until every account was refreshed once (token endpoint answered N times and N documents carry
    version >= 2) or the timeout; progress every few seconds."""
    deadline = time.time() + opts.refresh_timeout
    last_ok, last_t = 0, time.time()
    while time.time() < deadline:
        await asyncio.sleep(opts.poll)
        for proc, _ in workers:
            if not proc.alive():
                raise BenchError(f"{proc.name} died (see {proc.log_path})")
        try:
            stats = await _stats(token_url)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BenchError(f"token server stopped answering: {exc!r}") from None
        now = time.time()
        rate = (stats["ok"] - last_ok) / (now - last_t)
        last_ok, last_t = stats["ok"], now
        say(
            f"refresh: {stats['ok']:,}/{opts.refresh_accounts:,} token calls ok ({rate:,.0f}/s), "
            f"{stats['duplicate_presentations']} duplicates, t={now - window_start:,.0f} s"
        )
        if stats["ok"] >= opts.refresh_accounts:
            break
    else:
        say(f"refresh: timeout after {opts.refresh_timeout:.0f} s")
        return False
    while time.time() < deadline + 120:  # the last writes may still be on their way
        done = await db["accounts"].count_documents({"version": {"$gte": 2}})
        if done >= opts.refresh_accounts:
            return True
        await asyncio.sleep(2)
    return False


async def _scrape(workers: list[tuple[Proc, int]]) -> dict[str, Any]:
    """Sums the workers' Prometheus metrics that matter here."""
    lag_buckets: dict[float, float] = {}
    dur_buckets: dict[float, float] = {}
    lag_sum = lag_count = 0.0
    outcomes: dict[str, float] = {}
    token_responses: dict[str, float] = {}
    published = 0.0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        for _, port in workers:
            try:
                async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                    text = await response.text()
            except (aiohttp.ClientError, TimeoutError):
                continue
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    name, labels, value = sample.name, sample.labels, sample.value
                    if name == f"{LAG}_bucket":
                        le = float(labels["le"])
                        lag_buckets[le] = lag_buckets.get(le, 0) + value
                    elif name == f"{LAG}_sum":
                        lag_sum += value
                    elif name == f"{LAG}_count":
                        lag_count += value
                    elif name == f"{DURATION}_bucket":
                        le = float(labels["le"])
                        dur_buckets[le] = dur_buckets.get(le, 0) + value
                    elif name == "broker_refresh_attempts_total":
                        outcomes[labels["outcome"]] = outcomes.get(labels["outcome"], 0) + value
                    elif name == "broker_token_endpoint_responses_total":
                        key = labels["status_class"]
                        token_responses[key] = token_responses.get(key, 0) + value
                    elif name == "broker_events_published_total":
                        published += value
    lag = sorted(lag_buckets.items())
    durations = sorted(dur_buckets.items())
    return {
        "scheduling_lag_histogram": {
            "count": int(lag_count),
            "mean_s": round(lag_sum / lag_count, 3) if lag_count else None,
            "p50_le_s": histogram_quantile(lag, 0.5),
            "p99_le_s": histogram_quantile(lag, 0.99),
        },
        "refresh_duration_histogram": {
            "p50_le_s": histogram_quantile(durations, 0.5),
            "p99_le_s": histogram_quantile(durations, 0.99),
        },
        "refresh_outcomes": {k: int(v) for k, v in sorted(outcomes.items())},
        "token_endpoint_responses": {k: int(v) for k, v in sorted(token_responses.items())},
        "events_published": int(published),
    }


async def _outcome(db: Any, dues: dict[str, float], result: dict[str, Any]) -> dict[str, Any]:
    collection = db["accounts"]
    refreshed_at: list[float] = []
    lags: list[float] = []
    async for doc in collection.find({"version": {"$gte": 2}}, projection={"last_refreshed_at": 1}):
        at = doc.get("last_refreshed_at")
        if at is None:
            continue
        refreshed_at.append(at.timestamp())
        lags.append(at.timestamp() - dues[doc["_id"]])
    statuses: dict[str, int] = {}
    async for doc in await collection.aggregate([{"$group": {"_id": "$status", "n": {"$sum": 1}}}]):
        statuses[str(doc["_id"])] = int(doc["n"])
    backlog = await collection.count_documents({"has_outbox": True})
    refreshed_at.sort()
    lags.sort()
    refreshed = len(refreshed_at)
    stats = result["token_server"]
    span = refreshed_at[-1] - refreshed_at[0] if refreshed > 1 else 0.0
    window_start = min(dues.values()) if dues else 0.0
    return {
        "refreshed_accounts": refreshed,
        "statuses": statuses,
        "refreshes_per_second": round((refreshed - 1) / span, 1) if span else None,
        "refreshes_per_second_from_window_start": (
            round(refreshed / (refreshed_at[-1] - window_start), 1) if refreshed else None
        ),
        "lag_due_to_written_s": {
            "p50": round(percentile(lags, 50), 2) if lags else None,
            "p99": round(percentile(lags, 99), 2) if lags else None,
            "max": round(lags[-1], 2) if lags else None,
        },
        "token_calls_per_refresh": round(stats["calls"] / refreshed, 4) if refreshed else None,
        # a rotated credential whose write has not landed yet waits in the write-ahead stash; the next claim
        # stores it without calling the provider, so it counts as refreshed here
        "token_calls_per_rotated_account": (
            round(stats["calls"] / (refreshed + result["stashed_not_stored"]), 4)
            if refreshed + result["stashed_not_stored"]
            else None
        ),
        "duplicate_presentations": stats["duplicate_presentations"],
        "outbox_backlog_at_end": backlog,
    }


async def _stashed(url: str) -> int:
    """Rotated credentials still waiting in the refresher's write-ahead stash (their write did not land)."""
    client = redis.Redis.from_url(url)
    try:
        return sum([1 async for _ in client.scan_iter(match=redis_keys.pending_credential("*"), count=1000)])
    finally:
        await client.aclose()


async def _delete_topic(bootstrap: str, topic: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()


def render(result: dict[str, Any]) -> str:
    m = result.get("metrics", {})
    lag = result.get("lag_due_to_written_s", {})
    hist = m.get("scheduling_lag_histogram", {})
    cpu = result.get("cpu_pct_of_one_core", {})
    rss = result.get("peak_rss_mib", {})
    status = "all refreshed" if result.get("completed") else "TIMED OUT before all were refreshed"
    rows = [
        ("accounts due", result["accounts"]),
        ("refreshed (version >= 2)", result.get("refreshed_accounts")),
        ("outcome", status),
        ("run time from window start (s)", result.get("run_seconds")),
        ("refreshes/s (first to last write)", result.get("refreshes_per_second")),
        (
            "scheduling lag p50 / p99, claim-due (s, bucket <=)",
            f"{fmt_opt(hist.get('p50_le_s'))} / {fmt_opt(hist.get('p99_le_s'))}",
        ),
        ("scheduling lag mean, claim-due (s)", hist.get("mean_s")),
        ("due-to-written p50 / p99 / max (s)", f"{lag.get('p50')} / {lag.get('p99')} / {lag.get('max')}"),
        ("token-endpoint calls per refresh", _ratio(result.get("token_calls_per_refresh"))),
        ("rotated but not yet stored (write-ahead stash)", result.get("stashed_not_stored")),
        (
            "token-endpoint calls per rotated account (stored or stashed)",
            _ratio(result.get("token_calls_per_rotated_account")),
        ),
        (
            "token-endpoint calls (ok) / refreshed accounts",
            f"{result.get('token_server', {}).get('calls')} ({result.get('token_server', {}).get('ok')}) / "
            f"{result.get('refreshed_accounts')}",
        ),
        ("duplicate refresh-token presentations", result.get("duplicate_presentations")),
        ("refresh outcomes", ", ".join(f"{k} {v:,}" for k, v in m.get("refresh_outcomes", {}).items())),
        (
            "events published to Kafka / outbox backlog",
            f"{m.get('events_published', 0):,} / {result.get('outbox_backlog_at_end')}",
        ),
    ]
    for name in sorted(cpu):
        rows.append((f"CPU {name} (% of one core) / peak RSS (MiB)", f"{cpu[name]} / {rss.get(name, '-')}"))
    refreshed, seconds = result.get("refreshed_accounts") or 0, result.get("meter_seconds") or 0
    if refreshed and seconds:
        per = {name: round(pct * 10 * seconds / refreshed, 2) for name, pct in cpu.items()}
        workers = round(sum(v for k, v in per.items() if k.startswith("worker")), 2)
        rows.append(
            (
                "CPU per refresh (ms): workers / FerretDB / token server",
                f"{workers} / {per.get('ferretdb', '-')} / {per.get('token-server', '-')}",
            )
        )
    probe = result.get("db_probe", {})
    rows.append(
        (
            "DB probe: get_by_id / CAS miss / outbox query (ms)",
            f"{probe.get('get_by_id_last_ms')} / {probe.get('cas_update_miss_ms')} / "
            f"{probe.get('relay_outbox_query_ms')}",
        )
    )
    if result.get("restarted_during_run"):
        rows.append(("WARNING: restarted during the run", ", ".join(result["restarted_during_run"])))
    return table(
        f"refresh throughput: {result['workers']} workers x "
        f"{result['refresh_concurrency_per_worker']} concurrent, due within {result['window_s']:.0f} s",
        rows,
    )


def fmt_opt(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _ratio(value: float | None) -> str:
    return "- (nothing refreshed)" if value is None else f"{value:.2f}"
