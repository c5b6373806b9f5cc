"""What every benchmark needs: processes it starts and stops, their CPU and memory from /proc, timeouts,
percentiles, tables, and the machine's description."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
RUN_DIR = ROOT / ".run" / "bench"
LOG_DIR = RUN_DIR / "logs"
CLK_TCK = os.sysconf("SC_CLK_TCK")

T = TypeVar("T")


class BenchError(RuntimeError):
    """A step failed or ran out of time; the message says which."""


async def step(what: str, awaitable: Awaitable[T], timeout: float) -> T:
    """Every step has a timeout: a step that hangs stops the benchmark with a message naming it."""
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        raise BenchError(f"{what}: no result within {timeout:.0f} s") from None


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ /proc


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process, in seconds (None when it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "; fields[0] is field 3 (state)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mib(pid: int) -> float | None:
    """VmHWM (peak resident set size) in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def pids_named(fragment: str) -> list[int]:
    """Processes whose command line contains `fragment` (to observe shared servers, never to signal them)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if fragment in cmdline and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return sorted(found)


@dataclass
class CpuMeter:
    """CPU used by some processes between start() and stop(), as % of one core."""

    pids: Mapping[str, int]
    _start: dict[str, float] = field(default_factory=dict)
    _started_at: float = 0.0

    def start(self) -> CpuMeter:
        self._started_at = time.monotonic()
        self._start = {name: cpu_seconds(pid) or 0.0 for name, pid in self.pids.items()}
        return self

    gone: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    def stop(self) -> dict[str, float]:
        """CPU % per process; a process that exited meanwhile (a shared server restarted by someone
        else, say) is left out and named in `gone`."""
        elapsed = self.elapsed = max(time.monotonic() - self._started_at, 1e-9)
        result = {}
        for name, pid in self.pids.items():
            now = cpu_seconds(pid)
            if now is None:
                self.gone.append(name)
            else:
                result[name] = round(100.0 * (now - self._start.get(name, 0.0)) / elapsed, 1)
        if self.gone:
            say(f"WARNING: {', '.join(self.gone)} exited or restarted during the measurement")
        return result


def machine() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    total_kib = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    model = "unknown"
    with contextlib.suppress(OSError, StopIteration):
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(total_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# ------------------------------------------------------------------ processes


class Proc:
    """A process the benchmark starts; its output goes to .run/bench/logs/<name>.log."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env) if env is not None else dict(os.environ)
        self.log_path = LOG_DIR / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> Proc:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def wait_http(self, url: str, timeout: float, *, expect: int = 200) -> None:
        """Waits until `url` answers `expect`; fails early when the process exits."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            while time.monotonic() < deadline:
                if not self.alive():
                    raise BenchError(f"{self.name} exited early (see {self.log_path})")
                try:
                    async with http.get(url) as response:
                        if response.status == expect:
                            return
                        last = f"HTTP {response.status}: {(await response.text())[:200]}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    last = type(exc).__name__
                await asyncio.sleep(0.2)
        raise BenchError(f"{self.name} not ready at {url} within {timeout:.0f} s ({last})")

    async def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.to_thread(self.process.wait), timeout)
        except TimeoutError:
            self.process.kill()
            await asyncio.to_thread(self.process.wait)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()


async def run_command(argv: Sequence[str], env: Mapping[str, str], timeout: float) -> tuple[str, str]:
    """Runs a command to its end; returns (stdout, stderr); a failure or a timeout raises BenchError."""
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=ROOT, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise BenchError(f"{' '.join(argv[:4])}: no result within {timeout:.0f} s") from None
    if process.returncode != 0:
        raise BenchError(f"{' '.join(argv[:4])} failed ({process.returncode}): {err.decode()[-500:]}")
    return out.decode(), err.decode()


# ------------------------------------------------------------------ figures


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an already sorted sequence."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def histogram_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float | None:
    """The upper bound of the Prometheus bucket (le, cumulative count) holding quantile q (0..1)."""
    if not buckets or buckets[-1][1] == 0:
        return None
    target = q * buckets[-1][1]
    for upper, cumulative in buckets:
        if cumulative >= target:
            return upper
    return buckets[-1][0]


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if 0 < abs(value) < 0.01:
            return f"{value:.2g}"
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(
    title: str, rows: Iterable[tuple[str, Any]] | Iterable[Sequence[Any]], header: Sequence[str] = ()
) -> str:
    """A plain-text table: rows of (label, value) or of several columns."""
    lines = [list(map(fmt, row)) for row in rows]
    if header:
        lines.insert(0, list(header))
    width = max((len(line) for line in lines), default=0)
    cols = [max((len(line[i]) for line in lines if i < len(line)), default=0) for i in range(width)]
    out = [f"\n== {title} =="]
    for n, line in enumerate(lines):
        cells = [cell.ljust(cols[i]) if i == 0 else cell.rjust(cols[i]) for i, cell in enumerate(line)]
        out.append("  " + "  ".join(cells))
        if header and n == 0:
            out.append("  " + "  ".join("-" * c for c in cols))
    return "\n".join(out)
