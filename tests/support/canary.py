"""The log canary: every log line of the whole test run (in-process and worker processes) is captured,
every secret the tests see is registered, and the run fails if any secret appears in any line."""

from __future__ import annotations

import logging
from pathlib import Path

from service.logs import JsonFormatter

SECRETS: set[str] = set()
LINES: list[str] = []
LOG_FILES: list[Path] = []


def register(*values: str | None) -> None:
    for value in values:
        if value and len(value) >= 8:
            SECRETS.add(value)


class CapturingHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            LINES.append(self.format(record))
        except Exception:
            LINES.append(record.getMessage())


def install() -> None:
    root = logging.getLogger()
    root.addHandler(CapturingHandler())
    root.setLevel(logging.DEBUG)
    for noisy in ("aiokafka", "asyncio", "pymongo"):
        logging.getLogger(noisy).setLevel(logging.INFO)
    # as in production (service.logs.configure_logging): aiohttp's access log prints whole URLs
    logging.getLogger("aiohttp.access").disabled = True


def leaks() -> list[tuple[str, str]]:
    lines = list(LINES)
    for path in LOG_FILES:
        if path.exists():
            lines += path.read_text(errors="replace").splitlines()
    found = []
    for line in lines:
        for secret in SECRETS:
            if secret in line:
                found.append((secret[:6] + "...", line[:300]))
    return found
