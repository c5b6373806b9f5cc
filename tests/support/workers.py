"""Real worker processes (`python -m service worker`) a test starts, and may kill with SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import fields
from pathlib import Path

from service.config import PREFIX, Settings
from tests.support import canary

ROOT = Path(__file__).resolve().parents[2]


def settings_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
    for f in fields(settings):
        value = getattr(settings, f.name)
        env[PREFIX + f.name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


class WorkerProcess:
    def __init__(self, settings: Settings, log_path: Path) -> None:
        self._settings = settings
        self._log_path = log_path
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> WorkerProcess:
        canary.LOG_FILES.append(self._log_path)
        log = self._log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service",
            "worker",
            "--port",
            "0",
            cwd=ROOT,
            env=settings_env(self._settings),
            stdout=log,
            stderr=log,
        )
        log.close()
        return self

    def kill(self) -> None:
        """SIGKILL: no clean-up, no lease released, like a crashed machine."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), 20)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
