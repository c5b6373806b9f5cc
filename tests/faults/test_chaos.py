"""Fault tests (`make test-faults`): under a refresh storm and steady credential reads, worker processes
are killed with SIGKILL again and again, and Redis, FerretDB and Kafka are stopped and restarted one at a
time. Afterwards: no refresh window missed by more than the lead time, no refresh token used twice, no
event missing in Kafka, and the API answered quickly (503 while a dependency was down, never a hang)
and recovered without a restart."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp

from service.config import Settings
from tests.integration.test_events import consume_all, make_topic
from tests.integration.test_refresh import fast
from tests.support.harness import BrokerHarness
from tests.support.workers import WorkerProcess

ROOT = Path(__file__).resolve().parents[2]
TTL = 30  # seconds an access token lives; the refresh lead is half of it (15 s)
LEAD = TTL / 2
ACCOUNTS = 30
CLIENT_TIMEOUT = 6.0


def server(name: str, action: str) -> None:
    subprocess.run(
        ["bash", str(ROOT / f"deploy/local/{name}.sh"), action],
        check=True,
        timeout=180,
        stdout=subprocess.DEVNULL,
    )


async def settled_account(broker: BrokerHarness, account_id: str) -> dict[str, Any]:
    """The account, asked again for a few seconds while a just-restarted server settles."""
    for _ in range(30):
        reply = await broker.call("GET", f"/v1/accounts/{account_id}")
        if reply.status == 200:
            return dict(reply.body["data"])
        await asyncio.sleep(0.5)
    raise AssertionError(f"account {account_id} unreadable after the faults: {reply.status}")


class Reader:
    """Steady credential reads; records (time, status, seconds) of each."""

    def __init__(self, broker: BrokerHarness, account_ids: list[str]) -> None:
        self.broker = broker
        self.account_ids = account_ids
        self.samples: list[tuple[float, int, float]] = []
        self.stop = asyncio.Event()

    async def run(self) -> None:
        rng = random.Random(1)
        timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
        headers = {"Authorization": f"Bearer {self.broker.admin_key}"}
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
            while not self.stop.is_set():
                started = time.monotonic()
                url = f"{self.broker.url}/v1/accounts/{rng.choice(self.account_ids)}?include_credentials=1"
                try:
                    async with session.get(url) as response:
                        await response.read()
                        status = response.status
                except TimeoutError:
                    status = 0  # hung past the client's timeout
                self.samples.append((time.monotonic(), status, time.monotonic() - started))
                await asyncio.sleep(0.1)


async def test_the_broker_survives_killed_workers_and_each_server_going_down(
    settings: Settings, tmp_path: Path
) -> None:
    topic = await make_topic(settings)
    tuned = fast(
        settings,
        run_worker=False,
        kafka_topic=topic,
        reconcile_interval=2.0,
        dependency_timeout=1.0,
        refresh_lease_seconds=10.0,
        refresh_read_margin=5.0,
        request_timeout=4.0,
    )
    broker = BrokerHarness(tuned, tmp_path, access_token_ttl=TTL)
    await broker.start()
    workers: list[WorkerProcess] = []
    reader_task = None
    try:
        account_ids = []
        for _ in range(ACCOUNTS):
            grant = broker.fake.issue_grant(scopes=["read"])
            account = await broker.import_account(
                provider="fake",
                credentials={
                    "oauth_access_token": grant["access_token"],
                    "oauth_refresh_token": grant["refresh_token"],
                },
                expires_in=TTL,
            )
            account_ids.append(account["id"])
        worker_settings = fast(
            broker.settings,
            run_worker=True,
            reconcile_interval=2.0,
            dependency_timeout=1.0,
            refresh_lease_seconds=10.0,
        )
        workers = [await WorkerProcess(worker_settings, tmp_path / f"w{i}.log").start() for i in range(2)]
        reader = Reader(broker, account_ids)
        reader_task = asyncio.create_task(reader.run())
        outages: dict[str, tuple[float, float]] = {}

        async def kill_workers_repeatedly(stop: asyncio.Event) -> None:
            n = 2
            while not stop.is_set():
                await asyncio.sleep(7)
                victim = workers.pop(0)
                victim.kill()
                workers.append(await WorkerProcess(worker_settings, tmp_path / f"w{n}.log").start())
                n += 1

        stop_killing = asyncio.Event()
        killer = asyncio.create_task(
            kill_workers_repeatedly(stop_killing)
            if os.environ.get("CHAOS_KILLS", "1") == "1"
            else stop_killing.wait()
        )
        await asyncio.sleep(10)
        for name, down_for in (("redis", 10), ("ferretdb", 10), ("kafka", 15)):
            started = time.monotonic()
            await asyncio.to_thread(server, name, "down")
            await asyncio.sleep(down_for)
            await asyncio.to_thread(server, name, "up")
            outages[name] = (started, time.monotonic())
            await asyncio.sleep(12)
        stop_killing.set()
        await killer
        await asyncio.sleep(TTL)  # everything catches up
        reader.stop.set()
        await reader_task

        with (tmp_path.parent / "chaos-debug.txt").open("w") as debug:
            for call in broker.fake.refresh_calls:
                print(
                    round(call.time, 1),
                    call.refresh_token[:12] if call.refresh_token else None,
                    call.outcome,
                    file=debug,
                )
            from tests.support import canary

            for account_id in account_ids:
                account = await settled_account(broker, account_id)
                print(account_id, account["status"], account["last_error"], file=debug)
                if account["status"] != "active":
                    for line in canary.LINES:
                        if account_id in line:
                            print("   ", line[:400], file=debug)
            print("outages", outages, file=debug)
        # 1. The API never hung, answered 503 (not 500) while something was down, and recovered.
        statuses = [s for _, s, _ in reader.samples]
        slow = [(round(t, 1), s, round(d, 2)) for t, s, d in reader.samples if d > 1.0 or s not in (200, 503)]
        windows = {name: (round(a, 1), round(b, 1)) for name, (a, b) in outages.items()}
        assert 0 not in statuses, f"a read hung past the client's timeout: {slow[:40]} outages {windows}"
        assert max(d for _, _, d in reader.samples) < CLIENT_TIMEOUT
        assert set(statuses) <= {200, 503}, sorted(set(statuses))
        assert 503 in statuses, "no read saw a dependency down"
        tail = [s for t, s, _ in reader.samples if t > outages["kafka"][1] + 10]
        assert tail, "no reads after the outages"
        assert all(s == 200 for s in tail), "the API did not recover"
        ready = await broker.call("GET", "/readyz", api_key=None)
        assert ready.status == 200, ready.body

        # 2. No refresh token presented twice, no grant revoked by reuse detection.
        presented = [c.refresh_token for c in broker.fake.refresh_calls if c.outcome == "ok"]
        assert len(presented) == len(set(presented))
        assert broker.fake.reuse_detected == 0

        # 3. No account missed its refresh window by more than the lead time: per grant, the gap between
        #    one access token's expiry and the next one's issue never exceeds the lead.
        by_grant: dict[str, list[Any]] = defaultdict(list)
        for info in broker.fake.access_tokens.values():
            by_grant[info.grant_id].append(info)
        worst = 0.0
        for tokens in by_grant.values():
            tokens.sort(key=lambda i: i.expires_at)
            assert len(tokens) >= 3, "every account should have been refreshed several times"
            for previous, following in itertools.pairwise(tokens):
                worst = max(worst, (following.expires_at - TTL) - previous.expires_at)
        assert worst <= LEAD, f"a refresh came {worst:.1f} s after the token expired"
        for account_id in account_ids:
            assert (await settled_account(broker, account_id))["status"] == "active"

        # 4. Every event reached Kafka: per account, every version from 1 to the last, in order.
        versions = {a: (await settled_account(broker, a))["version"] for a in account_ids}
        for _ in range(60):
            waiting = await broker.raw_count("accounts", {"has_outbox": True})
            if waiting == 0:
                break
            await asyncio.sleep(0.5)
        records = await consume_all(settings, topic, until=sum(versions.values()), timeout=60)
        seen: dict[str, dict[str, int]] = defaultdict(dict)
        for record in records:
            import json

            event = json.loads(record.value)
            seen[record.key.decode()].setdefault(event["id"], event["data"]["version"])
        for account_id, version in versions.items():
            got = list(seen[account_id].values())
            assert sorted(got) == list(range(1, version + 1)), (account_id, version, sorted(got)[:5])
            assert got == sorted(got), "per-account order broken"
    finally:
        if reader_task is not None and not reader_task.done():
            reader_task.cancel()
        for worker in workers:
            await worker.stop()
        for name in ("redis", "ferretdb", "kafka"):
            await asyncio.to_thread(server, name, "up")  # whatever happened, leave the servers running
        await broker.stop()
